"""Notebook 10's lab: the framework agents in worker processes, a turn each, and a SIGKILL mid-turn.

    from durable_course.frameworks.lab import FrameworkLab
    fw = await FrameworkLab.start(lab.temporal)          # one worker process per framework, with the fault lab
    await fw.ask("openai-agents", "What is 25 + 17?")    # a turn: one workflow run
    print(await fw.crash_mid_turn("pydantic-ai"))        # SIGKILL while the tool runs, restart, same answer
    await fw.stop()

Each framework's workflow runs on its own task queue (named after the framework) in its own worker process,
started with the course's fault lab plugin (`durable_course.faults`): the plugin logs every activity
execution, whatever framework scheduled it, and holds a chosen activity so the kill lands inside it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from durable_agent.server import Temporal
from durable_agent.worker import WorkerProcess
from durable_course.faults import HANG, PLUGIN, ActivityRun, Faults, activity_runs

from .worker import FRAMEWORKS, start_worker_process

# What each framework names its activities (the course agent's are plan_next_action and execute_tool).
MODEL_ACTIVITY = {"openai-agents": "invoke_model_activity", "pydantic-ai": "agent__course_agent__model_request"}
TOOL_ACTIVITY = {"openai-agents": "calculator", "pydantic-ai": "agent__course_agent__toolset__<agent>__call_tool"}
# A framework's worker is ready once its imports are done (the framework, LiteLLM): seconds on a quiet machine,
# a minute when several notebooks share two cores.
READY_TIMEOUT = 120.0

# Started by name from this process, which need not import the frameworks (seconds each) to do it.
WORKFLOW_TYPES = {"openai-agents": "OpenAIAgentsWorkflow", "pydantic-ai": "PydanticAIAgentWorkflow"}
ACTIVITY_TYPES = (*MODEL_ACTIVITY.values(), *TOOL_ACTIVITY.values(), "weather")


@dataclass
class FrameworkCrash:
    """What a SIGKILL mid-turn did to a framework's agent, from the execution log and the event history."""

    framework: str
    workflow_id: str
    during: str  # the activity type the kill interrupted
    answer: str
    killed_pid: int
    new_pid: int
    runs: list[ActivityRun]
    completed_before_kill: list[str]  # activity ids whose attempt finished on the killed worker
    rerun_completed: list[str]  # ...and that ran again anyway: must stay empty
    kill_to_answer: float

    @property
    def interrupted(self) -> ActivityRun | None:
        return next((r for r in self.runs if r.activity_id not in self.completed_before_kill and r.starts > 1), None)

    def __str__(self) -> str:
        notes = {i: "   <- completed before the kill: not run again" for i in self.completed_before_kill}
        if self.interrupted:
            notes[self.interrupted.activity_id] = "   <- interrupted by the kill, run again"
        return "\n".join([
            f"{self.framework}: SIGKILL to worker pid {self.killed_pid} during {self.during}; "
            f"restarted as pid {self.new_pid}.",
            f"Answer (the same workflow run, never started again): {self.answer}",
            f"Measured on this machine: kill -> answer {self.kill_to_answer:.1f} s",
            "Activities (executions counted by the fault lab's log, outcome from the event history):",
            *(r.line(notes.get(r.activity_id, "")) for r in self.runs),
            f"Completed activities executed twice: {', '.join(self.rerun_completed) or 'none'}",
        ])


@dataclass
class FrameworkLab:
    temporal: Temporal
    faults: Faults
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    turns: int = 0

    @classmethod
    async def start(cls, temporal: Temporal, frameworks: tuple[str, ...] = tuple(FRAMEWORKS)) -> "FrameworkLab":
        """Start a worker process for each framework (in parallel: each takes seconds to import)."""
        lab = cls(temporal, Faults.create(activate=False, activity_types=ACTIVITY_TYPES))
        try:
            await asyncio.gather(*(lab.start_worker(name) for name in frameworks))
            lab.workers = {name: lab.workers[name] for name in frameworks}  # in the order asked, not of readiness
        except BaseException:
            await lab.stop()
            raise
        return lab

    async def start_worker(self, name: str) -> WorkerProcess:
        self.workers[name] = await start_worker_process(name, self.temporal.address, task_queue=name,
                                                        plugins=[PLUGIN], env={"DURABLE_AGENT_FAULTS": str(self.faults.path)},
                                                        ready_timeout=READY_TIMEOUT)
        return self.workers[name]

    def _workflow_id(self, name: str) -> str:
        self.turns += 1
        return f"{name}-turn-{self.turns}"

    async def start_turn(self, name: str, question: str) -> Any:
        """Start one turn of a framework's agent: its workflow, by name, on its task queue. Returns the handle."""
        if name not in WORKFLOW_TYPES:
            raise ValueError(f"unknown framework {name!r}; choose one of {', '.join(WORKFLOW_TYPES)}")
        return await self.temporal.client.start_workflow(WORKFLOW_TYPES[name], question, id=self._workflow_id(name),
                                                         task_queue=name)

    async def ask(self, name: str, question: str, timeout: float = 60.0) -> Any:
        """One turn: print the exchange; return the workflow handle (for its history)."""
        handle = await self.start_turn(name, question)
        answer = await asyncio.wait_for(handle.result(), timeout)
        print(f"You:   {question}\n{name}: {answer}")
        return handle

    async def crash_mid_turn(self, name: str, during: str = "tool", question: str = "What is 25 + 17?",
                             timeout: float = 60.0) -> FrameworkCrash:
        """SIGKILL the framework's worker process while an activity runs, start a new one, and wait for the
        same workflow's answer (several frameworks may crash at once: `asyncio.gather`). `during`: "tool" (after the first model call completed) or "model" (the
        second model call, after the tool completed)."""
        if during not in ("tool", "model"):
            raise ValueError(f"during must be 'tool' or 'model', not {during!r}")
        activity_type = (TOOL_ACTIVITY if during == "tool" else MODEL_ACTIVITY)[name]
        # One hang, for this framework's activity type only: the two frameworks can crash at the same time.
        self.faults.hang(activity_type, skip=1 if during == "model" else 0)
        victim = self.workers.get(name)
        if victim is None or not victim.alive:
            victim = await self.start_worker(name)
        handle = await self.start_turn(name, question)
        await self.faults.wait_for(lambda ex: any(e.fault == HANG and e.workflow_id == handle.id for e in ex), timeout)
        hung = next(e for e in self.faults.executions(handle.id) if e.fault == HANG)
        if hung.pid != victim.pid:
            raise RuntimeError(f"{activity_type} hangs in process {hung.pid}, not in the lab's worker {victim.pid}")
        victim.kill()  # SIGKILL, by process id
        killed_at = time.monotonic()
        new = await self.start_worker(name)
        answer = await asyncio.wait_for(handle.result(), timeout)
        kill_to_answer = time.monotonic() - killed_at
        executions = self.faults.executions(handle.id)
        runs = activity_runs(await handle.fetch_history(), executions)
        done_before = sorted({e.activity_id for e in executions if e.event == "done" and e.pid == victim.pid}, key=int)
        return FrameworkCrash(name, handle.id, activity_type, answer, victim.pid, new.pid, runs, done_before,
                              [r.activity_id for r in runs if r.activity_id in done_before and r.starts > 1],
                              kill_to_answer)

    async def stop(self) -> None:
        """Stop every worker process and delete the fault directory. Idempotent."""
        workers, self.workers = list(self.workers.values()), {}
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        self.faults.remove()
