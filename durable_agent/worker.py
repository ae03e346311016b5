"""The worker: the process that runs the workflow code and the activities.

A worker polls a task queue on the Temporal server. It holds no state of its own that matters: kill it,
start another, and the server hands the work over (primitive 3, event-sourced state). Run it

- in this process, as a background asyncio task, so a notebook stays usable: `await start_worker(client)`;
- as a separate OS process that a lesson can SIGKILL: `await start_worker_process(address)`, which runs
  `python -m durable_agent worker --address ...`.

Behaviour is added to a worker from outside, the way Temporal's SDK does it: `plugins=[...]` (Temporal worker
plugins, e.g. the course's fault lab) and `interceptors=[...]` go straight to `temporalio.worker.Worker`; a
worker process gets them by import path, `start_worker_process(..., plugins=["module:name"])`.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import ResetStickyTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor, Plugin, Worker

from . import llm, warm_start
from .activities import AgentActivities
from .config import settings
from .warm_start import WarmProcess, WarmStarter
from .workflow import DurableAgentWorkflow

READY_LINE = "durable-agent worker ready"
LITELLM_LINE = "durable-agent worker: LiteLLM imported"  # then the first model call runs without waiting

# After a worker dies, the server keeps routing that workflow's tasks to the dead worker's "sticky" queue
# for this long before giving them to any worker. The default is 10 s; 1 s makes a restarted worker take
# over quickly (measured here: restart -> reply about 2.6 s with 2 s). The cost: a worker that is merely
# slow (busy for over a second) loses its cached workflow to another worker, which replays the history.
# After a kill in the middle of an activity, `TakeOver` (below) spares the chat even that second.
STICKY_TIMEOUT = timedelta(seconds=1)

# How much work one worker takes on at a time. A task the worker has taken counts against its timeouts (a
# workflow task's 10 s, a model call's 3 s heartbeat) even while it waits for the worker's one event loop;
# a task left on the server waits for free, and another worker can take it. With the SDK's defaults (100
# of each), 200 concurrent chats on one worker (`durable-agent load --chats 200 --turns 10`, 2 cores) made
# the worker miss heartbeats and workflow-task timeouts: model calls ran twice, turns were refused. With
# 4 and 16, none (docs/performance.md has the runs). A real model's calls wait on the network, not on the
# CPU: a worker for one can take more activities (`create_worker(..., max_concurrent_activities=...)`).
WORKFLOW_TASK_SLOTS = 4
ACTIVITY_SLOTS = 16


class TakeOver(Interceptor):
    """After a crash, the chat's next workflow task goes to any worker at once, not after `STICKY_TIMEOUT`.

    The server sends a chat's workflow tasks to the worker that ran its last one (that worker's sticky queue,
    where the chat is cached). If that worker died in the middle of an activity, the activity is retried on
    another worker, and the workflow task after it first waits `STICKY_TIMEOUT` on the dead worker's queue.
    An activity attempt after the first most often follows exactly that (the dead attempt's heartbeat timed
    out), so the worker that runs it asks the server to forget the chat's sticky queue (ResetStickyTaskQueue):
    the next workflow task goes to the shared task queue, where every live worker polls. If the first worker is
    alive after all (the attempt failed for another reason), it only loses its cached copy of the chat and
    replays the history once. `create_worker` installs it; `durable-agent bench --recovery` measures it.
    """

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ForgetStickyOnRetry(next)


class _ForgetStickyOnRetry(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.attempt > 1 and not info.is_local and info.workflow_id:
            try:
                await activity.client().workflow_service.reset_sticky_task_queue(ResetStickyTaskQueueRequest(
                    namespace=info.workflow_namespace,
                    execution=WorkflowExecution(workflow_id=info.workflow_id, run_id=info.workflow_run_id)))
            except RPCError:
                pass  # the chat may have ended meanwhile; the sticky timeout still hands the task over
        return await self.next.execute_activity(input)


def build_id() -> str:
    """An id for this version of the agent's code, from its source files. Given to the worker, it also spares
    the SDK from hashing every module loaded in the process (thousands once LiteLLM is in): a faster start."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return f"durable-agent-{digest.hexdigest()[:12]}"


def create_worker(
    client: Client,
    *,
    task_queue: str | None = None,
    activities: AgentActivities | None = None,
    workflows: list[type] | None = None,
    preload: bool = True,
    **options: Any,
) -> Worker:
    activities = activities or AgentActivities()
    if preload:  # LiteLLM takes seconds to import: in a background thread, so the worker polls at once
        llm.preload()
    options.setdefault("sticky_queue_schedule_to_start_timeout", STICKY_TIMEOUT)
    options.setdefault("build_id", build_id())
    options.setdefault("max_concurrent_workflow_tasks", WORKFLOW_TASK_SLOTS)
    options.setdefault("max_concurrent_activities", ACTIVITY_SLOTS)
    options["interceptors"] = [*options.get("interceptors", ()), TakeOver()]
    return Worker(
        client,
        task_queue=task_queue or settings().task_queue,
        workflows=workflows or [DurableAgentWorkflow],
        activities=activities.all(),
        **options,
    )


@dataclass
class BackgroundWorker:
    """A worker running as a task on this process's event loop."""

    worker: Worker
    task: asyncio.Task[None]

    async def stop(self) -> None:
        if not self.task.done():
            await self.worker.shutdown()
        await asyncio.gather(self.task, return_exceptions=True)


async def start_worker(client: Client, **kwargs: Any) -> BackgroundWorker:
    """Start a worker in the background of this event loop (a notebook cell returns at once)."""
    worker = create_worker(client, **kwargs)
    return BackgroundWorker(worker, asyncio.create_task(worker.run()))


