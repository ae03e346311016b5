"""Several agents: a triage agent and specialist agents, each specialist a child workflow.

Primitive 1 (deterministic orchestrator) and 3 (event-sourced state): a child workflow is a workflow started by
another. It has its own event history (its own model calls and tool calls, retried on their own), the parent's
history records only that the child started and how it ended, and the Temporal UI shows them as a tree. A
crashed worker resumes both; cancelling a child is an event the parent sees and answers.

`TriageWorkflow` is the agent with the specialists for tools (`model_tools()`, `run_tool`):
- as **tools**: `ask_math_specialist(question)` / `ask_weather_specialist(question)` start a
  `SpecialistWorkflow` child with the conversation so far and the question; its answer is the tool's result,
  which the triage model then uses in its own reply;
- by **handoff**: `transfer_to_specialist(specialist)` hands the conversation over. From the next message on,
  `before_turn` sends each message straight to that specialist (a child per message, with the whole
  conversation), and its answer is the reply, until the user says "back to triage".

`SpecialistWorkflow` is the agent loop (the same `send_message` as a chat) run once on a handed-over
conversation, allowed only the tools of its speciality (`SPECIALISTS`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from .activities import AgentActivities, ChatMessage, ToolCall, ToolInput, ToolResult, ToolSpec
    from .config import settings

from .workflow import TOOL_ACTIVITY, AgentReply, ChatInput, DurableAgentWorkflow, Transcript, UserMessage

# A specialist's name -> the built-in tools it may use.
SPECIALISTS: dict[str, list[str]] = {"math": ["calculator"], "weather": ["weather"]}
HANDOFF_TOOL = "transfer_to_specialist"
BACK_TO_TRIAGE = re.compile(r"\bback to (?:the )?triage\b", re.I)
# A specialist answers within this time, or the parent gives up on it (the child is then cancelled).
SPECIALIST_TIMEOUT = timedelta(minutes=5)

# What the offline model matches instead of reading each tool's description (a real model reads those).
_TRIGGERS = {
    "math": r"(?P<question>[^.?!]*\d\s*(?:[-+*/×÷^%]|plus|minus|times|divided by)\s*\(*\s*\d[^.?!]*)",
    "weather": r"(?P<question>[^.?!]*\b(?:weather|forecast|temperature)\b(?!\s+specialist)[^.?!]*)",
}


@dataclass
class SpecialistInput:
    specialist: str  # a key of SPECIALISTS
    question: str
    conversation: list[ChatMessage] = field(default_factory=list)  # what was said before, handed over


@dataclass
class SpecialistReply:
    specialist: str
    text: str
    tools_used: list[str] = field(default_factory=list)
    error: str | None = None


@workflow.defn
class SpecialistWorkflow(DurableAgentWorkflow):
    """One specialist answering one question: the agent loop, with only its speciality's tools."""

    @workflow.init
    def __init__(self, input: SpecialistInput) -> None:
        super().__init__(ChatInput(history=list(input.conversation)))
        self._specialist = input.specialist

    @workflow.run
    async def run(self, input: SpecialistInput) -> SpecialistReply:
        if input.specialist not in SPECIALISTS:
            raise ApplicationError(f"there is no {input.specialist!r} specialist (there are: "
                                   f"{', '.join(SPECIALISTS)})", type="UnknownSpecialist", non_retryable=True)
        reply = await self.send_message(UserMessage(input.question))  # the same turn a chat message gets
        return SpecialistReply(input.specialist, reply.text, reply.tools_used, reply.error)

    async def run_tool(self, call: ToolCall) -> ToolResult:
        if call.name not in SPECIALISTS[self._specialist]:
            return ToolResult(call.id, call.name, f"Error: the {self._specialist} specialist has no {call.name} "
                                                  "tool", ok=False)
        try:
            return await workflow.execute_activity_method(AgentActivities.execute_tool, ToolInput(call),
                                                          **TOOL_ACTIVITY)
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise  # the specialist was cancelled (by its parent, or an operator): stop here, cancelled
            return ToolResult(call.id, call.name, f"Error: {err.cause.message if err.cause else err}", ok=False)


@dataclass
class TriageInput:
    chat: ChatInput | None = None  # the conversation so far, when a long chat continues as new
    active: str | None = None  # the specialist the conversation is handed over to, if any


