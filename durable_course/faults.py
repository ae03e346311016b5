"""Fault injection: break the durable agent on purpose and watch Temporal recover (notebook 05).

Each experiment leans on one primitive:
- a worker SIGKILLed mid-turn, a server restarted from its SQLite file: 3, event-sourced state;
- a model outage, a buggy tool hot-fixed while the chat waits: 2, managed side effects (retries);
- changed workflow code replayed against a recorded history: 1, the deterministic orchestrator.

The fault switches live in a small directory named by the `DURABLE_AGENT_FAULTS` environment variable and
are read at the moment an activity runs, so they reach a worker in this process and a worker process alike:

    faults = Faults.create()          # a fresh directory; sets DURABLE_AGENT_FAULTS here (children inherit it)
    faults.hang("execute_tool")       # the next tool call hangs, so a SIGKILL lands in the middle of it
    faults.hold("execute_tool")       # the next tool call waits (alive, heartbeating) until faults.release()
    faults.model_outage(times=3)      # the offline model answers HTTP 503 three times
    faults.clear()                    # switches off; faults.executions() still lists what ran

The lab reaches a worker only from outside, as a Temporal worker plugin: `fault_lab_plugin()` for a worker
in this process (`start_worker(client, plugins=[fault_lab_plugin()])`), `PLUGIN` for a worker process
(`start_worker_process(address, plugins=[PLUGIN])`). Its `FaultInterceptor` appends one line per activity
start and end to `executions.jsonl` in that directory with a single `write`, so the count of real executions
survives SIGKILL; it also sets the offline model's outage hook (`llm.set_offline_outage`). A worker started
without the plugin runs no code of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar

from temporalio import activity
from temporalio.client import WorkflowHistory
from temporalio.plugin import SimplePlugin
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from durable_agent import llm
from durable_agent.config import redact_secrets
from durable_agent.logs import silenced
from durable_agent.supervisor import Supervisor
from durable_agent.warm_start import WarmProcess, WarmStarter

from . import events

if TYPE_CHECKING:
    from durable_agent.server import Temporal
    from durable_agent.session import ChatSession
    from durable_agent.worker import BackgroundWorker, WorkerProcess

try:
    import fcntl
except ImportError:  # Windows: no file locks; one worker at a time is fine
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")
ENV_VAR = "DURABLE_AGENT_FAULTS"
HANG, HOLD, OUTAGE = "hang", "hold", "outage"
HANG_SECONDS = 60.0  # a hang ends by itself after this (or when the server's timeout cancels the attempt)
ACTIVITY_TYPES = ("plan_next_action", "execute_tool")


@dataclass
class Fault:
    kind: str  # HANG (an activity blocks), HOLD (it waits for release()) or OUTAGE (the offline model fails)
    target: str  # HANG, HOLD: an activity type; OUTAGE: "model"
    times: int = 1  # how many calls it hits
    skip: int = 0  # let this many calls through first
    status: int = 503  # OUTAGE: the HTTP status the offline model answers with
    retry_after: float | None = None  # OUTAGE: the Retry-After header it sends with it (seconds), if any


@dataclass
class Execution:
    """One line of the execution log: an activity attempt started, or ended."""

    event: str  # "start", "done" or "failed"
    activity: str
    activity_id: str
    attempt: int
    workflow_id: str
    pid: int
    t: float  # time.time(): comparable between processes
    fault: str | None = None
    error: str | None = None
    run_id: str = ""  # activity ids start again at 1 in each run of a chat that continued as new


class Faults:
    """The fault switches and the execution log: one directory, shared by every process that sees it."""

    # The activity types hang() and hold() accept: the course agent's. Another agent's lab (notebook 10's
    # framework agents) gives its own: `Faults.create(activity_types=(...))`.
    activity_types: tuple[str, ...] = ACTIVITY_TYPES

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, path: str | os.PathLike[str] | None = None, activate: bool = True,
               activity_types: tuple[str, ...] | None = None) -> "Faults":
        faults = cls(path or tempfile.mkdtemp(prefix="durable-agent-faults-"))
        if activity_types:
            faults.activity_types = tuple(activity_types)
        faults.reset()
        if activate:
            os.environ[ENV_VAR] = str(faults.path)
        return faults

    # --- switches (a notebook cell or a test sets them) ---------------------------------------------------

    def hang(self, activity_type: str, *, skip: int = 0, times: int = 1) -> None:
        """The next call of `activity_type` (after `skip` calls) blocks, heartbeating, until killed."""
        if activity_type not in self.activity_types:
            raise ValueError(f"unknown activity type {activity_type!r}; the agent's are {', '.join(self.activity_types)}")
        self._add(Fault(HANG, activity_type, _at_least(1, times=times), _at_least(0, skip=skip)))

    def hold(self, activity_type: str) -> None:
        """The next call of `activity_type` waits, heartbeating, until `release()`; then it runs as usual.
        Something can then happen while it is in flight (a server restart), and the call still completes."""
        if activity_type not in self.activity_types:
            raise ValueError(f"unknown activity type {activity_type!r}; the agent's are {', '.join(self.activity_types)}")
        (self.path / "released").unlink(missing_ok=True)
        self._add(Fault(HOLD, activity_type))

    def release(self) -> None:
        """Let a held call go on."""
        (self.path / "released").write_text("")

    def released(self) -> bool:
        return (self.path / "released").exists()

    def model_outage(self, times: int, status: int = 503, retry_after: float | None = None) -> None:
        """The offline model fails the next `times` calls as a provider would: HTTP `status` (503, 429...),
        with a `Retry-After: <retry_after>` header when given (the wait, in seconds, the provider asks for)."""
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"an outage needs an HTTP error status (400-599), not {status!r}")
        if retry_after is not None and not (isinstance(retry_after, (int, float)) and retry_after >= 0):
            raise ValueError(f"retry_after is a number of seconds (0 or more), not {retry_after!r}")
        self._add(Fault(OUTAGE, "model", _at_least(1, times=times), status=status, retry_after=retry_after))

    def clear(self) -> None:
        """Switch every fault off (the execution log is kept)."""
        with self._locked():
            self._save([])

    def reset(self) -> None:
        """Switch every fault off and empty the execution log."""
        self.clear()
        (self.path / "executions.jsonl").write_text("")

    def remove(self) -> None:
        """Delete the directory, and stop pointing this process at it."""
        if os.environ.get(ENV_VAR) == str(self.path):
            del os.environ[ENV_VAR]
        shutil.rmtree(self.path, ignore_errors=True)

    def pending(self) -> list[Fault]:
        return [f for f in self._load() if f.times > 0]

    # --- the execution log ---------------------------------------------------------------------------------

    def executions(self, workflow_id: str | None = None) -> list[Execution]:
        log = self.path / "executions.jsonl"
        found = []
        for line in log.read_text().splitlines() if log.exists() else []:
            with contextlib.suppress(ValueError):  # a line being appended right now is read next time
                found.append(Execution(**json.loads(line)))
        return [e for e in found if workflow_id is None or e.workflow_id == workflow_id]

    def count(self, activity_type: str, event: str = "start", workflow_id: str | None = None) -> int:
        return sum(1 for e in self.executions(workflow_id) if e.activity == activity_type and e.event == event)

    async def wait_for(self, check: Callable[[list[Execution]], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.executions()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the expected activity executions did not happen within {timeout} s")
            await asyncio.sleep(0.05)

    # --- used by the worker side ---------------------------------------------------------------------------

    def take(self, kind: str, target: str) -> Fault | None:
        """Consume one hit of the first matching fault, or None if this call goes through."""
        with self._locked():
            faults = self._load()
            for fault in faults:
                if fault.kind == kind and fault.target == target and fault.times > 0:
                    hit = fault.skip == 0
                    fault.skip, fault.times = (fault.skip, fault.times - 1) if hit else (fault.skip - 1, fault.times)
                    self._save(faults)
                    return fault if hit else None
        return None

    def record(self, execution: Execution) -> None:
        line = (json.dumps(asdict(execution)) + "\n").encode()
        fd = os.open(self.path / "executions.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one append: whole, even if the process is killed right after
        finally:
            os.close(fd)

    def _add(self, fault: Fault) -> None:
        with self._locked():
            self._save(self._load() + [fault])

    def _load(self) -> list[Fault]:
        file = self.path / "faults.json"
        return [Fault(**f) for f in json.loads(file.read_text())] if file.exists() else []

    def _save(self, faults: list[Fault]) -> None:
        temp = self.path / "faults.json.tmp"
        temp.write_text(json.dumps([asdict(f) for f in faults]))
        temp.replace(self.path / "faults.json")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path / "lock", "w") as lock:
            if fcntl:
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _at_least(minimum: int, **value: int) -> int:
    (name, number), = value.items()
    if not isinstance(number, int) or number < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, not {number!r}")
    return number


def current() -> Faults | None:
    """The fault directory this process points at right now (DURABLE_AGENT_FAULTS), if any."""
    path = os.environ.get(ENV_VAR)
    return Faults(path) if path and os.path.isdir(path) else None


def model_outage_status() -> int | tuple[int, dict[str, str]] | None:
    """Called by the offline model on every call: the HTTP status to fail with (and the Retry-After header to
    send with it, if the outage has one), or None."""
    faults = current()
    fault = faults.take(OUTAGE, "model") if faults else None
    if fault is None:
        return None
    return (fault.status, {"Retry-After": f"{fault.retry_after:g}"}) if fault.retry_after is not None else fault.status


PLUGIN = "durable_course.faults:fault_lab_plugin"  # the plugin's import path, for a worker process
_workers_with_the_lab = 0


@contextlib.asynccontextmanager
async def _outage_switch() -> AsyncIterator[None]:
    """While a worker with the lab runs in this process, the offline model obeys `Faults.model_outage`."""
    global _workers_with_the_lab
    _workers_with_the_lab += 1
    llm.set_offline_outage(model_outage_status)
    try:
        yield
    finally:
        _workers_with_the_lab -= 1
        if _workers_with_the_lab == 0:
            llm.set_offline_outage(None)


def fault_lab_plugin() -> SimplePlugin:
    """The fault lab as a Temporal worker plugin: the execution log, hangs and holds (an activity
    interceptor), and model outages (the offline model's outage hook), all read from DURABLE_AGENT_FAULTS."""
    return SimplePlugin("durable-course.fault-lab", interceptors=[FaultInterceptor()], run_context=_outage_switch)


class FaultInterceptor(Interceptor):
    """Logs every activity execution to the fault directory and applies hangs. Does nothing without one."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _LogAndHang(next)


class _LogAndHang(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        faults = current()
        if faults is None:
            return await self.next.execute_activity(input)
        info = activity.info()
        fault = faults.take(HANG, info.activity_type) or faults.take(HOLD, info.activity_type)

        def log(event: str, error: str | None = None) -> None:
            faults.record(Execution(event, info.activity_type, info.activity_id, info.attempt, info.workflow_id or "",
                                    os.getpid(), time.time(), fault.kind if fault else None, error,
                                    info.workflow_run_id or ""))

        log("start")
        try:
            if fault:
                deadline = time.monotonic() + HANG_SECONDS
                while time.monotonic() < deadline:  # heartbeat, so only a real crash looks like one
                    if fault.kind == HOLD and faults.released():
                        break
                    activity.heartbeat()
                    await asyncio.sleep(0.1 if fault.kind == HOLD else 0.2)
            result = await self.next.execute_activity(input)
        except BaseException as err:
            log("failed", redact_secrets(getattr(err, "message", None) or f"{type(err).__name__}: {err}"))
            raise
        log("done")
        return result


# --- what the event history says ran ---------------------------------------------------------------------

@dataclass
class ActivityRun:
    """One activity of a workflow as the event history records it, next to the real executions logged."""

    activity_id: str
    activity: str
    outcome: str  # "completed", "failed", "timed out", "canceled" or "pending"
    attempt: int  # the attempt the history recorded (the last one)
    starts: int = 0  # real executions, from the execution log
    last_failure: str = ""  # why the attempt before it ended (the history keeps it on the started event)

    def line(self, note: str = "") -> str:
        return (f"  #{self.activity_id} {self.activity:<17} ran {self.starts}x   "
                f"history: {self.outcome} on attempt {self.attempt}{note}")


def activity_runs(history: WorkflowHistory, executions: list[Execution] | None = None) -> list[ActivityRun]:
    mine = [e for e in executions or [] if e.workflow_id == history.workflow_id]  # ids restart in each workflow
    starts = Counter(e.activity_id for e in mine if e.event == "start")
    return [ActivityRun(a.activity_id, a.type, a.outcome, a.attempt, starts[a.activity_id], a.last_failure)
            for a in events.activities(history)]


async def watch_backoffs(handle: Any, until: Awaitable[T]) -> tuple[T, dict[tuple[str, int], float]]:
    """Await `until` while reading, from the server, the back-off it applies before each activity retry.

    While an activity waits for its next attempt, the server's description of the workflow lists it as a
    pending activity whose `current_retry_interval` is the wait the retry policy gave that attempt: computed
    by the server from the policy, not measured here. Returns `until`'s result and {(activity id, attempt):
    seconds}. A back-off is at least the policy's initial interval (a second for the agent), and the
    description is read every 50 ms, so none is missed."""
    task = asyncio.ensure_future(until)
    backoffs: dict[tuple[str, int], float] = {}
    while not task.done():
        try:
            pending = (await handle.describe()).raw_description.pending_activities
        except Exception:  # the server is busy or restarting: read again on the next round
            pending = []
        for info in pending:
            if info.attempt > 1 and info.HasField("current_retry_interval"):
                seconds = info.current_retry_interval.ToTimedelta().total_seconds()
                backoffs.setdefault((info.activity_id, info.attempt), round(seconds, 1))
        await asyncio.wait({task}, timeout=0.05)
    return task.result(), backoffs


def _model_error(error: str | None) -> str:
    """'the model call failed: X: litellm.X: OpenAIException - overloaded' -> 'X: overloaded'"""
    found = re.search(r"litellm\.(\w+): .*? - (.*)$", error or "")
    return _short(f"{found[1]}: {found[2]}" if found else error)


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _short(text: str | None, limit: int = 110) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the experiments ---------------------------------------------------------------------------------------

def interrupted_run(runs: list[ActivityRun], completed_before_kill: list[str]) -> ActivityRun | None:
    """The activity a kill interrupted: it ran more than once, and its attempt had not finished before the kill."""
    return next((r for r in runs if r.activity_id not in completed_before_kill and r.starts > 1), None)


@dataclass
class CrashReport:
    workflow_id: str
    during: str
    reply: str
    killed_pid: int
    new_pid: int
    runs: list[ActivityRun]
    completed_before_kill: list[str]  # activity ids whose attempt finished on the killed worker
    rerun_completed: list[str]  # ...and that ran again anyway: must stay empty
    restart_to_ready: float  # SIGKILL -> a new worker process polls (LiteLLM is imported after that)
    ready_to_reply: float  # -> the pending Update returned (Temporal's recovery timers, LiteLLM's import)
    kill_to_retry: float  # SIGKILL -> the interrupted activity ran again
    supervised: bool = False  # a Supervisor told the server the process had exited
    standby: bool = False  # a worker process already polling took over (none was started)
    warm: bool = False  # the new worker process was forked from the lab's warm starter (LiteLLM imported)

    @property
    def interrupted(self) -> ActivityRun | None:
        return interrupted_run(self.runs, self.completed_before_kill)

    def _recovery_line(self, interrupted: ActivityRun | None) -> str:
        if interrupted is None:
            return "No activity was interrupted."
        if self.supervised:
            return (f"The supervisor saw the process exit and failed its attempt of #{interrupted.activity_id} "
                    f"at once ({interrupted.last_failure!r}); the server retried it.")
        return (f"The server gave up on the dead attempt of #{interrupted.activity_id} when it timed out "
                f"({interrupted.last_failure!r}), then retried it.")

    def __str__(self) -> str:
        notes = {i: "   <- completed before the crash: not run again" for i in self.completed_before_kill}
        interrupted = self.interrupted
        if interrupted:
            notes[interrupted.activity_id] = "   <- interrupted by the kill, run again"
        return "\n".join([
            f"SIGKILL to worker pid {self.killed_pid} during {self.during}; "
            + (f"the standby worker pid {self.new_pid} took over." if self.standby
               else f"restarted it as pid {self.new_pid}"
               + (", forked from the warm starter (LiteLLM already imported)." if self.warm else ".")),
            f"Agent (the same Update, never re-sent): {self.reply}",
            self._recovery_line(interrupted),
            # The only line that changes from run to run (nbval's sanitize file blanks it).
            "Measured on this machine: from the kill, "
            + ("the standby polling all along, " if self.standby
               else f"new worker polling {_seconds(self.restart_to_ready)}, ")
            + f"interrupted activity running again {_seconds(self.kill_to_retry)}, reply "
            f"{_seconds(self.restart_to_ready + self.ready_to_reply)}.",
            "This turn's activities (executions counted by the log, outcome recorded in the event history):",
            *(r.line(notes.get(r.activity_id, "")) for r in self.runs),
            f"Completed activities executed twice: {', '.join(self.rerun_completed) or 'none'}",
        ])


@dataclass
class OutageReport:
    reply: str
    # (attempt, back-off before it in seconds as the server applied it, outcome) of the first model call
    attempts: list[tuple[int, float | None, str]]
    error: str | None = None  # the reply is an error: every attempt the retry policy allows has failed
    workflow_id: str = ""

    @property
    def backoffs(self) -> list[float | None]:
        return [backoff for n, backoff, _ in self.attempts if n > 1]

    def __str__(self) -> str:
        def after(n: int, backoff: float | None) -> str:
            if n == 1:
                return ""
            return f" after a back-off of {backoff:g} s" if backoff is not None else " after a back-off (not seen)"

        return "\n".join([
            "The first planning activity (the model call), attempt by attempt:",
            *(f"  attempt {n}{after(n, backoff)}: {outcome}" for n, backoff, outcome in self.attempts),
            f"Agent: {self.reply}",
        ])


@dataclass
class BuggyTurn:
    """A turn waiting on a tool that fails: the Update is pending, the workflow is running."""

    question: str
    chat: ChatSession
    reply: asyncio.Task[Any]  # resolves to the AgentReply once the tool works
    tools_module: str
    failed_attempts: list[str]
    agent_status: str
    next_attempt: int
    in_kernel: bool = False

    def __str__(self) -> str:
        return "\n".join([
            f"You:   {self.question}",
            f"Agent status (a query, answered by the worker): {self.agent_status}",
            *(f"  execute_tool attempt {i} failed: {error}" for i, error in enumerate(self.failed_attempts, 1)),
            f"The workflow is still running; the server will retry execute_tool (next: attempt {self.next_attempt}).",
            "The buggy worker has been stopped: fix the code, then restart the worker.",
        ])


@dataclass
class HotFixReport:
    reply: str
    new_pid: int
    runs: list[ActivityRun]

    def __str__(self) -> str:
        first_plan = next(r.activity_id for r in self.runs if r.activity == "plan_next_action")
        notes = {first_plan: "   <- planned before the bug: reused, not recomputed"}
        notes.update({r.activity_id: "   <- failed until the fix" for r in self.runs if r.activity == "execute_tool"})
        return "\n".join([
            f"Worker restarted with the fixed code (pid {self.new_pid}).",
            f"Agent (the same pending Update): {self.reply}",
            "This turn's activities:",
            *(r.line(notes.get(r.activity_id, "")) for r in self.runs),
        ])


class ExperimentWorkers:
    """The workers a lab's experiments run on: one worker process at a time (to SIGKILL) or one worker in this
    kernel, each carrying the plugins the lab names (`PROCESS_PLUGINS`, `kernel_plugins`) and the fault lab.
    A lab (a dataclass) mixes it in and holds `temporal`, `task_queue`, `faults`, `worker`, `kernel_worker`."""

    PROCESS_PLUGINS: tuple[str, ...] = ()

    def kernel_plugins(self) -> list[Any]:
        return []

    async def _stop_workers(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        if self.kernel_worker is not None:
            await self.kernel_worker.stop()
            self.kernel_worker = None

    async def start_worker_process(self) -> WorkerProcess:
        from durable_agent.worker import start_worker_process

        await self._stop_workers()
        self.worker = await start_worker_process(
            self.temporal.address, task_queue=self.task_queue, env={ENV_VAR: str(self.faults.path)},
            plugins=[*self.PROCESS_PLUGINS, PLUGIN])
        return self.worker

    async def start_kernel_worker(self) -> BackgroundWorker:
        from durable_agent.worker import start_worker

        await self._stop_workers()
        self.kernel_worker = await start_worker(self.temporal.client, task_queue=self.task_queue,
                                                plugins=[*self.kernel_plugins(), fault_lab_plugin()])
        return self.kernel_worker

    async def a_worker_process(self) -> WorkerProcess:
        """The running worker process, or a new one (to be killed)."""
        return self.worker if self.worker is not None and self.worker.alive else await self.start_worker_process()

    async def some_worker(self) -> None:
        """A worker polling the lab's task queue: the running one, or a new one in this kernel."""
        if self.kernel_worker is None and (self.worker is None or not self.worker.alive):
            await self.start_kernel_worker()


