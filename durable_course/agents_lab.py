"""Breaking several agents on purpose (notebook 09): crash a specialist mid-turn, cancel a specialist.

    lab = AgentsLab(temporal)
    print(await lab.crash_specialist_mid_turn())   # SIGKILL the worker while a specialist's tool runs
    print(await lab.cancel_specialist())           # cancel the specialist child while it works
    await lab.close()

Both read what the *parent* (the triage agent) recorded in its own event history next to what the child
recorded in its, so the difference between the two histories is visible: a crash is invisible to the parent
(a longer wait), a cancellation is an event the parent receives and answers.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from durable_agent.agents import PLUGIN as AGENTS_PLUGIN
from durable_agent.agents import agents_plugin, start_triage_chat
from durable_agent.logs import silenced

from . import events
from . import faults as fault_lab
from .faults import HANG, HOLD, ActivityRun, ExperimentWorkers, Faults, activity_runs

if TYPE_CHECKING:
    from durable_agent.server import Temporal
    from durable_agent.session import ChatSession
    from durable_agent.worker import BackgroundWorker, WorkerProcess

CHILD_EVENTS = ("StartChildWorkflowExecutionInitiated", "ChildWorkflowExecutionStarted",
                "ChildWorkflowExecutionCompleted", "ChildWorkflowExecutionCanceled", "ChildWorkflowExecutionFailed")


@dataclass
class SpecialistReport:
    what: str
    reply: str
    parent_saw: list[str]  # the parent's child-workflow events, in order
    child_id: str
    child_runs: list[ActivityRun]  # the child's activities, with real executions counted
    child_outcome: str

    def __str__(self) -> str:
        return "\n".join([
            self.what,
            f"Agent (the same Update, never re-sent): {self.reply}",
            "What the parent (triage) recorded about its child:",
            *(f"  {kind}" for kind in self.parent_saw),
            f"The child {self.child_id} ({self.child_outcome}), from its own event history:",
            *(r.line() for r in self.child_runs),
        ])


@dataclass
class AgentsLab(ExperimentWorkers):
    PROCESS_PLUGINS = (AGENTS_PLUGIN,)

    temporal: Temporal
    task_queue: str = field(default_factory=lambda: f"agents-lab-{uuid.uuid4().hex[:6]}")
    faults: Faults = field(default=None)  # type: ignore[assignment]
    worker: WorkerProcess | None = None
    kernel_worker: BackgroundWorker | None = None

    def __post_init__(self) -> None:
        if self.faults is None:
            self.faults = Faults.create(tempfile.mkdtemp(prefix="agents-lab-"))

    def kernel_plugins(self) -> list[Any]:
        return [agents_plugin()]

    async def _child_in(self, kind: str, chat: ChatSession) -> fault_lab.Execution:
        prefix = f"{chat.workflow_id}-"
        await self.faults.wait_for(lambda ex: any(e.fault == kind and e.workflow_id.startswith(prefix) for e in ex))
        return next(e for e in self.faults.executions() if e.fault == kind and e.workflow_id.startswith(prefix))

    async def _report(self, what: str, chat: ChatSession, reply: Any, child_id: str) -> SpecialistReport:
        parent = events.read(await chat.handle.fetch_history())
        child_history = await self.temporal.client.get_workflow_handle(child_id).fetch_history()
        last = events.read(child_history)[-1].kind.removeprefix("WorkflowExecution").lower()
        return SpecialistReport(what, reply.text, [e.kind for e in parent if e.kind in CHILD_EVENTS], child_id,
                                activity_runs(child_history, self.faults.executions(child_id)), last)

    async def crash_specialist_mid_turn(self, question: str = "What is 25 + 17?") -> SpecialistReport:
        """SIGKILL the worker process while the math specialist's calculator call runs; start another."""
        self.faults.clear()
        self.faults.hang("execute_tool")  # only specialists run execute_tool: the triage's tools are agents
        victim = await self.a_worker_process()
        chat = await start_triage_chat(self.temporal.client, task_queue=self.task_queue)
        pending = asyncio.create_task(chat.send(question))
        hung = await self._child_in(HANG, chat)
        victim.kill()
        self.worker = None
        await self.start_worker_process()
        reply = await pending
        return await self._report("SIGKILL to the worker while the math specialist's calculator call ran; "
                                  "a new worker took over.", chat, reply, hung.workflow_id)

    async def cancel_specialist(self, question: str = "What's the weather in Paris?") -> SpecialistReport:
        """Cancel the specialist child (as an operator would, from the UI or the CLI) while its tool runs."""
        self.faults.clear()
        self.faults.hold("execute_tool")
        await self.some_worker()
        chat = await start_triage_chat(self.temporal.client, task_queue=self.task_queue)
        pending = asyncio.create_task(chat.send(question))
        held = await self._child_in(HOLD, chat)
        with silenced():  # the cancelled tool call is on purpose
            await self.temporal.client.get_workflow_handle(held.workflow_id).cancel()
            reply = await pending
        self.faults.release()
        return await self._report(f"Cancelled the specialist {held.workflow_id} while its weather call ran.",
                                  chat, reply, held.workflow_id)

    async def close(self) -> None:
        self.faults.release()
        self.faults.clear()
        await self._stop_workers()