@workflow.defn
class TriageWorkflow(DurableAgentWorkflow):
    """A chat whose agent answers through specialists: as tools, or by handing the conversation over."""

    builtin_tools = False  # its tools are the specialists; they have the calculator and the weather

    @workflow.init
    def __init__(self, input: TriageInput) -> None:
        super().__init__(input.chat or ChatInput())
        self._input = input
        self._active = input.active
        self._children = 0

    @workflow.run
    async def run(self, input: TriageInput) -> Transcript:
        return await super().run(input.chat or ChatInput())

    def next_run_input(self, carried: ChatInput) -> TriageInput:
        return dataclasses.replace(self._input, chat=carried, active=self._active)

    @workflow.query
    def active_specialist(self) -> str | None:
        return self._active

    def model_tools(self) -> list[ToolSpec]:
        tools = [ToolSpec(f"ask_{name}_specialist", f"Ask the {name} specialist agent a question about {name}.",
                          {"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"]},
                          _TRIGGERS[name]) for name in SPECIALISTS]
        tools.append(ToolSpec(HANDOFF_TOOL, "Hand the conversation over to a specialist agent, who answers the "
                              "user from then on.",
                              {"type": "object", "properties": {"specialist": {"type": "string", "enum": list(SPECIALISTS)}},
                               "required": ["specialist"]},
                              rf"\b(?:transfer|hand) me (?:over )?to the (?P<specialist>{'|'.join(SPECIALISTS)}) specialist"))
        return tools

    async def before_turn(self, text: str) -> AgentReply | None:
        if self._active is None:
            return None
        if BACK_TO_TRIAGE.search(text):
            self._active = None
            return AgentReply("You are back with the triage agent.")
        answer = await self.ask_specialist(self._active, text, self.messages)
        return AgentReply(f"[{answer.specialist} specialist] {answer.text}", answer.tools_used, error=answer.error)

    async def run_tool(self, call: ToolCall) -> ToolResult:
        if call.name == HANDOFF_TOOL:
            name = str(call.arguments.get("specialist", ""))
            if name not in SPECIALISTS:
                return ToolResult(call.id, call.name, f"Error: no {name!r} specialist", ok=False)
            self._active = name
            return ToolResult(call.id, call.name, f"you are now talking to the {name} specialist")
        found = re.fullmatch(r"ask_(\w+)_specialist", call.name)
        if found and found[1] in SPECIALISTS:
            question = str(call.arguments.get("question", ""))
            answer = await self.ask_specialist(found[1], question, self.messages[:-1])
            return ToolResult(call.id, call.name, answer.text, ok=answer.error is None)
        return await super().run_tool(call)

    async def ask_specialist(self, name: str, question: str, conversation: list[ChatMessage]) -> SpecialistReply:
        """Run the specialist as a child workflow and wait for its answer. A child that fails, times out or is
        cancelled is an answer too: the reason, for the model (or the user) to read."""
        self._children += 1
        child_id = f"{workflow.info().workflow_id}-{name}-{self._children}"  # a run's ids: unique, replayable
        self.show_status("asking_specialist", name)
        try:
            return await workflow.execute_child_workflow(
                SpecialistWorkflow.run, SpecialistInput(name, question, _plain(conversation)), id=child_id,
                execution_timeout=SPECIALIST_TIMEOUT)
        except ChildWorkflowError as err:
            why = _child_failure(err)
            return SpecialistReply(name, f"Error: the {name} specialist ({child_id}) {why}", error=why)


def _plain(conversation: list[ChatMessage]) -> list[ChatMessage]:
    """What a specialist is handed: what the user and the agent said (tool calls and results stay behind)."""
    return [m for m in conversation if m.role == "user" or (m.role == "assistant" and not m.tool_calls)]


def _child_failure(err: ChildWorkflowError) -> str:
    cause = err.cause
    if isinstance(cause, CancelledError):
        return "was cancelled"
    if isinstance(cause, ApplicationError):
        return f"failed: {cause.message}"
    if isinstance(cause, ActivityError):
        return f"failed: {cause}"
    return f"ended without an answer: {cause or err}"


def agents_plugin():  # noqa: ANN201 (a temporalio SimplePlugin)
    """A Temporal worker plugin that adds the triage and specialist workflows to a worker.
    For a worker process: "durable_agent.agents:agents_plugin"."""
    from temporalio.plugin import SimplePlugin

    return SimplePlugin("durable-agent.agents", workflows=[TriageWorkflow, SpecialistWorkflow])


PLUGIN = "durable_agent.agents:agents_plugin"


async def start_triage_chat(client, *, workflow_id: str | None = None, task_queue: str | None = None):  # noqa: ANN001, ANN201
    """Start a chat with the triage agent (the worker needs `agents_plugin()`); returns a ChatSession."""
    from .session import ChatSession, new_chat_id

    handle = await client.start_workflow(TriageWorkflow.run, TriageInput(), id=workflow_id or new_chat_id(),
                                         task_queue=task_queue or settings().task_queue)
    return ChatSession(handle)
