"""What the model sees: a summary of the older turns plus the newest messages, within a budget.

Primitive 3 (event-sourced state) has a price: every model call's input is recorded in the event history.
If each call carried the whole conversation, the history would grow with the *square* of the turns (turn
300 of a chat: 35 MB; the server ends a run at 50 MB). So the model is given a bounded context: the newest
messages that fit in `context_chars`, and one short summary line for each older turn. Each call's input is
then bounded, and the history grows in a straight line with the turns.

Pure, deterministic functions: the workflow calls them (they make no I/O). A real deployment could ask the
model for a better summary; that is a model call, so it would be an activity.
"""

from __future__ import annotations

from dataclasses import dataclass

from .activities import ChatMessage

SUMMARY_HEADER = "Summary of the conversation so far (older turns are not shown):"


def summarize(previous: str, messages: list[ChatMessage], max_chars: int) -> str:
    """The previous summary plus one line per turn of `messages`, cut to `max_chars` (oldest lines go first)."""
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


def summary_message(summary: str) -> list[ChatMessage]:
    """The summary as the system message that opens the model's context (none when there is no summary)."""
    return [ChatMessage("system", f"{SUMMARY_HEADER}\n{summary}")] if summary else []


def _size(message: ChatMessage) -> int:
    return len(message.content) + sum(len(str(c.arguments)) + len(c.name) for c in message.tool_calls)


@dataclass
class Window:
    """The conversation cut in two: `older` messages (to be summarised) and the `recent` ones shown as is."""

    older: list[ChatMessage]
    recent: list[ChatMessage]


def window(messages: list[ChatMessage], max_chars: int, max_turns: int | None = None) -> Window:
    """Keep the newest whole turns that fit in `max_chars` (and number at most `max_turns`); the last turn is
    always kept whole, even if it alone is larger (the model needs the question it is answering and the
    tool results it asked for).

    A cut is made only where a user message starts, so a tool call is never separated from its result.
    """
    if not messages:
        return Window([], [])
    starts = sorted({0} | {i for i, m in enumerate(messages) if m.role == "user"})
    cut, size, turns = starts[-1], sum(_size(m) for m in messages[starts[-1]:]), 1
    for start, end in zip(reversed(starts[:-1]), reversed(starts[1:])):
        size += sum(_size(m) for m in messages[start:end])
        turns += 1
        if size > max_chars or (max_turns is not None and turns > max_turns):
            break
        cut = start
    return Window(list(messages[:cut]), list(messages[cut:]))


def model_context(summary: str, messages: list[ChatMessage], max_chars: int, max_summary_chars: int,
                  max_turns: int | None = None) -> list[ChatMessage]:
    """The messages one model call is given: the summary (of earlier runs and of the turns that no longer fit)
    as a system message, then the newest messages."""
    cut = window(messages, max_chars, max_turns)
    if cut.older:
        summary = summarize(summary, cut.older, max_summary_chars)
    return summary_message(summary) + cut.recent