@dataclass
class FaultLab(ExperimentWorkers):
    """Runs the experiments against a server (`lab.temporal`), with a worker process it can kill."""

    temporal: Temporal
    faults: Faults
    task_queue: str = "fault-lab"
    tools_path: str | None = None  # a folder to import tool modules from (default: the current folder)
    worker: WorkerProcess | None = None  # the worker process the experiments kill and restart
    # Worker processes are forked from it when set (`use_warm_starter`), else started from scratch, whatever the
    # environment says: what an experiment shows does not depend on where the notebook runs.
    warm_starter: WarmStarter | None = None
    kernel_worker: BackgroundWorker | None = None  # the hot-fix lab's worker in this process, if any
    builtin_tools: dict[str, Any] = field(default_factory=dict, repr=False)  # restored by close()

    async def start_worker_process(self, tools_module: str | None = None) -> WorkerProcess:
        """A worker process that sees the fault switches (and imports `tools_module`, if given)."""
        await self._stop_workers()  # the lab's task queue has one worker at a time
        self.worker = await self.launch_worker_process(tools_module)
        return self.worker

    async def launch_worker_process(self, tools_module: str | None = None) -> WorkerProcess:
        """One more worker process on the lab's task queue (a standby: see `crash_mid_turn`); the lab's own
        worker, if any, keeps running."""
        from durable_agent.worker import TOOL_MODULES_ENV, start_worker_process

        # No .pyc files: a fix saved within the same second as the bug is never masked by a stale cache.
        env = {ENV_VAR: str(self.faults.path), "PYTHONDONTWRITEBYTECODE": "1", TOOL_MODULES_ENV: tools_module or ""}
        if self.tools_path:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (self.tools_path, os.environ.get("PYTHONPATH")) if p)
        return await start_worker_process(self.temporal.address, task_queue=self.task_queue, env=env,
                                          plugins=[PLUGIN], warm=self.warm_starter or False)

    async def use_warm_starter(self) -> float:
        """From now on, fork the lab's worker processes from a warm starter (`durable_agent/warm_start.py`) that
        has imported LiteLLM once; `close()` stops it. Seconds it took to be ready."""
        if self.warm_starter is None:
            self.warm_starter = WarmStarter.start()
        return await self.warm_starter.wait_ready()

    async def new_chat(self, model_call: str = "activity") -> ChatSession:
        from durable_agent.session import start_chat
        from durable_agent.workflow import ChatInput

        return await start_chat(self.temporal.client, task_queue=self.task_queue, input=ChatInput(model_call=model_call))

    async def crash_mid_turn(self, during: str = "plan_next_action", question: str = "What is 25 + 17?",
                             standby: WorkerProcess | None = None, model_call: str = "activity",
                             supervised: bool = False) -> CrashReport:
        """SIGKILL the worker process while `during` runs, restart it, and wait for the same Update's reply.

        `plan_next_action`: the kill lands in the second model call, after a tool call has completed;
        `execute_tool`: in the tool call, after the first model call has completed. With `standby`, a second
        worker process already polling the lab's task queue: whichever of the two runs the hanging call is
        killed, the other takes over, and no new process is started (`restart_to_ready` is then 0). With
        `model_call="local_activity"` the model calls are local activities (see `workflow.PLAN_LOCAL_ACTIVITY`).
        With `supervised`, a `durable_agent.supervisor.Supervisor` watches the worker processes and tells the
        server at once when one exits, instead of the server waiting for the dead attempt's heartbeat timeout."""
        if during not in ("plan_next_action", "execute_tool"):
            raise ValueError(f"during must be 'plan_next_action' or 'execute_tool', not {during!r}")
        self.faults.clear()
        self.faults.hang(during, skip=1 if during == "plan_next_action" else 0)
        victim = await self.a_worker_process()
        workers = {w.pid: w for w in (victim, standby) if w is not None}
        chat = await self.new_chat(model_call)
        pending = asyncio.create_task(chat.send(question))
        try:  # wait until the activity is running (and hanging) on the worker
            await self.faults.wait_for(lambda ex: any(e.fault == HANG and e.workflow_id == chat.workflow_id for e in ex))
        except TimeoutError:
            pending.cancel()
            raise
        hung = next(e for e in self.faults.executions(chat.workflow_id) if e.fault == HANG)
        if hung.pid not in workers:
            pending.cancel()
            raise RuntimeError(f"{during} hangs in process {hung.pid}, not in the lab's worker {victim.pid}: "
                               f"is another worker polling the task queue {self.task_queue!r}?")
        victim = workers.pop(hung.pid)
        # Found by the dead worker's identity alone: in class mode the server knows the task queue by another name.
        supervisor = Supervisor(self.temporal.client) if supervised else None
        if supervisor:
            supervisor.watch(victim)
        try:
            victim.kill()  # SIGKILL, by process id
            killed_at = time.time()
            self.worker = None
            if workers:  # the standby takes over: it becomes the lab's worker, polling all along
                self.worker = next(iter(workers.values()))
                ready = killed_at
            else:
                await self.start_worker_process()
                ready = time.time()
            reply = await pending
            replied = time.time()
        finally:
            if supervisor:
                await supervisor.close()
        executions = self.faults.executions(chat.workflow_id)
        runs = activity_runs(await chat.handle.fetch_history(), executions)
        done_before = sorted({e.activity_id for e in executions if e.event == "done" and e.pid == victim.pid}, key=int)
        retried_at = next((e.t for e in executions if e.activity_id == hung.activity_id and e.event == "start"
                           and e.t > killed_at), replied)
        return CrashReport(
            chat.workflow_id, during, reply.text, victim.pid, self.worker.pid, runs, done_before,
            [r.activity_id for r in runs if r.activity_id in done_before and r.starts > 1],
            ready - killed_at, replied - ready, retried_at - killed_at, supervised, standby is not None,
            standby is None and isinstance(self.worker.process, WarmProcess))

    async def model_outage_turn(self, failures: int = 3, status: int = 503,
                                question: str = "What is 25 + 17?", retry_after: float | None = None) -> OutageReport:
        """The offline model fails `failures` times with HTTP `status` (and `Retry-After: retry_after`, if
        given); the turn still gets its answer. With failures=0 no switch is set (a real provider can fail on
        its own, e.g. the test server)."""
        self.faults.clear()
        if failures:
            self.faults.model_outage(failures, status, retry_after)
        chat = await self.new_chat()
        reply, backoffs = await watch_backoffs(chat.handle, chat.send(question))
        plans = [e for e in self.faults.executions(chat.workflow_id) if e.activity == "plan_next_action"]
        first = plans[0].activity_id if plans else ""
        attempts = sorted({e.attempt for e in plans if e.activity_id == first and e.event == "start"})
        ends = {e.attempt: ("ok" if e.event == "done" else f"failed: {_model_error(e.error)}") for e in plans
                if e.activity_id == first and e.event != "start"}
        return OutageReport(reply.text, [(n, backoffs.get((first, n)), ends.get(n, "?")) for n in attempts],
                            reply.error, chat.workflow_id)

    async def start_buggy_turn(self, tools_module: str, question: str, failures: int = 2,
                               in_kernel: bool = False) -> BuggyTurn:
        """Start a worker with `tools_module` (a worker process, or with `in_kernel` a worker in this process),
        ask `question`, let the tool fail `failures` times, then stop that worker: the turn stays pending."""
        self.faults.clear()
        if in_kernel:
            await self._start_kernel_worker(tools_module)
        else:
            await self.start_worker_process(tools_module)
        chat = await self.new_chat()
        reply = asyncio.create_task(chat.send(question))

        def failed(ex: list[Execution]) -> list[Execution]:
            return [e for e in ex if e.workflow_id == chat.workflow_id and e.activity == "execute_tool"
                    and e.event == "failed"]

        with silenced():  # a worker in a notebook's kernel would print each failure's traceback
            await self.faults.wait_for(lambda ex: reply.done() or len(failed(ex)) >= failures)
            if reply.done():
                raise RuntimeError(f"the tool did not fail; the agent replied: {reply.result().text}")
            agent_status = (await chat.status()).describe()
            next_attempt = await _next_attempt(chat.handle, "execute_tool", failures + 1)
            await self._stop_workers()
        errors = [_short(e.error) for e in failed(self.faults.executions())]
        return BuggyTurn(question, chat, reply, tools_module, errors, agent_status, next_attempt, in_kernel)

    async def restart_with_fix(self, turn: BuggyTurn) -> HotFixReport:
        """Start the worker again (it imports the fixed module) and wait for the pending reply."""
        if turn.in_kernel:
            await self._start_kernel_worker(turn.tools_module)
        else:
            await self.start_worker_process(turn.tools_module)
        reply = await turn.reply
        runs = activity_runs(await turn.chat.handle.fetch_history(), self.faults.executions(turn.chat.workflow_id))
        return HotFixReport(reply.text, os.getpid() if turn.in_kernel else self.worker.pid, runs)

    async def _start_kernel_worker(self, tools_module: str) -> None:
        import importlib
        import sys

        from durable_agent import tools

        await self._stop_workers()  # the lab's task queue has one worker at a time
        self.builtin_tools = self.builtin_tools or dict(tools.TOOLS)
        importlib.invalidate_caches()
        sys.dont_write_bytecode, saved = True, sys.dont_write_bytecode  # always read the source just saved
        try:
            if tools_module in sys.modules:
                importlib.reload(sys.modules[tools_module])
            else:
                importlib.import_module(tools_module)
        finally:
            sys.dont_write_bytecode = saved
        await self.start_kernel_worker()

    async def close(self) -> None:
        """Stop the lab's workers, switch the faults off, and put back tools a lab module replaced."""
        await self._stop_workers()
        if self.warm_starter is not None:
            self.warm_starter.close()
            self.warm_starter = None
        self.faults.clear()
        if self.builtin_tools:
            from durable_agent import tools

            tools.TOOLS.clear()
            tools.TOOLS.update(self.builtin_tools)


