"""The client side of a chat: start a chat workflow, send messages, read its state.

A message is a Temporal Update: the client waits for the agent's reply, which may involve several
activities, and the server keeps the Update even if every worker dies meanwhile. Errors come back as a
`ChatError` with a sentence a learner can read, never a bare gRPC traceback.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from temporalio.client import (
    Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from .activities import ChatMessage
from .config import settings
from .workflow import (
    AgentReply, ChatInput, ChatStatus, DurableAgentWorkflow, Transcript, UserMessage, message_problem,
)


class ChatError(Exception):
    """A message could not be answered; `str(err)` says why in plain words."""


def new_chat_id() -> str:
    return f"chat-{uuid.uuid4().hex[:8]}"


@dataclass
class ChatSession:
    handle: WorkflowHandle

    @property
    def workflow_id(self) -> str:
        return self.handle.id

    async def send(self, text: str) -> AgentReply:
        """Send one message and wait for the agent's reply."""
        problem = message_problem(text)
        if problem:
            raise ChatError(problem)
        try:
            return await self.handle.execute_update(DurableAgentWorkflow.send_message, UserMessage(text))
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            raise ChatError(cause.message if isinstance(cause, ApplicationError) else str(cause)) from None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise ChatError("no reply yet: is a worker running? The message is kept by Temporal and will "
                            "be answered when a worker is back") from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise ChatError("the chat has ended (or does not exist); start a new chat") from None
            raise ChatError(f"the Temporal server did not accept the message: {err.message}") from None

    async def history(self) -> list[ChatMessage]:
        return await self.handle.query(DurableAgentWorkflow.history)

    async def status(self) -> ChatStatus:
        try:
            return await self.handle.query(DurableAgentWorkflow.status)
        except RPCError:
            description = await self.handle.describe()
            if description.status != WorkflowExecutionStatus.RUNNING:
                return ChatStatus("ended")
            raise

    async def end(self) -> Transcript:
        """End the chat (if it is still running) and return its transcript."""
        description = await self.handle.describe()
        if description.status == WorkflowExecutionStatus.RUNNING:
            await self.handle.signal(DurableAgentWorkflow.end_chat)
        return await self.handle.result()


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
