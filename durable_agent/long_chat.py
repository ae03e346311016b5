"""Long chats: continue-as-new keeps the event history bounded, a summary keeps the model's context bounded.

Primitive 3 (event-sourced state) has a price: every turn adds events to the workflow's history, a history
has limits (the server warns at 10,240 events or 10 MB), and a worker that takes over replays all of it.
The cure is *continue-as-new*: after `max_turns_per_run` turns the workflow closes this run and starts a
fresh one with the same workflow id, handing over only what it needs: a short summary of the chat so far.
The model sees that summary (as a system message) plus the turns of the current run, never the whole chat.

`LongChatWorkflow` is `DurableAgentWorkflow` with a different `run` method: the same Update, signal and
queries, so `ChatSession` talks to it unchanged (an Update or query without a run id goes to the latest run).

    chat = await start_long_chat(client, input=LongChatInput(max_turns_per_run=3))
    await chat.send("What is 2 + 2?")
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow
from temporalio.client import Client

with workflow.unsafe.imports_passed_through():
    from .activities import ChatMessage
    from .config import settings
    from .session import ChatSession, new_chat_id

from .workflow import DEFAULT_MAX_STEPS, ChatInput, ChatStatus, DurableAgentWorkflow, Transcript

SUMMARY_HEADER = "Summary of the conversation so far (older turns are not shown):"


@dataclass
class LongChatInput:
    max_turns_per_run: int = 20
    summary: str = ""  # carried over from the previous run; empty in the first one
    earlier_turns: int = 0  # turns answered in the previous runs
    max_summary_chars: int = 1500
    max_steps_per_turn: int = DEFAULT_MAX_STEPS


def summarize(previous: str, messages: list[ChatMessage], max_chars: int) -> str:
    """The previous summary plus one line per turn of `messages`, cut to `max_chars` (oldest lines go first).

    Deterministic code, so it may run in the workflow. A real deployment could ask the model for a better
    summary instead; that is a model call, so it would be an activity.
    """
    lines = [line for line in previous.splitlines() if line.startswith("- ")]
    question = None
    for m in messages:
        if m.role == "user":
            question = m.content
        elif m.role == "assistant" and not m.tool_calls and question is not None:
            lines.append(f"- The user asked: {_clip(question)} The agent answered: {_clip(m.content)}")
            question = None
    while lines and len("\n".join(lines)) > max_chars:
        lines.pop(0)
    return "\n".join(lines)


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@workflow.defn
class LongChatWorkflow(DurableAgentWorkflow):
    @workflow.init
    def __init__(self, input: LongChatInput) -> None:
        carried = [ChatMessage("system", f"{SUMMARY_HEADER}\n{input.summary}")] if input.summary else []
        super().__init__(ChatInput(input.max_steps_per_turn, carried))
        self._status = ChatStatus("idle", turns=input.earlier_turns)  # turns count on across runs

    @workflow.run
    async def run(self, input: LongChatInput) -> Transcript:
        def run_is_full() -> bool:
            return self._status.turns - input.earlier_turns >= max(1, input.max_turns_per_run)

        # Sleep until the chat ends or this run has had its turns, and no message is half answered.
        await workflow.wait_condition(
            lambda: (self._ended or run_is_full()) and workflow.all_handlers_finished())
        if self._ended:
            return Transcript(self._messages, self._status.turns)
        workflow.continue_as_new(LongChatInput(
            max_turns_per_run=input.max_turns_per_run,
            summary=summarize(input.summary, self._messages, input.max_summary_chars),
            earlier_turns=self._status.turns,
            max_summary_chars=input.max_summary_chars,
            max_steps_per_turn=input.max_steps_per_turn,
        ))


async def start_long_chat(client: Client, workflow_id: str | None = None, *, task_queue: str | None = None,
                          input: LongChatInput | None = None) -> ChatSession:
    """Start a long chat and return a `ChatSession` for it (the worker must register `LongChatWorkflow`)."""
    input = input or LongChatInput()
    if input.max_turns_per_run < 1:
        raise ValueError(f"max_turns_per_run must be at least 1, not {input.max_turns_per_run}")
    if input.max_summary_chars < 0:
        raise ValueError(f"max_summary_chars cannot be negative, not {input.max_summary_chars}")
    handle = await client.start_workflow(
        LongChatWorkflow.run, input, id=workflow_id or new_chat_id(), task_queue=task_queue or settings().task_queue)
    return ChatSession(handle)