async def _next_attempt(handle: Any, activity_type: str, at_least: int, timeout: float = 30.0) -> int:
    """Wait until the server has recorded the failures and scheduled attempt `at_least` of a pending activity."""
    deadline = time.monotonic() + timeout
    while True:
        pending = (await handle.describe()).raw_description.pending_activities
        attempts = [p.attempt for p in pending if p.activity_type.name == activity_type]
        if (attempts and attempts[0] >= at_least) or time.monotonic() > deadline:
            return attempts[0] if attempts else 0
        await asyncio.sleep(0.05)


# --- broken determinism --------------------------------------------------------------------------------------

# --- server restart ------------------------------------------------------------------------------------------

@dataclass
class ServerRestartReport:
    first_reply: str
    in_flight: str  # the activity id of the tool call that was running while the server was down
    messages_before: int  # the conversation (a query) just before the server was stopped
    intact: bool  # the event history read from the restarted server equals the one read before the stop
    second_reply: str
    turns: int
    runs: list[ActivityRun]  # every activity of the chat, with its real executions counted
    restart_seconds: float

    def __str__(self) -> str:
        note = {self.in_flight: "   <- running while the server was down: ran once, its result kept"}
        return "\n".join([
            f"Turn 1             Agent: {self.first_reply}",
            f"Turn 2: the server was stopped while tool call #{self.in_flight} was running, then started again "
            "on the same SQLite file. The worker stayed up.",
            f"Event history read after the restart identical to the one before: {self.intact} "
            f"(the conversation so far: {self.messages_before} messages)",
            f"Turn 2 (the same Update, never re-sent)   Agent: {self.second_reply}",
            "The chat's activities (executions counted by the log, outcome recorded in the event history):",
            *(r.line(note.get(r.activity_id, "")) for r in self.runs),
            f"Turns in this chat: {self.turns}",
        ])


