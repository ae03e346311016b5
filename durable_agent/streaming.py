"""Streaming replies, durably: the reply reaches the user word by word, through Temporal's own stream.

Primitive 2 (managed side effects) still holds: the model is called in the `plan_next_action` activity, and
its complete reply is recorded once, as the activity's result. With `ChatInput(stream_replies=True)` the
activity also asks the model to stream (LiteLLM's `stream=True`, which the offline model supports too) and
publishes the text as it arrives to the chat's **workflow stream** (`temporalio.contrib.workflow_streams`): a
durable, offset-addressed log hosted by the workflow. Publishing is batched (a signal every
`PUBLISH_EVERY`), so the event history grows by batches, not by tokens. A reader subscribes from an offset
and follows along; `stream_reply` below is such a reader.

A worker that dies mid-stream leaves a half reply in the log. The activity's next attempt streams the whole
reply again, each piece tagged with its activity id and attempt, so a reader starts the text afresh when a new
attempt begins: the user sees the complete reply once, never a repeated half. The final word is always the
Update's reply (the recorded activity result); the stream only shows it sooner.

    chat = await start_chat(client, input=ChatInput(stream_replies=True))
    reply = await stream_reply(chat, "Hello!", on_text=lambda text: print(text, end=""))
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from temporalio import activity
from temporalio.contrib.workflow_streams import WorkflowStreamClient

TOPIC = "reply"  # the stream's topic for the reply's text
PUBLISH_EVERY = timedelta(milliseconds=100)  # one signal per this much streamed text, at most
DRAIN_SECONDS = 5.0  # after the reply, how long a reader waits for the last pieces it has not read yet


@dataclass
class ReplyPiece:
    """A piece of a reply's text, and which model call (activity id, attempt) produced it."""

    text: str
    activity_id: str
    attempt: int


class ReplyPublisher:
    """Inside the model activity: publishes the text to the calling workflow's stream, in batches."""

    def __init__(self) -> None:
        info = activity.info()
        self.activity_id, self.attempt = info.activity_id, info.attempt
        self.client = WorkflowStreamClient.from_within_activity(batch_interval=PUBLISH_EVERY)
        self.topic = self.client.topic(TOPIC, type=ReplyPiece)
        self.pieces = 0

    def __call__(self, text: str) -> None:
        self.pieces += 1
        self.topic.publish(ReplyPiece(text, self.activity_id, self.attempt))

    async def __aenter__(self) -> "ReplyPublisher":
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__(*exc)  # flushes what is left: the whole reply is in the log


@dataclass
class StreamedText:
    """What a reader shows while a reply streams: the current attempt's text. A piece from another model call
    (a retry after a crash, or the next step after a tool) starts the text afresh."""

    text: str = ""
    source: tuple[str, int] | None = None
    restarts: int = 0  # times a new attempt of the same model call replaced a half-shown reply
    pieces: int = 0

    def add(self, piece: ReplyPiece) -> str:
        source = (piece.activity_id, piece.attempt)
        if source != self.source:
            if self.source is not None and self.source[0] == piece.activity_id and self.text:
                self.restarts += 1
            self.text, self.source = "", source
        self.text += piece.text
        self.pieces += 1
        return self.text


async def stream_reply(chat: Any, text: str, on_text: Callable[[str], None] | None = None,
                       shown: StreamedText | None = None) -> Any:
    """Send `text` to a chat started with `stream_replies=True` and follow the reply's stream while the turn
    runs: `on_text(whole text so far)` after each piece. Returns the turn's `AgentReply` (the recorded one).
    The subscription starts at the stream's offset before the message, so it reads this turn's pieces only."""
    stream = WorkflowStreamClient(chat.handle)  # the chat's latest run: a turn never spans a continue-as-new
    start = await stream.get_offset()
    shown = shown or StreamedText()
    read_to = start  # the offset after the last piece read

    async def follow() -> None:
        nonlocal read_to
        async for item in stream.subscribe(TOPIC, from_offset=start, result_type=ReplyPiece):
            shown.add(item.data)
            read_to = item.offset + 1
            if on_text:
                on_text(shown.text)

    reader = asyncio.create_task(follow())
    try:
        reply = await chat.send(text)
        # The model activity flushed every piece before it completed, so the log is whole now: read to its end.
        end = await stream.get_offset()
        deadline = asyncio.get_running_loop().time() + DRAIN_SECONDS
        while read_to < end and not reader.done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return reply
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
