"""The client side of a chat: start a chat workflow, send messages, read its state.

A message is a Temporal Update: the client waits for the agent's reply, which may involve several
activities, and the server keeps the Update even if every worker dies meanwhile. Errors come back as a
`ChatError` with a sentence a learner can read, never a bare gRPC traceback.

Sending is idempotent. Each message gets an id, used as the Update's id, and Temporal runs an Update id
once: when the server is unreachable, `send` retries with the same id until it is back (for up to
`patience` seconds); if it gives up, it says so, and sending the same text again reuses that id, so a
message the server had in fact accepted is answered once, never twice.

Why a turn takes long is read from the server, not guessed: `pending_activities()` lists what the turn waits
on, each activity with its attempt and the last attempt's error; `waiting_for_a_worker()` says how long the
next step has waited for a worker to take it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable

from temporalio.client import (
    Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError, WorkflowUpdateStage,
)
from temporalio.api.enums.v1 import PendingActivityState, PendingWorkflowTaskState
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from .activities import ChatMessage
from .config import redact_secrets, settings
from .workflow import (
    AgentReply, ChatInput, ChatStatus, DurableAgentWorkflow, Transcript, UserMessage, message_problem,
)


class ChatError(Exception):
    """A message could not be answered; `str(err)` says why in plain words."""


class MessageNotConfirmed(ChatError):
    """The server could not be reached in time: the message may have been accepted. Sending the same text
    again (or passing `message_id`) reuses its id, so it is answered at most once."""

    def __init__(self, text: str, message_id: str) -> None:
        super().__init__(text)
        self.message_id = message_id


# gRPC statuses that mean "not now" (the server is restarting, unreachable, overloaded), not "no".
TRANSIENT = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED,
             RPCStatusCode.ABORTED, RPCStatusCode.UNKNOWN, RPCStatusCode.CANCELLED}
PATIENCE_SECONDS = 30.0


@dataclass
class PendingActivity:
    """An activity of the chat that the server has scheduled and not yet seen complete: what a turn waits on.
    Read from the server (`describe()`), so it is true whichever worker runs it, or if none does."""

    activity_type: str        # "plan_next_action", "execute_tool"
    attempt: int              # the attempt running now, or the next one while Temporal waits to retry
    state: str                # "scheduled" (waiting for a worker or a retry), "started" (a worker runs it), ...
    last_error: str = ""      # why the previous attempt failed ("" if none did): "TypeName: message"
    last_error_detail: str = ""  # that failure's stack trace as the worker reported it (secrets redacted)
    since_scheduled: float = 0.0  # seconds since the server first scheduled it (its time, our clock)

    @property
    def failed_attempts(self) -> int:
        return self.attempt - 1 if self.last_error else 0


def _failure_text(failure: Any) -> str:
    kind = failure.application_failure_info.type if failure.HasField("application_failure_info") else ""
    if not kind and failure.HasField("timeout_failure_info"):
        kind = "Timeout"
    message = failure.message.strip().splitlines()[0] if failure.message.strip() else ""
    return redact_secrets(f"{kind}: {message}" if kind and message else kind or message)


def _unreachable(why: str, accepted: bool) -> str:
    if accepted:
        return (f"the Temporal server is unreachable ({why}); your message was accepted before that and will be "
                "answered once the server is back. Send it again then to get the reply: it will not run twice")
    return (f"the Temporal server is unreachable ({why}); your message may have been accepted. Send it again "
            "when the server is back: it will not run twice")


def new_chat_id() -> str:
    return f"chat-{uuid.uuid4().hex[:8]}"


def new_message_id() -> str:
    return f"msg-{uuid.uuid4().hex}"


@dataclass
class ChatSession:
    handle: WorkflowHandle
    patience: float = PATIENCE_SECONDS  # how long `send` keeps retrying through an outage
    unconfirmed: tuple[str, str] | None = field(default=None, repr=False)  # (text, id) of a message in doubt

    @property
    def workflow_id(self) -> str:
        return self.handle.id

    async def send(self, text: str, *, message_id: str | None = None) -> AgentReply:
        """Send one message and wait for the agent's reply. Retries through a server outage with the same
        message id; a resend of a message in doubt reuses its id (see the module's docstring)."""
        problem = message_problem(text)
        if problem:
            raise ChatError(problem)
        if message_id is None:
            resend = self.unconfirmed is not None and self.unconfirmed[0] == text
            message_id = self.unconfirmed[1] if resend else new_message_id()  # type: ignore[index]
        self.unconfirmed = (text, message_id)
        deadline = time.monotonic() + self.patience
        delay = 0.2
        accepted = False  # the workflow has taken the message: it is in the event history
        while True:
            try:
                # First until the workflow has accepted the message (it is then in the event history) ...
                update = await self.handle.start_update(
                    DurableAgentWorkflow.send_message, UserMessage(text), id=message_id,
                    wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                    rpc_timeout=timedelta(seconds=max(1.0, deadline - time.monotonic())))
                accepted = True
                deadline = time.monotonic() + self.patience  # accepted: patience counts again for an outage
                # ... then for as long as the turn takes (a real model, a human's approval: minutes).
                reply = await update.result()
                self.unconfirmed = None
                return reply
            except WorkflowUpdateFailedError as err:  # the workflow answered: it refused this message
                self.unconfirmed = None
                cause = err.cause
                raise ChatError(cause.message if isinstance(cause, ApplicationError) else str(cause)) from None
            except WorkflowUpdateRPCTimeoutOrCancelledError as err:
                if isinstance(err.__cause__, asyncio.CancelledError):
                    raise err.__cause__  # the caller cancelled: stop, do not retry
                # Timed out: either the server is down, or it is up and no worker has taken the message.
                waiting = (_unreachable("it did not answer in time", accepted)
                           if accepted or not await self._server_answers() else
                           "no worker has taken the message yet: is a worker running? The message is kept by "
                           "Temporal and will be answered once a worker is back; if you send it again, it will "
                           "not run twice")
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    self.unconfirmed = None
                    raise ChatError("the chat has ended (or does not exist); start a new chat") from None
                if err.status not in TRANSIENT:
                    self.unconfirmed = None
                    raise ChatError(f"the Temporal server refused the message: {err.message}") from None
                waiting = _unreachable(err.message, accepted)
            if time.monotonic() + delay > deadline:
                raise MessageNotConfirmed(waiting, message_id)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _server_answers(self) -> bool:
        try:
            await self.handle.describe(rpc_timeout=timedelta(seconds=1))
        except RPCError as err:
            return err.status not in TRANSIENT
        return True

    async def pending_activities(self) -> list[PendingActivity]:
        """The activities the chat's current run waits on, with each one's attempt and last error: why a turn
        takes long (an activity failing and being retried, or no worker taking it). Empty between turns."""
        description = await self._read("state", self.handle.describe())
        found = []
        for pending in description.raw_description.pending_activities:
            state = PendingActivityState.Name(pending.state).removeprefix("PENDING_ACTIVITY_STATE_")
            failure = pending.last_failure if pending.HasField("last_failure") else None
            scheduled = pending.scheduled_time.ToDatetime(tzinfo=timezone.utc) if pending.HasField(
                "scheduled_time") else None
            since = (datetime.now(timezone.utc) - scheduled).total_seconds() if scheduled else 0.0
            found.append(PendingActivity(
                pending.activity_type.name, pending.attempt, state.lower().replace("_", " "),
                _failure_text(failure) if failure is not None else "",
                redact_secrets(failure.stack_trace) if failure is not None else "", max(0.0, since)))
        return found

    async def waiting_for_a_worker(self) -> float:
        """How long (seconds) the chat's next step has waited for a worker to take it: its pending workflow task
        was scheduled and no worker has started it. 0 when none waits (a worker is on it, or nothing is due)."""
        description = await self._read("state", self.handle.describe())
        raw = description.raw_description
        task = raw.pending_workflow_task if raw.HasField("pending_workflow_task") else None
        if task is None or task.state != PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED:
            return 0.0
        scheduled = task.scheduled_time.ToDatetime(tzinfo=timezone.utc)
        return max(0.0, (datetime.now(timezone.utc) - scheduled).total_seconds())

    async def history(self) -> list[ChatMessage]:
        return await self._read("history", self.handle.query(DurableAgentWorkflow.history))

    async def status(self) -> ChatStatus:
        try:
            return await self.handle.query(DurableAgentWorkflow.status)
        except RPCError as err:
            if err.status in TRANSIENT:
                raise ChatError(f"the Temporal server is unreachable ({err.message})") from None
            description = await self._read("status", self.handle.describe())
            if description.status != WorkflowExecutionStatus.RUNNING:
                return ChatStatus("ended")
            raise ChatError(f"could not read the chat's status: {err.message}") from None

    async def end(self) -> Transcript:
        """End the chat (if it is still running) and return its transcript."""
        description = await self._read("state", self.handle.describe())
        if description.status == WorkflowExecutionStatus.RUNNING:
            await self._read("state", self.handle.signal(DurableAgentWorkflow.end_chat))
        return await self._read("transcript", self.handle.result())

    async def _read(self, what: str, call: Awaitable[Any]) -> Any:
        """Await a call to the server; its errors become one clear `ChatError`."""
        try:
            return await call
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise ChatError(f"there is no chat {self.workflow_id} on this Temporal server") from None
            if err.status in TRANSIENT:
                raise ChatError(f"the Temporal server is unreachable ({err.message})") from None
            raise ChatError(f"could not read the chat's {what}: {err.message}") from None


async def start_chat(client: Client, workflow_id: str | None = None, *, task_queue: str | None = None,
                     input: ChatInput | None = None) -> ChatSession:
    """Start a new chat workflow (it runs until the chat ends) and return a session for it."""
    handle = await client.start_workflow(
        DurableAgentWorkflow.run,
        input or ChatInput(),
        id=workflow_id or new_chat_id(),
        task_queue=task_queue or settings().task_queue,
    )
    return ChatSession(handle)


def open_chat(client: Client, workflow_id: str) -> ChatSession:
    """A session for a chat that already exists (its state lives in Temporal, not here)."""
    return ChatSession(client.get_workflow_handle_for(DurableAgentWorkflow.run, workflow_id))


def format_transcript(messages: list[ChatMessage]) -> str:
    """The conversation as text: user and agent lines, with tool calls and results indented."""
    lines = []
    for m in messages:
        if m.role == "user":
            lines.append(f"You:   {m.content}")
        elif m.role == "assistant" and m.tool_calls:
            lines.extend(f"        -> {c.name}({', '.join(f'{k}={v!r}' for k, v in c.arguments.items())})"
                         for c in m.tool_calls)
        elif m.role == "assistant":
            lines.append(f"Agent: {m.content}")
        elif m.role == "tool":
            lines.append(f"        <- {m.content}")
    return "\n".join(lines)
