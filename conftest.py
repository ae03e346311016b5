"""How the whole suite runs on several workers (pytest-xdist), for tests/, notebooks/ and solutions/ alike.

`pyproject.toml` asks for `-n auto --dist loadfile --no-loadscope-reorder`:

- `auto` means one worker per CPU and one more (`EXTRA_WORKERS`) for a run of the whole suite (no paths given), and no
  workers at all (one process, as before) when paths or test ids are given, so `pytest tests/test_chat.py -x`
  does not pay for starting workers. `-n N` on the command line (`-n 0`: one process) or
  `PYTEST_XDIST_AUTO_NUM_WORKERS` overrides it.
- `loadfile`: a file's tests run on one worker, in order: a notebook's cells share one kernel, and a module's
  module-scoped fixture (the class of exercise submissions, the benchmark) is set up once.
- Files are handed out in the order set below: first those with a test marked `slow` (tens of seconds), then
  the notebooks, then the rest, so that no long file starts last.

Each worker is a process of its own, with its own session-scoped Temporal server (tests/conftest.py), its own
environment variables and its own `tmp_path` root; tests use free ports and task queues of their own.

Each worker also starts a warm starter (`durable_agent/warm_start.py`) and exports it: the worker processes its
tests start, in the test process or in a notebook's kernel, are forked from it with LiteLLM already imported
instead of importing it again (4-7 s of CPU each; the suite starts dozens), and so are the notebooks' kernels
(durable_course/warm_kernels.py). `DURABLE_AGENT_WARM_START=` (empty) turns it off.
"""

from __future__ import annotations

import os

import pytest

from durable_agent.warm_start import ENV_VAR as WARM_START, WarmStarter
from durable_course.warm_kernels import use_warm_kernels

_warm_starter = pytest.StashKey[WarmStarter]()

# nbval, made to fail a notebook that writes to stderr after a cell finished (what JupyterLab would show there).
pytest_plugins = ["tests.nbval_late_output"]

# The suite's notebooks run on servers of their own, even when started from a terminal of `course.py lab`
# (whose kernels are told where the course's server is: durable_course/course_server.py).
for _name in ("DURABLE_COURSE_SERVER", "DURABLE_COURSE_UI", "JPY_SESSION_NAME"):
    os.environ.pop(_name, None)

# One worker per CPU, and one more to use the CPU while the others wait (retry back-offs, heartbeat timeouts, a
# hung cell's timeout, servers, kernels and browsers starting): on 2 CPUs, 3 workers took 8 min 47 s against
# 9 min 29 s with 2, every test passing (docs/performance.md). Two per CPU starved the CPUs (workflow tasks
# missed their 2 s deadlock limit, heartbeats were missed): docs/CONTRIBUTING.md. Three used to lose a
# notebook's kernel now and then, to a TCP port taken by another process before the kernel bound it; kernels
# now use Unix sockets (durable_course/warm_kernels.py).
EXTRA_WORKERS = 1


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes tens of seconds; on several workers its file is started first")


def pytest_sessionstart(session: pytest.Session) -> None:
    if session.config.pluginmanager.has_plugin("dsession") or WARM_START in os.environ:
        return  # the xdist controller runs no test; a starter given (or turned off) by the caller is kept
    session.config.stash[_warm_starter] = WarmStarter.start(export=True)
    use_warm_kernels()  # nbval's kernels and the grader's too


def pytest_sessionfinish(session: pytest.Session) -> None:
    starter = session.config.stash.get(_warm_starter, None)
    if starter is not None:
        starter.close()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    if config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        return 0  # paths or test ids given: one process
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cpus + EXTRA_WORKERS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # only on an xdist worker; one process keeps the usual order
        return
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def rank(tests: list[pytest.Item]) -> int:
        if any(item.get_closest_marker("slow") for item in tests):
            return 0
        return 1 if not isinstance(tests[0], pytest.Function) else 2  # a notebook's cells (nbval)

    # Every worker collects the same items and sorts them the same way; sorted() keeps the order in a rank.
    items[:] = [item for tests in sorted(files.values(), key=rank) for item in tests]
