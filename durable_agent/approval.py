"""A tool that waits for a human's approval: the workflow pauses, durably, until a person says yes or no.

Primitive 1 (deterministic orchestrator): waiting costs a workflow nothing. `workflow.wait_condition` with
a timeout is a durable timer kept by the server: the worker may crash and restart, or the person may answer
hours later, and the agent goes on from where it was. The question and the answer are events in the
history (primitive 3), so who approved what stays on record.

`ApprovalChatWorkflow` is `DurableAgentWorkflow` with one step wrapped: before a tool named in
`ApprovalChatInput.needs_approval` runs, the workflow publishes an `ApprovalRequest` (query
`pending_approval`) and waits for the `decide` message. Approved: the tool runs as usual. Rejected, or no
answer within `approval_timeout_seconds`: the tool does not run and the model is told why, so it can tell
the user. `decide` is an Update, a signal with a validator and a result: a decision for a call that is not
waiting is refused with a clear error instead of being dropped in silence.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from .activities import ToolCall, ToolResult
    from .config import settings
    from .session import ChatError, ChatSession, new_chat_id

from .workflow import DEFAULT_MAX_STEPS, ChatInput, DurableAgentWorkflow, Transcript


@dataclass
class ApprovalChatInput:
    needs_approval: list[str] = field(default_factory=lambda: ["weather"])  # tool names
    approval_timeout_seconds: float = 600.0
    max_steps_per_turn: int = DEFAULT_MAX_STEPS
    chat: ChatInput | None = None  # the conversation so far, when a long chat continues as new


@dataclass
class ApprovalRequest:
    call_id: str
    tool: str
    arguments: dict[str, Any]

    def describe(self) -> str:
        return f"{self.tool}({', '.join(f'{k}={v!r}' for k, v in self.arguments.items())})"


@dataclass
class ApprovalDecision:
    call_id: str
    approved: bool
    reason: str = ""


@workflow.defn
class ApprovalChatWorkflow(DurableAgentWorkflow):
    @workflow.init
    def __init__(self, input: ApprovalChatInput) -> None:
        super().__init__(input.chat or ChatInput(input.max_steps_per_turn))
        self._input = input
        self._needs_approval = set(input.needs_approval)
        self._approval_timeout = timedelta(seconds=input.approval_timeout_seconds)
        self._pending: ApprovalRequest | None = None
        self._decision: ApprovalDecision | None = None

    @workflow.run
    async def run(self, input: ApprovalChatInput) -> Transcript:
        return await super().run(input.chat or ChatInput(input.max_steps_per_turn))

    def next_run_input(self, carried: ChatInput) -> ApprovalChatInput:
        return dataclasses.replace(self._input, chat=carried)

    @workflow.update
    def decide(self, decision: ApprovalDecision) -> str:
        self._decision = decision
        return f"{'approved' if decision.approved else 'rejected'}: {self._pending.describe()}"

    @decide.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        if self._pending is None:
            raise ValueError("no tool call is waiting for approval")
        if decision.call_id != self._pending.call_id:
            raise ValueError(f"call {decision.call_id!r} is not waiting for approval; "
                             f"{self._pending.call_id!r} ({self._pending.describe()}) is")
        if self._decision is not None:
            raise ValueError(f"call {decision.call_id!r} has already been decided")

    @workflow.query
    def pending_approval(self) -> ApprovalRequest | None:
        return self._pending

    async def run_tool(self, call: ToolCall) -> ToolResult:
        if call.name not in self._needs_approval:
            return await super().run_tool(call)
        self._pending = ApprovalRequest(call.id, call.name, dict(call.arguments))
        self._decision = None
        self.show_status("awaiting_approval", call.name)
        try:
            await workflow.wait_condition(lambda: self._decision is not None or self.ended,
                                          timeout=self._approval_timeout)
            decision = self._decision or ApprovalDecision(call.id, False, "the chat was ended")
        except asyncio.TimeoutError:
            seconds = self._approval_timeout.total_seconds()
            decision = ApprovalDecision(call.id, False, f"nobody answered within {seconds:g} seconds")
        finally:
            self._pending = None
        if not decision.approved:
            why = f": {decision.reason}" if decision.reason else ""
            return ToolResult(call.id, call.name, f"Error: the user did not approve this call{why}", ok=False)
        self.show_status("running_tool", call.name)
        return await super().run_tool(call)


@dataclass
class ApprovalSession(ChatSession):
    """A `ChatSession` that can also see and answer the approval requests."""

    async def pending(self) -> ApprovalRequest | None:
        return await self.handle.query(ApprovalChatWorkflow.pending_approval)

    async def wait_for_request(self, timeout: float = 30.0) -> ApprovalRequest:
        """Wait until the agent asks for an approval, and return the request."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (request := await self.pending()) is None:
            if loop.time() > deadline:
                raise ChatError(f"the agent asked for no approval within {timeout:g} seconds")
            await asyncio.sleep(0.1)
        return request

    async def decide(self, approved: bool, reason: str = "", call_id: str | None = None) -> str:
        """Approve or reject the waiting call (or the call `call_id`); a clear ChatError if it is not waiting."""
        if call_id is None:
            request = await self.pending()
            if request is None:
                raise ChatError("no tool call is waiting for approval")
            call_id = request.call_id
        try:
            return await self.handle.execute_update(ApprovalChatWorkflow.decide,
                                                    ApprovalDecision(call_id, approved, reason))
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            raise ChatError(cause.message if isinstance(cause, ApplicationError) else str(cause)) from None

    async def approve(self, call_id: str | None = None) -> str:
        return await self.decide(True, call_id=call_id)

    async def reject(self, reason: str = "", call_id: str | None = None) -> str:
        return await self.decide(False, reason, call_id)


async def start_approval_chat(client: Client, workflow_id: str | None = None, *, task_queue: str | None = None,
                              input: ApprovalChatInput | None = None) -> ApprovalSession:
    """Start a chat whose listed tools need approval (the worker must register `ApprovalChatWorkflow`)."""
    input = input or ApprovalChatInput()
    if input.approval_timeout_seconds <= 0:
        raise ValueError(f"approval_timeout_seconds must be positive, not {input.approval_timeout_seconds}")
    handle = await client.start_workflow(ApprovalChatWorkflow.run, input, id=workflow_id or new_chat_id(),
                                         task_queue=task_queue or settings().task_queue)
    return ApprovalSession(handle)