@dataclass
class WorkerProcess:
    """A worker in its own OS process, known by its process id."""

    process: subprocess.Popen[bytes] | WarmProcess  # forked by a warm starter when there is one (warm_start.py)
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    ready_after: float | None = None  # seconds from launch until it said it polls (set by wait_ready)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def identity(self) -> str:
        """The identity the worker polls with (the server records it on every activity attempt it starts)."""
        found = re.search(rf"{READY_LINE} .*?identity ([^\s,;)]+)", self.log())
        if not found:
            raise RuntimeError(f"the worker process {self.pid} has not said its identity (is it ready?)")
        return found.group(1)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @classmethod
    def launch(cls, command: list[str], env: dict[str, str] | None = None,
               log_prefix: str = "durable-agent-worker-", warm: WarmStarter | bool = True) -> "WorkerProcess":
        """Start `command` (a worker's command line) with its output in a log file; does not wait for it. With a
        warm starter (`warm_start.py`: `warm`, by default the one this process was given) it is forked from there,
        with the libraries already imported."""
        log = Path(tempfile.mkstemp(prefix=log_prefix, suffix=".log")[1])
        with log.open("wb") as out:
            process = warm_start.launch(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}, warm=warm)
        return cls(process, log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.log():
            if not self.alive:
                raise RuntimeError(f"the worker process exited with code {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker process was not ready after {timeout} s:\n{self.log()}")
            await asyncio.sleep(0.01)
        if self.ready_after is None:
            self.ready_after = time.monotonic() - self.started

    async def wait_litellm(self, timeout: float = 120.0) -> float:
        """Wait until the worker has imported LiteLLM in the background; seconds since it became ready."""
        deadline = time.monotonic() + timeout
        while LITELLM_LINE not in self.log():
            if not self.alive or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not import LiteLLM:\n{self.log()}")
            await asyncio.sleep(0.05)
        return float(self.log().split(LITELLM_LINE, 1)[1].split()[0])

    def kill(self) -> None:
        """SIGKILL: the process dies at once, mid-whatever, as in a power cut."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: the worker shuts down cleanly; SIGKILL if it has not within `timeout`."""
        if self.alive:
            self.process.terminate()
            deadline = time.monotonic() + timeout
            while self.alive and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self.kill()


async def start_worker_process(
    address: str,
    *,
    namespace: str = "default",
    task_queue: str | None = None,
    env: dict[str, str] | None = None,
    plugins: list[str] = (),
    ready_timeout: float = 60.0,
    warm: WarmStarter | bool = True,
) -> WorkerProcess:
    """Start `python -m durable_agent worker` and wait until it polls the task queue. `plugins`: import paths
    ("module:name") of Temporal worker plugins for it, see `load_plugin`. `warm`: fork it from this warm starter,
    from the one this process was given (True, `warm_start.ENV_VAR`), or start it from scratch (False)."""
    command = [sys.executable, "-m", "durable_agent", "worker", "--address", address, "--namespace", namespace,
               "--task-queue", task_queue or settings().task_queue]
    for plugin in plugins:
        command += ["--plugin", plugin]
    worker = WorkerProcess.launch(command, env, log_prefix="durable-agent-worker-", warm=warm)
    await worker.wait_ready(ready_timeout)
    return worker


# Extra tool modules for a worker process: comma-separated importable names (the current folder is on the
# path). Their @tool functions register on import; one named like a built-in tool replaces it. The hot-fix
# lab (faults.py, tests/test_faults.py) starts a worker process with a buggy tool, fixes the file, restarts it.
TOOL_MODULES_ENV = "DURABLE_AGENT_TOOL_MODULES"


def import_tool_modules() -> list[str]:
    names = [name.strip() for name in os.environ.get(TOOL_MODULES_ENV, "").split(",") if name.strip()]
    for name in names:
        importlib.import_module(name)
    return names


def load_plugin(path: str) -> Plugin:
    """A Temporal worker plugin named by its import path, "module:name": the plugin itself, or a function that
    returns one (called with no arguments)."""
    module_name, _, name = path.partition(":")
    if not module_name or not name.isidentifier():
        raise ValueError(f"a plugin is named as module:name (e.g. durable_course.faults:fault_lab_plugin), "
                         f"not {path!r}")
    found = getattr(importlib.import_module(module_name), name, None)
    plugin = found() if callable(found) and not isinstance(found, Plugin) else found
    if not isinstance(plugin, Plugin):
        raise ValueError(f"{path} is not a Temporal worker plugin (temporalio.worker.Plugin): {found!r}")
    return plugin


async def serve(client: Client, task_queue: str | None = None, plugins: list[str] = ()) -> None:
    """Run a worker until SIGINT or SIGTERM (the body of `durable-agent worker`)."""
    task_queue = task_queue or settings().task_queue
    import_tool_modules()
    # LiteLLM is imported once the worker polls, not before: the import (seconds of CPU) would compete with
    # the worker's own start-up for the interpreter. A model call that comes first waits for it in a thread.
    worker = create_worker(client, task_queue=task_queue, plugins=[load_plugin(p) for p in plugins], preload=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        litellm = "LiteLLM loaded" if llm.loaded() else "LiteLLM importing in the background"
        print(f"{READY_LINE} (pid {os.getpid()}, identity {client.identity}, task queue {task_queue}; {litellm})",
              flush=True)
        ready = time.monotonic()
        llm.preload()
        imported = asyncio.create_task(llm.litellm_ready())
        imported.add_done_callback(lambda task: task.cancelled() or task.exception() or print(
            f"{LITELLM_LINE} {time.monotonic() - ready:.2f} s after ready", flush=True))
        await stop.wait()
    print("durable-agent worker stopped", flush=True)