async def server_restart_mid_chat(db_file: str | os.PathLike[str], faults: Faults | None = None,
                                  questions: tuple[str, str] = ("What is 25 + 17?", "And what is 6 * 7?"),
                                  task_queue: str = "fault-lab-restart") -> ServerRestartReport:
    """A chat on an embedded server persisted to `db_file`. Turn 1 runs normally; in turn 2 the tool call is
    held (`faults.hold`), and while it runs the server is stopped and started again (same file, same port).
    The worker, in this process, stays up and reconnects by itself; the tool call is then let go, and the
    Update sent before the restart gets its reply. `faults` (default: the active fault directory) logs every
    activity execution, so the report counts them. The worker sends heartbeats every 0.1 s (by default at
    most every 80% of a heartbeat timeout), so what the server last heard of the call is fresh when it stops:
    a restart shorter than the call's timeouts does not make the server give up on it."""
    from durable_agent.config import settings
    from durable_agent.server import free_port, start_temporal
    from durable_agent.session import start_chat
    from durable_agent.worker import start_worker

    if settings().temporal_address:
        raise RuntimeError("this experiment restarts the embedded server; unset TEMPORAL_ADDRESS to run it")
    faults = faults or current()
    if faults is None:
        raise RuntimeError("this experiment needs a fault directory (Faults.create()): it holds the tool call "
                           "and counts executions")
    saved, os.environ[ENV_VAR] = os.environ.get(ENV_VAR), str(faults.path)  # the worker below reads it
    port = free_port()
    temporal = await start_temporal(db_file=db_file, ui=False, port=port)
    restarted = None
    worker = await start_worker(temporal.client, task_queue=task_queue, plugins=[fault_lab_plugin()],
                                max_heartbeat_throttle_interval=timedelta(seconds=0.1))
    pending: asyncio.Task[Any] | None = None
    try:
        chat = await start_chat(temporal.client, task_queue=task_queue)
        first = await chat.send(questions[0])
        faults.hold("execute_tool")
        pending = asyncio.create_task(chat.send(questions[1]))
        await faults.wait_for(lambda ex: any(e.fault == HOLD and e.workflow_id == chat.workflow_id for e in ex))
        held = next(e for e in faults.executions(chat.workflow_id) if e.fault == HOLD)
        messages_before = len(await chat.history())
        events_before = list((await chat.handle.fetch_history()).events)
        await temporal.shutdown()
        started = time.monotonic()
        restarted = await start_temporal(db_file=db_file, ui=False, port=port)
        restart_seconds = time.monotonic() - started
        handle = restarted.client.get_workflow_handle(chat.workflow_id)  # only the id survives in our hands
        intact = list((await handle.fetch_history()).events) == events_before
        faults.release()
        second = await pending  # sent before the restart, answered after it
        turns = (await chat.status()).turns
        runs = activity_runs(await handle.fetch_history(), faults.executions(chat.workflow_id))
    finally:
        faults.release()
        faults.clear()
        if pending is not None and not pending.done():
            pending.cancel()
        await worker.stop()
        await temporal.shutdown()
        if restarted is not None:
            await restarted.shutdown()
        if saved is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = saved
    return ServerRestartReport(first.text, held.activity_id, messages_before, intact, second.text, turns, runs,
                               restart_seconds)
