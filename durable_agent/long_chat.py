"""Long chats, made visible: continue-as-new every few turns, with a summary carried to the next run.

Primitive 3 (event-sourced state) has a price: every turn adds events to the workflow's history, a history
has limits (the server warns at 10,240 events or 10 MB), and a worker that takes over replays all of it.
The cure is *continue-as-new*: the workflow closes this run and starts a fresh one with the same workflow
id, handing over only what it needs: a short summary of the chat so far. The model sees that summary (as a
system message) plus the turns of the current run, never the whole chat.

`DurableAgentWorkflow` already does this when its history gets long (thousands of events). This variant
does it after a fixed number of turns (`max_turns_per_run`), so notebook 07 can show it after three.
`LongChatWorkflow` is `DurableAgentWorkflow` with two extension points overridden (`run_is_full`,
`next_run_input`): the same Update, signal and queries, so `ChatSession` talks to it unchanged (an Update or query without a run id goes to the latest run).

    chat = await start_long_chat(client, input=LongChatInput(max_turns_per_run=3))
    await chat.send("What is 2 + 2?")
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow
from temporalio.client import Client

with workflow.unsafe.imports_passed_through():
    from .config import settings
    from .context import SUMMARY_HEADER, summarize
    from .session import ChatSession, new_chat_id

from .workflow import DEFAULT_MAX_STEPS, ChatInput, DurableAgentWorkflow, Transcript

__all__ = ["SUMMARY_HEADER", "LongChatInput", "LongChatWorkflow", "start_long_chat", "summarize"]


@dataclass
class LongChatInput:
    max_turns_per_run: int = 20
    summary: str = ""  # carried over from the previous run; empty in the first one
    earlier_turns: int = 0  # turns answered in the previous runs
    max_summary_chars: int = 1500
    max_steps_per_turn: int = DEFAULT_MAX_STEPS


@workflow.defn
class LongChatWorkflow(DurableAgentWorkflow):
    @workflow.init
    def __init__(self, input: LongChatInput) -> None:
        super().__init__(ChatInput(input.max_steps_per_turn, summary=input.summary, earlier_turns=input.earlier_turns,
                                   max_summary_chars=input.max_summary_chars))  # turns count on across runs
        self._input = input

    @workflow.run
    async def run(self, input: LongChatInput) -> Transcript:
        return await super().run(ChatInput(input.max_steps_per_turn))

    def run_is_full(self) -> bool:
        """This run has had its turns (the default's history-length limit still applies too)."""
        return self.turns_this_run >= max(1, self._input.max_turns_per_run) or super().run_is_full()

    def next_run_input(self, carried: ChatInput) -> LongChatInput:
        """Only a summary of this run's messages goes on, none of the messages themselves."""
        input = self._input
        return LongChatInput(
            max_turns_per_run=input.max_turns_per_run,
            summary=summarize(input.summary, self.messages, input.max_summary_chars),
            earlier_turns=self.turns,
            max_summary_chars=input.max_summary_chars,
            max_steps_per_turn=input.max_steps_per_turn,
        )


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
