"""Who notices that a worker died: the server, by a missed heartbeat, or a supervisor that saw the process exit.

Primitive 2 (managed side effects), at its edge. Temporal cannot see a worker process die. It notices a dead
activity attempt when the attempt misses its heartbeat timeout (a model call: 3 s; a tool call: 2 s,
`workflow.py`), then waits the retry policy's back-off (1 s), and only then runs the attempt again elsewhere.
Whatever started the process (systemd, Kubernetes, a notebook) learns of its exit at once; it can tell the
server, which then retries at once:

    supervisor = Supervisor(client, task_queue)
    supervisor.watch(worker_process)          # a WorkerProcess, from worker.start_worker_process

When a watched process exits for any reason, `release_activities` fails the attempts that the server still
believes it is running (found by the worker's identity), with a retryable `WorkerDied` error and no back-off:
the dead worker cannot finish them, and a dead worker is not a failing dependency to wait out. The retry goes
to any live worker. Nothing else changes: the attempt still counts against the retry policy, the history
records the failure (`worker 1234@host exited with -9; released by its supervisor`), and completed activities
never run again. If the supervisor itself is gone, the heartbeat timeout still catches the attempt, a few
seconds later.

`durable-agent worker --processes 2` runs the agent that way outside the course: two worker processes (one
takes over at once when the other dies) under a supervisor that releases a dead one's work and starts another,
forked from a warm starter (`warm_start.py`) so that it polls in a fraction of a second with LiteLLM imported.

Only a process that has *exited* may be released: an attempt still running somewhere would run twice.
`durable-agent bench --recovery` measures the difference (rows marked "supervised"); notebook 05 shows it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

if TYPE_CHECKING:
    from .worker import WorkerProcess

SUPERVISOR_READY_LINE = "durable-agent supervisor ready"
WARM_LINE = "durable-agent supervisor: warm starter ready"

# The retry of a released attempt waits this long instead of the retry policy's back-off. Not zero: the
# server reads a zero delay as "not given" and applies the policy's back-off.
RETRY_AT_ONCE = timedelta(milliseconds=1)


@dataclass
class Released:
    """An activity attempt failed on behalf of a dead worker."""

    workflow_id: str
    activity_id: str
    activity_type: str
    attempt: int


def running_query(task_queue: str | None) -> str:
    """The visibility query for the running workflows on `task_queue` (all of them when None)."""
    if task_queue is not None and ('"' in task_queue or "\\" in task_queue):
        raise ValueError(f"a task queue name with quotes or backslashes cannot be queried: {task_queue!r}")
    return 'ExecutionStatus="Running"' + (f' AND TaskQueue="{task_queue}"' if task_queue else "")


async def release_activities(client: Client, identity: str, *, task_queue: str | None = None,
                             reason: str = "exited") -> list[Released]:
    """Fail, at once, every activity attempt that the worker `identity` was running, so that each is retried
    now, on a live worker, instead of after its heartbeat timeout. Call it only once that worker has exited.
    `task_queue` narrows the search to the chats on that task queue (as the server names it)."""
    released: list[Released] = []
    async for execution in client.list_workflows(running_query(task_queue)):
        try:
            description = await client.get_workflow_handle(execution.id, run_id=execution.run_id).describe()
        except RPCError:
            continue  # ended meanwhile
        for pending in description.raw_description.pending_activities:
            if (pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                    or pending.last_worker_identity != identity):
                continue
            error = ApplicationError(f"worker {identity} {reason}; released by its supervisor", type="WorkerDied",
                                     next_retry_delay=RETRY_AT_ONCE)
            try:
                await client.get_async_activity_handle(
                    workflow_id=execution.id, run_id=execution.run_id, activity_id=pending.activity_id).fail(error)
            except RPCError:
                continue  # the attempt timed out or completed meanwhile: nothing to release
            released.append(Released(execution.id, pending.activity_id, pending.activity_type.name, pending.attempt))
    return released


class Supervisor:
    """Watches worker processes; when one exits, releases its activities (`release_activities`)."""

    def __init__(self, client: Client, task_queue: str | None = None, poll_interval: float = 0.02) -> None:
        self.client = client
        self.task_queue = task_queue
        self.poll_interval = poll_interval
        self._watching: dict[int, asyncio.Task[list[Released]]] = {}

    def watch(self, worker: "WorkerProcess") -> asyncio.Task[list[Released]]:
        """Start watching `worker` (a ready one: its identity is read now); the task returns what was released
        when it exited."""
        if worker.pid not in self._watching:
            self._watching[worker.pid] = asyncio.create_task(self._watch(worker, worker.identity))
        return self._watching[worker.pid]

    async def _watch(self, worker: "WorkerProcess", identity: str) -> list[Released]:
        while worker.process.poll() is None:
            await asyncio.sleep(self.poll_interval)
        return await release_activities(self.client, identity, task_queue=self.task_queue,
                                        reason=f"exited with {worker.process.returncode}")

    async def close(self) -> None:
        """Stop watching (the processes keep running)."""
        for task in self._watching.values():
            task.cancel()
        await asyncio.gather(*self._watching.values(), return_exceptions=True)
        self._watching.clear()


async def supervise(client: Client, address: str, *, processes: int, namespace: str = "default",
                    task_queue: str | None = None, plugins: list[str] = ()) -> None:
    """Run `processes` worker processes until SIGINT or SIGTERM (the body of `durable-agent worker
    --processes N`). When one exits, release what it was running and start another in its place: with two or
    more, a live one takes over at once while the new one starts."""
    from .warm_start import ENV_VAR, WarmStarter
    from .worker import start_worker_process

    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    # The first processes start from scratch while the warm starter imports; replacements are forked from it.
    # A starter given (exported) is used instead; an empty DURABLE_AGENT_WARM_START turns warm starts off.
    starter = None if ENV_VAR in os.environ else WarmStarter.start(export=True)
    supervisor = Supervisor(client)
    watched: dict[asyncio.Task[list[Released]], "WorkerProcess"] = {}

    async def start_one() -> None:
        worker = await start_worker_process(address, namespace=namespace, task_queue=task_queue, plugins=plugins)
        watched[supervisor.watch(worker)] = worker
        print(f"durable-agent supervisor: worker pid {worker.pid} polling (log: {worker.log_path})", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.create_task(stop.wait())

    async def say_when_warm() -> None:
        await starter.wait_ready()
        print(f"{WARM_LINE}: new worker processes are forked from it (log: {starter.log_path})", flush=True)

    warming = asyncio.create_task(say_when_warm()) if starter is not None else None
    try:
        await asyncio.gather(*(start_one() for _ in range(processes)))
        print(f"{SUPERVISOR_READY_LINE} ({processes} worker processes, pid {os.getpid()})", flush=True)
        while not stop.is_set():
            done, _ = await asyncio.wait([stopping, *watched], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopping}:
                worker = watched.pop(task)
                released = task.result()
                print(f"durable-agent supervisor: worker pid {worker.pid} exited with {worker.process.returncode}; "
                      f"released {len(released)} activity attempt(s) it was running; starting another", flush=True)
                if not stop.is_set():
                    await start_one()
    finally:
        stopping.cancel()
        if warming is not None:
            warming.cancel()
        await supervisor.close()
        await asyncio.gather(*(worker.stop() for worker in watched.values()), return_exceptions=True)
        if starter is not None:
            starter.close()
    print("durable-agent supervisor stopped", flush=True)
