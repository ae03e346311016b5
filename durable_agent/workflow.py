"""The agent loop as a Temporal workflow: a long-running chat session.

Primitive 1 (deterministic orchestrator): this code makes no I/O. It decides what happens next and asks
activities to do the work. Primitive 3 (event-sourced state): the conversation below is rebuilt by
replaying the event history, so a crashed worker loses nothing.

- `send_message` (an Update) takes the user's message and returns the agent's reply. The Update's id is
  the message's id: Temporal runs a message once however often it is sent (a resend after an outage gets
  the same reply), and the workflow remembers the ids of its last answers across runs too.
- `end_chat` (a signal) ends the session; the workflow then returns the transcript.
- `history` and `status` (queries) read the conversation and what the agent is doing now.

A chat has no length limit. The model sees a bounded context (`context.py`: a summary of the older turns
plus the newest messages), so each turn adds about the same to the event history; and when the history
of this run is long (`ChatInput.events_per_run`, or when Temporal suggests it), the workflow *continues as
new*: the run closes and a fresh one, with the same workflow id, carries on from the summary and the
newest messages. Clients, queries and the chat box follow the chat's id, so they never notice.

With `ChatInput(stream_replies=True)` the workflow also hosts a `WorkflowStream` (Temporal's durable stream,
`temporalio.contrib.workflow_streams`) and the model activity streams each reply's text into it as the model
writes it; the reply is still recorded once, as the activity's result (`streaming.py`).

Extension points: a subclass (decorated with `@workflow.defn`, its `run` calling `super().run`) changes the
agent by overriding these, and reads `turns`, `turns_this_run`, `messages` and `ended`; everything whose
name starts with `_` is private and may change:

- `async before_turn(text) -> AgentReply | None`: a step before the model is asked (run an activity, check
  the message). Return a reply to answer without the model; None goes on with the turn.
- `model_tools() -> list[ToolSpec]`: tools offered to the model besides the built-in ones (an MCP server's,
  another agent); `run_tool` runs them. Default: none. The class attribute `builtin_tools = False` offers
  only these (a triage agent whose tools are other agents).
- `async run_tool(call) -> ToolResult`: the tool step, one tool call (default: the `execute_tool` activity,
  a failure becoming an error result the model reads). `approval.py` asks a human first.
- `after_turn(text, reply) -> AgentReply`: the end-of-turn decision. Return the reply, changed if you like;
  with `reply.chat_ended = True` the chat ends after this turn.
- `run_is_full() -> bool`: when this run hands over to a fresh one (continue-as-new); checked between turns.
- `next_run_input(carried) -> object`: the next run's input; `carried` is what the default carries over.
- `show_status(state, tool=None)`: what the `status` query reports (the chat box shows it) until the turn ends.
- `end()`: end the chat once the current turn is answered (the `end_chat` signal calls it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from .activities import (
        MODEL_REPLY_ERROR, MODEL_REQUEST_ERROR, UNKNOWN_TOOL,
        AgentActivities, ChatMessage, Plan, PlanInput, ToolCall, ToolInput, ToolResult, ToolSpec,
    )
    from .context import model_context, summarize, summary_message, window

MAX_MESSAGE_CHARS = 4000
DEFAULT_MAX_STEPS = 6
CONTEXT_CHARS = 12_000  # the newest messages the model sees verbatim (older turns: one summary line each) ...
CONTEXT_TURNS = 10  # ... and at most this many turns of them
SUMMARY_CHARS = 1_500
EVENTS_PER_RUN = 2_000  # continue-as-new after this many events: a restarted worker replays at most this
REMEMBERED_ANSWERS = 20  # message ids (and replies) kept for resends, carried across runs

# The model call. start_to_close bounds one attempt (a real model can take tens of seconds); the heartbeat
# timeout notices a crashed worker within seconds, because the activity heartbeats while it waits. Retries
# back off 1 s, 2 s, 4 s ... up to 10 s between attempts; five attempts, then the turn reports the outage.
PLAN_ACTIVITY = dict(
    start_to_close_timeout=timedelta(seconds=90),
    heartbeat_timeout=timedelta(seconds=3),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=5,
        non_retryable_error_types=[MODEL_REPLY_ERROR, MODEL_REQUEST_ERROR, UNKNOWN_TOOL],
    ),
)

# A tool call. Tools are quick, so a short start_to_close: a tool that hangs is given up after 5 s (its
# attempt is cancelled and retried; the worker goes on serving everything else, since tools run in a
# thread). The heartbeat timeout notices a crashed worker sooner than that. A tool that raises has a bug:
# it is retried (up to 5 s apart) for up to ten minutes, long enough to fix the code and restart the
# worker while the chat waits.
TOOL_ACTIVITY = dict(
    start_to_close_timeout=timedelta(seconds=5),
    heartbeat_timeout=timedelta(seconds=2),
    schedule_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=5),
        non_retryable_error_types=[UNKNOWN_TOOL],
    ),
)


def message_problem(text: str) -> str | None:
    """Why a user message cannot be accepted, or None. Used by the Update's validator, and by the client
    before sending, so a huge message never has to travel to the server to be refused."""
    if not text.strip():
        return "the message is empty"
    if len(text) > MAX_MESSAGE_CHARS:
        return f"the message is {len(text)} characters long; the limit is {MAX_MESSAGE_CHARS}"
    return None


# The model call as a *local activity* instead (ChatInput.model_call = "local_activity"): an option measured
# side by side by `durable-agent bench`, not the default. It runs inside the workflow task, in the worker
# that runs the workflow, so it saves the server round trips of an activity (roughly 40% of a one-tool
# turn's overhead on a 2-core machine). What it gives up: the server knows nothing of the call until the
# workflow task completes, so a worker crash mid-call re-runs it from scratch (a real model is paid twice,
# and may answer differently); there is no heartbeat, so a hung call is noticed only by its start_to_close
# timeout; it cannot go to another worker or task queue; and the Web UI shows a marker, not an activity.
PLAN_LOCAL_ACTIVITY = {k: v for k, v in PLAN_ACTIVITY.items() if k != "heartbeat_timeout"}
MODEL_CALLS = ("activity", "local_activity")


@dataclass
class AgentReply:
    text: str
    tools_used: list[str] = field(default_factory=list)
    steps: int = 0
    chat_ended: bool = False
    error: str | None = None  # set when the turn ended on an error instead of an answer


@dataclass
class Answered:
    """A message already answered: its id (the Update id) and the reply, so a resend gets the same reply."""

    message_id: str
    reply: AgentReply


@dataclass
class ChatInput:
    max_steps_per_turn: int = DEFAULT_MAX_STEPS
    history: list[ChatMessage] = field(default_factory=list)  # the newest messages, to resume a conversation
    model_call: str = "activity"  # or "local_activity": faster, less durable (see PLAN_LOCAL_ACTIVITY)
    summary: str = ""  # the older turns, one line each (carried from the previous run)
    earlier_turns: int = 0  # turns answered in the previous runs
    context_chars: int = CONTEXT_CHARS
    context_turns: int = CONTEXT_TURNS
    max_summary_chars: int = SUMMARY_CHARS
    events_per_run: int = EVENTS_PER_RUN
    answered: list[Answered] = field(default_factory=list)  # the last answers, for resends
    stream_replies: bool = False  # stream each reply's text through a workflow stream (streaming.py)


@dataclass
class UserMessage:
    text: str


@dataclass
class ChatStatus:
    state: str  # "idle", "planning", "running_tool" or "ended"
    tool: str | None = None
    turns: int = 0

    def describe(self) -> str:
        if self.state == "planning":
            return "thinking"
        if self.state == "running_tool":
            return f"running tool {self.tool}"
        return self.state


@dataclass
class Transcript:
    messages: list[ChatMessage]
    turns: int


@workflow.defn
class DurableAgentWorkflow:
    builtin_tools = True  # offer the model the built-in tools (tools.py); see model_tools()

    @workflow.init
    def __init__(self, input: ChatInput) -> None:
        self._messages: list[ChatMessage] = list(input.history)
        self._summary = input.summary
        self._max_steps = max(1, input.max_steps_per_turn)
        self._model_call = input.model_call
        self._context_chars = input.context_chars
        self._context_turns = max(1, input.context_turns)
        self._summary_chars = input.max_summary_chars
        self._answered: dict[str, AgentReply] = {a.message_id: a.reply for a in input.answered}
        self._events_per_run = input.events_per_run
        self._earlier_turns = input.earlier_turns
        self._status = ChatStatus("idle", turns=input.earlier_turns)
        self._busy = False
        self._ended = False
        self._stream_replies = input.stream_replies
        if input.stream_replies:  # Temporal's durable stream, for the reply's text (streaming.py); offsets per run
            self.reply_stream = WorkflowStream()

    @workflow.run
    async def run(self, input: ChatInput) -> Transcript:
        if input.model_call not in MODEL_CALLS:  # the chat fails at once, saying why
            raise ApplicationError(f"model_call must be one of {', '.join(MODEL_CALLS)}, not {input.model_call!r}",
                                   type="BadChatInput", non_retryable=True)
        # The workflow sleeps here, durably, for as long as the chat lasts; Updates do the work. It wakes to
        # end, or to hand over to a fresh run when this one's history is long, never in the middle of a turn.
        await workflow.wait_condition(
            lambda: (self._ended or (not self._busy and self.run_is_full())) and workflow.all_handlers_finished())
        if self._ended:
            return Transcript(self.history(), self._status.turns)
        workflow.continue_as_new(self.next_run_input(self._carry_over()))

    # --- what a subclass reads ------------------------------------------------------------------------------

    @property
    def turns(self) -> int:
        """Turns answered in this chat, over all its runs."""
        return self._status.turns

    @property
    def turns_this_run(self) -> int:
        return self._status.turns - self._earlier_turns

    @property
    def messages(self) -> list[ChatMessage]:
        """This run's messages (older turns live on in the summary). A copy: change the chat through the hooks."""
        return list(self._messages)

    @property
    def ended(self) -> bool:
        return self._ended

    def end(self) -> None:
        """End the chat once the message being answered (if any) has its reply."""
        self._ended = True
        if self._stream_replies:
            # A reader's long poll waits in the workflow for text that will not come now, and the chat returns
            # only once every handler has finished: release it (it returns what it has).
            self.reply_stream.detach_pollers()
        if not self._busy:
            self._status = ChatStatus("ended", turns=self._status.turns)

    def show_status(self, state: str, tool: str | None = None) -> None:
        """What the `status` query reports until the turn ends: "planning", "running_tool", or a state of yours."""
        self._status = ChatStatus(state, tool=tool, turns=self._status.turns)

    # --- extension points (see the module's docstring) ------------------------------------------------------

    async def before_turn(self, text: str) -> AgentReply | None:
        """Before the model is asked: return a reply to answer without it, None to go on."""
        return None

    def model_tools(self) -> list[ToolSpec]:
        """Tools offered to the model besides the built-in ones; `run_tool` must know how to run them."""
        return []

    async def run_tool(self, call: ToolCall) -> ToolResult:
        """Run one tool call as an activity; a failure becomes an error result the model can read."""
        try:
            return await workflow.execute_activity_method(
                AgentActivities.execute_tool, ToolInput(call), **TOOL_ACTIVITY)
        except ActivityError as err:
            return ToolResult(call.id, call.name, f"Error: {_reason(err)}", ok=False)

    def after_turn(self, text: str, reply: AgentReply) -> AgentReply:
        """The end-of-turn decision: the reply to send; `reply.chat_ended = True` ends the chat."""
        return reply

    def run_is_full(self) -> bool:
        """Hand over to a fresh run (continue-as-new) when Temporal suggests it or the history is long."""
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= self._events_per_run

    def next_run_input(self, carried: ChatInput) -> object:
        """The next run's input. A workflow whose own input wraps a `ChatInput` puts `carried` in it."""
        return carried

    # --- the agent loop (private) ---------------------------------------------------------------------------

    def _carry_over(self) -> ChatInput:
        """What the next run needs: the summary, the newest messages, the turn count, the last answers."""
        cut = window(self._messages, self._context_chars, self._context_turns)
        answered = [Answered(i, r) for i, r in self._answered.items()][-REMEMBERED_ANSWERS:]
        return ChatInput(
            max_steps_per_turn=self._max_steps, history=cut.recent, model_call=self._model_call,
            summary=summarize(self._summary, cut.older, self._summary_chars), earlier_turns=self._status.turns,
            context_chars=self._context_chars, context_turns=self._context_turns, max_summary_chars=self._summary_chars,
            events_per_run=self._events_per_run, answered=answered, stream_replies=self._stream_replies)

    @workflow.update
    async def send_message(self, message: UserMessage) -> AgentReply:
        message_id = _message_id()
        if message_id in self._answered:  # a resend of a message answered in an earlier run
            return self._answered[message_id]
        if self._busy or self._ended:  # two messages in one workflow task both pass the validator
            raise ApplicationError(self._refusal(), type="ChatUnavailable")
        self._busy = True
        try:
            text = message.text.strip()
            reply = await self.before_turn(text)
            if reply is None:
                reply = await self._turn(text)
            else:  # answered before the model was asked: still a turn of the conversation
                self._messages += [ChatMessage("user", text), ChatMessage("assistant", reply.text)]
                self._status = ChatStatus("idle", turns=self._status.turns + 1)
            reply = self.after_turn(text, reply)
            if reply.chat_ended:
                self._ended = True
            self._remember(message_id, reply)
            return reply
        finally:
            self._busy = False
            self._status = ChatStatus("ended" if self._ended else "idle", turns=self._status.turns)

    @send_message.validator
    def _validate(self, message: UserMessage) -> None:
        # A rejected Update is not written to the history, and the client gets this message at once.
        if _message_id() in self._answered:
            return
        if self._busy or self._ended:
            raise ValueError(self._refusal())
        problem = message_problem(message.text)
        if problem:
            raise ValueError(problem)

    @workflow.signal
    def end_chat(self) -> None:
        self.end()

    @workflow.query
    def history(self) -> list[ChatMessage]:
        """The conversation as this run knows it: the summary of older turns (if any), then the messages."""
        return summary_message(self._summary) + self._messages

    @workflow.query
    def status(self) -> ChatStatus:
        return self._status

    def _remember(self, message_id: str, reply: AgentReply) -> None:
        self._answered[message_id] = reply
        while len(self._answered) > REMEMBERED_ANSWERS:
            del self._answered[next(iter(self._answered))]

    def _refusal(self) -> str:
        if self._ended:
            return "the chat has ended; start a new chat"
        return "the agent is still working on the previous message; send this one when it has replied"

    async def _turn(self, text: str) -> AgentReply:
        self._messages.append(ChatMessage("user", text))
        turns = self._status.turns + 1
        used: list[str] = []
        for step in range(1, self._max_steps + 1):
            self._status = ChatStatus("planning", turns=turns)
            try:
                plan = await self._plan()
            except ActivityError as err:
                return self._failed_turn(f"The model could not plan the next step: {_reason(err)}", used, step, turns)
            if not plan.tool_calls:
                self._messages.append(ChatMessage("assistant", plan.answer))
                self._status = ChatStatus("idle", turns=turns)
                self._ended = self._ended or plan.end_chat
                return AgentReply(plan.answer, used, step, chat_ended=plan.end_chat)
            self._messages.append(ChatMessage("assistant", plan.answer, tool_calls=plan.tool_calls))
            for call in plan.tool_calls:
                self._status = ChatStatus("running_tool", tool=call.name, turns=turns)
                result = await self.run_tool(call)
                used.append(call.name)
                self._messages.append(ChatMessage("tool", result.output, tool_call_id=call.id))
        return self._failed_turn(
            f"I stopped after {self._max_steps} steps without a final answer (the limit per message).",
            used, self._max_steps, turns)

    async def _plan(self) -> Plan:
        """Ask the model for the next step: an activity (default) or a local activity (ChatInput.model_call)."""
        context = PlanInput(self._model_context(), self.model_tools(), self.builtin_tools,
                            stream=self._stream_replies)
        if self._model_call == "local_activity":
            return await workflow.execute_local_activity_method(
                AgentActivities.plan_next_action, context, **PLAN_LOCAL_ACTIVITY)
        return await workflow.execute_activity_method(AgentActivities.plan_next_action, context, **PLAN_ACTIVITY)

    def _model_context(self) -> list[ChatMessage]:
        """What the model is given: the summary plus the newest messages, within `context_chars` (context.py)."""
        return model_context(self._summary, self._messages, self._context_chars, self._summary_chars,
                             self._context_turns)

    def _failed_turn(self, text: str, used: list[str], steps: int, turns: int) -> AgentReply:
        self._messages.append(ChatMessage("assistant", text))
        self._status = ChatStatus("idle", turns=turns)
        return AgentReply(text, used, steps, error=text)


def _message_id() -> str:
    """The id of the message being handled: the Update's id, which the client chooses (one per message)."""
    info = workflow.current_update_info()
    return info.id if info else ""


def _reason(err: ActivityError) -> str:
    cause = err.cause
    while cause is not None and cause.__cause__ is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    return str(cause.message if isinstance(cause, ApplicationError) else (cause or err))
