"""No stray lines on stderr: what JupyterLab shows under a cell, late output included.

nbval drops what arrives for a cell after that cell finished; JupyterLab shows it under that cell. A worker
started in a cell keeps that cell's context, so its log lines (a failed activity attempt, a failing workflow
task) would land there, off-screen, long after. The suite's one nbval pass over every notebook and solution
runs with `tests/nbval_late_output.py`, which fails on such a line; the first test here proves it does, on a
notebook that writes one. `kernel_run.run_notebook` keeps every message of a kernel and attributes it to its
cell, for the tests below that run a notebook with a learner's changes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kernel_run import CellRun, run_notebook

ROOT = Path(__file__).resolve().parent.parent
def late_notebook() -> nbformat.NotebookNode:
    """A cell starts a task that writes to stderr half a second later; the next cell waits for it."""
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import asyncio, logging, sys\nlog = logging.getLogger('late')\n"
                                  "log.addHandler(logging.StreamHandler(sys.stderr))\n"
                                  "async def later():\n    await asyncio.sleep(0.5)\n    log.warning('a late line')\n"
                                  "task = asyncio.ensure_future(later())"),
        nbformat.v4.new_code_cell("await asyncio.sleep(1.5)\nprint('second cell')"),
    ])


def stray_stderr(runs: list[CellRun]) -> list[str]:
    """Each stderr line of the cells, with its cell and whether it arrived after the cell had finished."""
    return [f"cell {run.index} ({run.source.splitlines()[0][:60]!r}), "
            f"{'after the cell had finished' if output.late else 'while it ran'}: {line}"
            for run in runs for output in run.outputs if output.kind == "stderr"
            for line in output.text.splitlines() if line.strip()]


def nbval(path: Path, *options: str) -> subprocess.CompletedProcess:
    """nbval on one notebook, with the suite's late-output plugin (outputs not compared: --nbval-lax)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.nbval_late_output",
                           "-c", os.devnull, "--rootdir", str(path.parent), "--nbval-lax", *options, str(path)],
                          cwd=path.parent, env=env, capture_output=True, text=True, timeout=240)


def test_the_suites_nbval_pass_fails_on_a_line_written_to_stderr_after_its_cell_finished(tmp_path):
    path, late = tmp_path / "late.ipynb", late_notebook()
    nbformat.write(late, path)
    done = nbval(path)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-3000:]
    assert "the cell starting 'import asyncio, logging, sys' wrote to stderr after it had finished: a late line" \
        in done.stdout, done.stdout[-3000:]
    # The same line, arriving after the notebook's last cell, is caught by the wait after it.
    late.cells[1].source = "print('second cell')"
    nbformat.write(late, path)
    done = nbval(path)
    assert done.returncode == 1 and "a late line" in done.stdout, done.stdout[-3000:]
    # And a notebook that writes nothing late passes.
    late.cells[0].source = late.cells[0].source.replace("log.warning('a late line')", "pass")
    nbformat.write(late, path)
    done = nbval(path)
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-3000:]


def test_the_kernel_runner_sees_late_stderr_under_the_cell_that_started_the_task(tmp_path):
    path = tmp_path / "late.ipynb"
    nbformat.write(late_notebook(), path)
    first, second = run_notebook(path, drain=0.5)
    assert [(o.kind, o.text, o.late) for o in first.outputs] == [("stderr", "a late line\n", True)]
    assert second.text("stdout") == "second cell\n" and second.text("stderr") == ""
    assert stray_stderr([first, second]) == [
        "cell 0 ('import asyncio, logging, sys'), after the cell had finished: a late line"]


# --- exercise 1, with the learner's tool raising --------------------------------------------------------------

EX1 = ROOT / "exercises" / "ex1_new_tool.ipynb"
TEACH = 'teach_offline_model("convert_units", r"(?P<value>\\d+) (?P<from_unit>\\w+) to (?P<to_unit>\\w+)")'


def cell_index(path: Path, piece: str) -> int:
    cells = nbformat.read(path, as_version=4).cells
    return next(i for i, cell in enumerate(cells) if cell.cell_type == "code" and piece in cell.source)


@pytest.mark.slow
def test_exercise_1_with_a_raising_tool_says_why_where_the_learner_looks():
    """The learner taught the model but left the tool raising: the ask cell shows each failed attempt with the
    tool's error and gives up with it; the check says NOT YET with that error; nothing goes to stderr."""
    teach = cell_index(EX1, "teach_offline_model")
    ask = cell_index(EX1, "lab.ask(chat")
    check = cell_index(EX1, "checks.check_new_tool")
    source = nbformat.read(EX1, as_version=4).cells[ask].source
    assert "give_up_after" not in source  # the learner's cell; this test shortens only the wait
    runs = {run.index: run for run in run_notebook(EX1, sources={
        teach: f"from durable_agent.llm import teach_offline_model\n{TEACH}",
        # 3 s: a failed attempt is shown once the turn has failed for 2 s (progress.SHOW_AFTER), before it gives up
        ask: source.replace('miles.")', 'miles.", give_up_after=3)'),
    })}
    asked = runs[ask]
    progress = asked.text("stdout").splitlines()
    assert progress[0] == "You:   Please convert 10 km to miles."
    assert re.fullmatch(r"\[execute_tool attempt \d+ failed: NotImplementedError: exercise 1: convert the value, "
                        r"or raise ToolInputError; Temporal retries it\]", progress[1]), progress
    error = asked.text("error")
    assert "TurnStuck" in error and "no reply after" in error and "execute_tool failed" in error, error
    assert "NotImplementedError: exercise 1" in error
    assert error.startswith("TurnStuck: no reply after") and "Traceback" not in error, error  # no frames
    checked = runs[check].text("stdout")
    assert "NOT YET  [ex1] the agent calls convert_units" in checked
    # Said after the tool's third failure (checks.STUCK_TOOL_FAILURES), not after waiting out its ten minutes of
    # retries or the check's 30 s: by then it would have failed six times or more.
    assert "execute_tool failed 3 times, last with NotImplementedError: exercise 1" in checked, checked
    assert stray_stderr(list(runs.values())) == []
    assert [run.index for run in runs.values() if run.failed] == [ask]
