"""Notebook 10's lab: the framework agents in worker processes, a turn each, and a SIGKILL mid-turn.

    from durable_course.frameworks.lab import FrameworkLab
    fw = await FrameworkLab.start(lab.temporal)          # a worker process: a worker per framework, the fault lab
    await fw.ask("openai-agents", "What is 25 + 17?")    # a turn: one workflow run
    for crash in await fw.crash_mid_turn():              # SIGKILL while each one's tool runs, restart, same answers
        print(crash)
    await fw.stop()

Each framework's workflow runs on its own task queue (named after the framework); one worker process runs a
worker for each (LiteLLM and the rest imported once), with the course's fault lab plugin
(`durable_course.faults`): the plugin logs every activity execution, whatever framework scheduled it, and
holds a chosen activity so the kill lands inside it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from durable_agent.server import Temporal
from durable_agent.worker import WorkerProcess
from durable_course.faults import HANG, PLUGIN, ActivityRun, Faults, activity_runs, interrupted_run

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
        return interrupted_run(self.runs, self.completed_before_kill)

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
    frameworks: tuple[str, ...] = tuple(FRAMEWORKS)
    worker: WorkerProcess | None = None  # one process, a worker per framework in it
    turns: int = 0

    @classmethod
    async def start(cls, temporal: Temporal, frameworks: tuple[str, ...] = tuple(FRAMEWORKS)) -> "FrameworkLab":
        """Start the worker process: a worker for each framework, each on a task queue named after it."""
        lab = cls(temporal, Faults.create(activate=False, activity_types=ACTIVITY_TYPES), tuple(frameworks))
        try:
            await lab.start_worker()
        except BaseException:
            await lab.stop()
            raise
        return lab

    async def start_worker(self) -> WorkerProcess:
        self.worker = await start_worker_process(self.frameworks, self.temporal.address, plugins=[PLUGIN],
                                                 env={"DURABLE_AGENT_FAULTS": str(self.faults.path)},
                                                 ready_timeout=READY_TIMEOUT)
        return self.worker

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

    async def crash_mid_turn(self, during: str = "tool", question: str = "What is 25 + 17?",
                             timeout: float = 120.0) -> list[FrameworkCrash]:
        """A turn for every framework; SIGKILL the worker process while each one's activity runs (one kill
        for all), start a new process, and wait for the same workflows' answers. `during`: "tool" (after the
        first model call completed) or "model" (the second model call, after the tool completed)."""
        if during not in ("tool", "model"):
            raise ValueError(f"during must be 'tool' or 'model', not {during!r}")
        types = {name: (TOOL_ACTIVITY if during == "tool" else MODEL_ACTIVITY)[name] for name in self.frameworks}
        self.faults.clear()
        for activity_type in types.values():
            self.faults.hang(activity_type, skip=1 if during == "model" else 0)
        victim = self.worker if self.worker is not None and self.worker.alive else await self.start_worker()
        handles = {name: await self.start_turn(name, question) for name in self.frameworks}
        ids = {handle.id for handle in handles.values()}
        await self.faults.wait_for(lambda ex: {e.workflow_id for e in ex if e.fault == HANG} >= ids, timeout)
        hung = {e.pid for e in self.faults.executions() if e.fault == HANG and e.workflow_id in ids}
        if hung != {victim.pid}:
            raise RuntimeError(f"the activities hang in processes {sorted(hung)}, not in the lab's worker {victim.pid}")
        victim.kill()  # SIGKILL, by process id: every framework's worker in it dies mid-activity
        killed_at = time.monotonic()
        new = await self.start_worker()
        crashes = []
        for name, handle in handles.items():
            answer = await asyncio.wait_for(handle.result(), timeout)
            executions = self.faults.executions(handle.id)
            runs = activity_runs(await handle.fetch_history(), executions)
            done_before = sorted({e.activity_id for e in executions if e.event == "done" and e.pid == victim.pid},
                                 key=int)
            crashes.append(FrameworkCrash(name, handle.id, types[name], answer, victim.pid, new.pid, runs,
                                          done_before,
                                          [r.activity_id for r in runs if r.activity_id in done_before and r.starts > 1],
                                          time.monotonic() - killed_at))
        return crashes

    async def stop(self) -> None:
        """Stop the worker process and delete the fault directory. Idempotent."""
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.stop()
        self.faults.remove()
