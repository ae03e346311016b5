"""Notebook 12's experiments: what a streamed turn leaves in the event history, and a worker killed mid-stream.

The streaming itself is the agent's (`durable_agent/streaming.py`); this module only starts, kills and reads.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from durable_agent.activities import Plan
from durable_agent.session import ChatSession, start_chat
from durable_agent.streaming import TOPIC, ReplyPiece
from durable_agent.worker import start_worker_process
from durable_agent.workflow import ChatInput

from .chat import ChatBox
from .events import read

PUBLISH = "__temporal_workflow_stream_publish"
POLL = "__temporal_workflow_stream_poll"
GREETING = "Hello there"  # the offline model's help text: about forty words


@dataclass
class StreamFootprint:
    """What one chat's streamed turns left in its event history."""

    events: int
    publish_signals: int
    pieces_published: int
    poll_updates: int
    recorded_answers: list[str]  # the model activities' results: each reply, whole, once

    def __str__(self) -> str:
        words = sum(len(answer.split()) for answer in self.recorded_answers)
        # A batch whose signal was retried (the first try timed out) is recorded twice, and dropped by the
        # workflow the second time: so "at least", not "exactly", one piece per word.
        return "\n".join([
            f"Every word of the replies was published to the stream: {self.pieces_published >= words}",
            f"Carried in fewer signals than pieces (batches, not tokens): {self.publish_signals < self.pieces_published}",
            f"Reader polls recorded as Updates: {self.poll_updates > 0}",
            f"Replies recorded whole, as the model activity's result: {len(self.recorded_answers)}",
        ])


def stream_footprint(client: Client, history: WorkflowHistory) -> StreamFootprint:
    converter = client.data_converter.payload_converter
    events = read(history)
    signals = [e.details for e in events if e.kind == "WorkflowExecutionSignaled" and e.details.signal_name == PUBLISH]
    pieces = 0
    for signal in signals:
        batch = converter.from_payloads(list(signal.input.payloads), [dict])[0]
        pieces += len(batch.get("items", []))
    polls = sum(1 for e in events if e.kind == "WorkflowExecutionUpdateAccepted"
                and e.details.accepted_request.input.name == POLL)
    answers = [converter.from_payloads(list(e.details.result.payloads), [Plan])[0]
               for e in events if e.kind == "ActivityTaskCompleted"]
    return StreamFootprint(len(history.events), len(signals), pieces, polls,
                           [a.answer for a in answers if a.answer and not a.tool_calls])


async def read_pieces(handle: Any, from_offset: int) -> list[ReplyPiece]:
    """Every piece in the chat's stream from `from_offset` to its current end, as a naive reader gets them."""
    stream = WorkflowStreamClient(handle)
    end = await stream.get_offset()
    pieces: list[ReplyPiece] = []
    if end <= from_offset:
        return pieces
    async for item in stream.subscribe(TOPIC, from_offset=from_offset, result_type=ReplyPiece):
        pieces.append(item.data)
        if item.offset + 1 >= end:
            break
    return pieces


@dataclass
class StreamCrashReport:
    shown_at_kill: str
    reply: str
    box: ChatBox
    pieces: list[ReplyPiece] = field(default_factory=list)

    @property
    def naive_text(self) -> str:
        return "".join(p.text for p in self.pieces)

    def __str__(self) -> str:
        by_attempt: dict[int, int] = {}
        for piece in self.pieces:
            by_attempt[piece.attempt] = by_attempt.get(piece.attempt, 0) + 1
        first_words = self.reply.split()[0]
        whole = sum(1 for kind, text in self.box.entries if kind == "agent" and text == self.reply)
        return "\n".join([
            f"Killed the worker mid-stream, part of the reply shown: {0 < len(self.shown_at_kill) < len(self.reply)}",
            f"Attempts that streamed into the log: {sorted(by_attempt)} "
            f"(attempt 1 cut off: {by_attempt.get(1, 0) < by_attempt.get(2, 0)})",
            f"A reader that joins every piece shows {first_words!r} {self.naive_text.count(first_words)} times",
            f"The chat box started afresh with the new attempt: {self.box.streamed.restarts == 1}",
            f"The chat box shows the complete reply {whole} time(s); what it streamed equals the recorded reply: "
            f"{self.box.streamed.text == self.reply}",
        ])


async def crash_mid_stream(client: Client, address: str, task_queue: str = "stream-lab",
                           words_before_kill: int = 5) -> StreamCrashReport:
    """A worker process streams a reply; SIGKILL it after a few words, start another; the box finishes the turn."""
    worker = await start_worker_process(address, task_queue=task_queue)
    second = None
    try:
        chat: ChatSession = await start_chat(client, task_queue=task_queue, input=ChatInput(stream_replies=True))
        box = ChatBox(chat, stream=True)
        start = await WorkflowStreamClient(chat.handle).get_offset()
        turn = asyncio.ensure_future(box.send(GREETING))
        while (box.streamed is None or box.streamed.pieces < words_before_kill) and not turn.done():
            await asyncio.sleep(0.01)
        worker.kill()
        shown = box.streamed.text if box.streamed else ""
        second = await start_worker_process(address, task_queue=task_queue)
        reply = await asyncio.wait_for(turn, 60)
        report = StreamCrashReport(shown, reply.text if reply else "", box)
        report.pieces = await read_pieces(chat.handle, start)
        await chat.end()
        return report
    finally:
        worker.kill()
        if second is not None:
            await second.stop()
