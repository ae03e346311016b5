"""How fast the agent comes back: a worker process's start, and a SIGKILL mid-turn, measured end to end.

`durable-agent bench --recovery` prints these figures (`--json` for machines); notebook 05 shows one crash.

- **ready**: a worker process launched (`python -m durable_agent worker`) until it polls its task queue. The
  worker does not import LiteLLM before it polls: it starts importing it in a background thread once it is
  polling (`llm.preload`), and the worker says in its log whether LiteLLM was loaded when it became ready.
- **crash**: the fault lab's experiment (`FaultLab.crash_mid_turn`): a turn's activity hangs on a worker
  process, the process is SIGKILLed, a new one is started at once, and the Update sent before the crash is
  waited on. Measured from the kill: the new worker polling, the interrupted activity running again (the
  server noticed the dead attempt by its heartbeat timeout, then applied the retry policy's first back-off),
  and the pending message's reply.
- **standby**: the same crash with a second worker process already running on the task queue (how a
  production deployment runs): nobody waits for a process to start, nor for LiteLLM to import.
- **warm**: the new worker process is forked from a warm starter (`durable_agent/warm_start.py`) that has
  already imported the libraries, instead of started from scratch ("cold"): it polls sooner, and its first
  model call does not wait for LiteLLM's import.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from durable_agent.server import Temporal, start_temporal
from durable_agent.warm_start import WarmStarter
from durable_agent.worker import READY_LINE, start_worker_process

from .faults import FaultLab, Faults


@dataclass
class Crash:
    """One SIGKILL mid-turn: seconds from the kill."""

    during: str  # the activity the kill interrupted
    standby: bool  # another worker process was already polling
    to_ready: float  # a new worker process polls (0 with a standby)
    to_retry: float  # the interrupted activity runs again
    to_reply: float  # the pending message's reply arrives
    reply: str
    rerun_completed: int  # completed activities executed again: must be 0
    model_call: str = "activity"  # or "local_activity" (ChatInput.model_call)
    model_runs: int = 0  # model calls executed for the turn, counting the interrupted one and its re-runs
    supervised: bool = False  # a Supervisor told the server the process had exited (else: heartbeat timeout)
    warm: bool = False  # the new worker process was forked from a warm starter (else: started from scratch)


@dataclass
class RecoveryReport:
    ready_s: list[float]  # worker process launched -> polling, one per start
    litellm_loaded_when_ready: list[bool]  # as the worker reported it: False = imported after it polled
    litellm_after_ready_s: list[float]  # ready -> LiteLLM imported in the background (a model call waits for it)
    crashes: list[Crash] = field(default_factory=list)
    warm_ready_s: list[float] = field(default_factory=list)  # the same, forked from a warm starter
    environment: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "RecoveryReport":
        data = json.loads(text)
        return cls(**dict(data, crashes=[Crash(**c) for c in data["crashes"]]))

    def table(self) -> str:
        ready = self.ready_s
        loaded = sum(self.litellm_loaded_when_ready)
        lines = [
            f"Worker process ready (launched -> polling), {len(ready)} starts: p50 {statistics.median(ready):.2f} s, "
            f"min {min(ready):.2f} s, max {max(ready):.2f} s; LiteLLM already imported when ready: {loaded} of "
            f"{len(ready)} (it is imported in a background thread once the worker polls, in "
            f"{statistics.median(self.litellm_after_ready_s):.2f} s p50; a model call waits for it)",
            *([f"Forked from a warm starter (LiteLLM imported), {len(self.warm_ready_s)} starts: p50 "
               f"{statistics.median(self.warm_ready_s):.2f} s, min {min(self.warm_ready_s):.2f} s, max "
               f"{max(self.warm_ready_s):.2f} s"] if self.warm_ready_s else []),
            "",
            "SIGKILL mid-turn, seconds from the kill (the pending message is never re-sent):",
            "",
            f"{'killed during':<18} {'model call':<15} {'standby':>7} {'supervised':>10} {'warm':>5} "
            f"{'-> ready':>9} {'-> retry':>9} {'-> reply':>9} {'model runs':>10} {'rerun':>6}",
            "-" * 108,
        ]
        if not self.crashes:
            lines.append("(no crash measured)")
        for c in self.crashes:
            lines.append(f"{c.during:<18} {c.model_call:<15} {_yes(c.standby):>7} {_yes(c.supervised):>10} "
                         f"{'-' if c.standby else _yes(c.warm):>5} {c.to_ready:>9.2f} {c.to_retry:>9.2f} "
                         f"{c.to_reply:>9.2f} {c.model_runs:>10} {c.rerun_completed:>6}")
        lines.append("")
        ways = {(True, False): "with a standby worker", (False, False): "restarting the worker from scratch",
                (False, True): "restarting the worker from a warm starter"}
        for model_call in ("activity", "local_activity"):
            for (standby, warm), way in ways.items():
                for supervised in (False, True):
                    chosen = [c.to_reply for c in self.crashes if (c.standby, c.model_call, c.supervised) ==
                              (standby, model_call, supervised) and (standby or c.warm == warm)]
                    if chosen:
                        call = "a local activity" if model_call != "activity" else "an activity"
                        lines.append(
                            f"kill -> reply p50, model call as {call}, {way}, "
                            f"{'supervised' if supervised else 'noticed by the heartbeat timeout'}: "
                            f"{statistics.median(chosen):.2f} s over {len(chosen)} crashes")
        return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


READY_LITELLM = "LiteLLM loaded"  # in the worker's ready line when LiteLLM was imported before it polled
ACTIVITIES = ("plan_next_action", "execute_tool")


async def measure_ready(temporal: Temporal, starts: int, task_queue: str = "recovery-ready",
                        warm: WarmStarter | None = None) -> tuple[list[float], list[bool], list[float]]:
    """Launch a worker process `starts` times (from scratch, or forked from `warm`): seconds until each polls,
    whether it had LiteLLM by then, and seconds from then until LiteLLM was imported in the background."""
    seconds, loaded, litellm = [], [], []
    for _ in range(starts):
        worker = await start_worker_process(temporal.address, task_queue=task_queue, warm=warm or False)
        seconds.append(worker.ready_after)
        ready_line = next(line for line in worker.log().splitlines() if READY_LINE in line)
        loaded.append(READY_LITELLM in ready_line)
        litellm.append(await worker.wait_litellm())
        await worker.stop()
    return seconds, loaded, litellm


async def measure_crash(lab: FaultLab, during: str, standby: bool, model_call: str = "activity",
                        supervised: bool = False, warm: WarmStarter | None = None,
                        before: WarmStarter | None = None) -> Crash:
    """One kill, measured. The new worker process (the one measured) is forked from `warm`, or started from
    scratch; the worker that is killed and the standby, up before the turn and not measured, are forked from
    `before` when given (they import nothing), else started from scratch too."""
    lab.warm_starter = before
    spare = None
    try:
        if lab.worker is None or not lab.worker.alive:
            await lab.start_worker_process()
        if standby:  # a second worker process on the lab's task queue, polling before the turn starts
            spare = await lab.launch_worker_process()
            await spare.wait_litellm()  # a standby has been up for a while: it has LiteLLM
        lab.warm_starter = warm  # how the lab starts the new worker process after the kill
        report = await lab.crash_mid_turn(during, standby=spare, model_call=model_call, supervised=supervised)
    finally:
        lab.warm_starter = None
        if spare is not None and spare is not lab.worker:
            await spare.stop()
    model_runs = lab.faults.count("plan_next_action", workflow_id=report.workflow_id)
    return Crash(during, standby, report.restart_to_ready, report.kill_to_retry,
                 report.restart_to_ready + report.ready_to_reply, report.reply, len(report.rerun_completed),
                 model_call, model_runs, supervised, report.warm)


async def run_recovery(temporal: Temporal | None = None, *, starts: int = 5, crashes: int = 2,
                       standby: bool = True, during: tuple[str, ...] = ACTIVITIES, local: bool = True,
                       supervised: tuple[bool, ...] = (False, True), warm: tuple[bool, ...] = (False, True),
                       progress: Callable[[str], None] | None = None) -> RecoveryReport:
    """Measure worker start-up `starts` times and `crashes` kills per activity type in `during`, restarting
    the worker, and (with `standby`) as many with a standby worker, each noticed by the server (heartbeat
    timeout) and/or told by a supervisor (`supervised`); with `local`, as many kills during the model call made
    as a local activity (with a standby, unsupervised: what the local-activity option gives up). A restart
    starts the new worker process from scratch and/or forks it from a warm starter (`warm`)."""
    if starts < 1 or crashes < 0:
        raise ValueError(f"starts must be at least 1 and crashes at least 0 (got {starts}, {crashes})")
    if not supervised or set(supervised) - {False, True}:
        raise ValueError(f"supervised must be (False,), (True,) or (False, True), not {supervised!r}")
    if not warm or set(warm) - {False, True}:
        raise ValueError(f"warm must be (False,), (True,) or (False, True), not {warm!r}")
    if not during or set(during) - set(ACTIVITIES):
        raise ValueError(f"during must name activities among {', '.join(ACTIVITIES)}, not {during!r}")
    from .bench import environment

    say = progress or (lambda text: None)
    own = temporal is None
    temporal = temporal or await start_temporal(ui=False)
    faults = Faults.create(activate=False)
    lab = FaultLab(temporal, faults, task_queue=f"recovery-{time.monotonic_ns() % 10**8}")
    starter = WarmStarter.start() if True in warm else None  # imports while the cold starts are measured
    try:
        say(f"worker start-up, {starts} times")
        report = RecoveryReport(*await measure_ready(temporal, starts), environment=environment())
        if starter is not None:
            await starter.wait_ready()
            say(f"worker start-up from a warm starter, {starts} times")
            report.warm_ready_s = (await measure_ready(temporal, starts, warm=starter))[0]
        ways = [(False, False), (False, True)] if False in warm and True in warm else [(False, True in warm)]
        for spare, forked in ways + ([(True, False)] if standby else []):
            for told in supervised:
                for activity in during:
                    for _ in range(crashes):
                        say(f"SIGKILL during {activity}{' with a standby worker' if spare else ''}"
                            f"{' restarting from a warm starter' if forked else ''}{', supervised' if told else ''}")
                        report.crashes.append(await measure_crash(lab, activity, spare, supervised=told,
                                                                  warm=starter if forked else None, before=starter))
        for _ in range(crashes if local else 0):
            say("SIGKILL during plan_next_action as a local activity, with a standby worker")
            report.crashes.append(await measure_crash(lab, "plan_next_action", True, "local_activity",
                                                      before=starter))
        return report
    finally:
        await lab.close()
        if starter is not None:
            starter.close()
        faults.remove()
        if own:
            await temporal.shutdown()
