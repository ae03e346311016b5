"""Streaming replies, durably (notebook 12): the reply's text through Temporal's workflow stream, recorded once
as the model activity's result; a worker killed mid-stream, and the reader still shows the reply once."""

from __future__ import annotations

import asyncio

from durable_agent.activities import Plan
from durable_agent.session import start_chat
from durable_agent.streaming import StreamedText, stream_reply
from durable_agent.worker import start_worker_process
from durable_agent.workflow import ChatInput
from durable_course.chat import ChatBox

PUBLISH = "__temporal_workflow_stream_publish"
GREETING = "Hello there"  # the offline model answers it with its help text: about forty words


def publish_signals(history) -> int:
    return sum(1 for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
               and e.workflow_execution_signaled_event_attributes.signal_name == PUBLISH)


def recorded_answers(client, history) -> list[str]:
    converter = client.data_converter.payload_converter
    return [converter.from_payloads(list(e.activity_task_completed_event_attributes.result.payloads), [Plan])[0].answer
            for e in history.events if e.HasField("activity_task_completed_event_attributes")]


async def test_the_reply_streams_and_the_history_records_it_once_as_a_result(temporal, task_queue, worker):
    chat = await start_chat(temporal.client, task_queue=task_queue, input=ChatInput(stream_replies=True))
    shown, updates = StreamedText(), []
    reply = await stream_reply(chat, GREETING, updates.append, shown)
    assert reply.text.startswith("Hello! I'm the built-in offline model")
    assert shown.text == reply.text and shown.pieces == len(reply.text.split()) and shown.restarts == 0
    assert len(updates) == shown.pieces and updates[0] == "Hello! " and updates[-1] == reply.text  # word by word
    history = await chat.handle.fetch_history()
    assert recorded_answers(temporal.client, history) == [reply.text]  # the whole reply: one activity result
    assert 1 <= publish_signals(history) < shown.pieces  # the pieces travelled in batches, not one event each
    # A tool step streams no text; the answer after it does.
    shown = StreamedText()
    reply = await stream_reply(chat, "What is 25 + 17?", None, shown)
    assert reply.text == shown.text == "25 + 17 = 42." and reply.tools_used == ["calculator"]


async def test_a_chat_ends_even_while_a_reader_waits_on_its_stream(temporal, task_queue, worker):
    """A reader that follows the stream past its end leaves a long-poll Update waiting in the workflow (the
    server keeps it when the reader goes away), and the chat returns only when every handler has finished: ending
    the chat must release that poll, or `end()` waits for text that will never come."""
    from temporalio.contrib.workflow_streams import WorkflowStreamClient

    from durable_agent.streaming import TOPIC

    chat = await start_chat(temporal.client, task_queue=task_queue, input=ChatInput(stream_replies=True))
    await chat.send(GREETING)
    stream = WorkflowStreamClient(chat.handle)
    end = await stream.get_offset()

    async def follow() -> None:
        async for _ in stream.subscribe(TOPIC, from_offset=end):
            pass

    reader = asyncio.create_task(follow())
    await asyncio.sleep(1.0)  # its poll is waiting in the workflow for an offset not yet written
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    transcript = await asyncio.wait_for(chat.end(), 20)
    assert transcript.turns == 1


async def test_without_streaming_nothing_is_published(temporal, task_queue, worker):
    chat = await start_chat(temporal.client, task_queue=task_queue)
    reply = await chat.send(GREETING)
    assert reply.text.startswith("Hello!") and publish_signals(await chat.handle.fetch_history()) == 0


async def test_the_chat_box_streams_then_shows_the_recorded_turn_once(temporal, task_queue, worker):
    chat = await start_chat(temporal.client, task_queue=task_queue, input=ChatInput(stream_replies=True))
    box = ChatBox(chat, stream=True)
    reply = await box.send(GREETING)
    assert box.streamed.text == reply.text and box.streamed.pieces > 10
    assert box.entries == [("user", GREETING), ("agent", reply.text)]
    assert len(box.messages.children) == 2  # the live bubble gave way to the recorded reply


async def test_a_worker_killed_mid_stream_the_reader_shows_the_reply_once(temporal, task_queue):
    first = await start_worker_process(temporal.address, task_queue=task_queue)
    second = None
    try:
        chat = await start_chat(temporal.client, task_queue=task_queue, input=ChatInput(stream_replies=True))
        box = ChatBox(chat, stream=True)
        turn = asyncio.create_task(box.send(GREETING))
        while box.streamed is None or box.streamed.pieces < 5:  # mid-stream: a few words shown
            assert not turn.done()
            await asyncio.sleep(0.01)
        first.kill()
        half = box.streamed.text
        second = await start_worker_process(temporal.address, task_queue=task_queue)
        reply = await asyncio.wait_for(turn, 60)
        assert len(half) < len(reply.text) and reply.text.startswith(half)
        assert box.streamed.restarts == 1  # the retry streamed the reply again, from its start ...
        assert box.streamed.text == reply.text  # ... and the reader showed it once, not half + whole
        assert box.entries == [("user", GREETING), ("agent", reply.text)]
        history = await chat.handle.fetch_history()
        assert recorded_answers(temporal.client, history) == [reply.text]
        attempts = [e.activity_task_started_event_attributes.attempt for e in history.events
                    if e.HasField("activity_task_started_event_attributes")]
        assert attempts == [2]  # the killed attempt never completed; the server recorded the one that did
    finally:
        first.kill()
        if second is not None:
            await second.stop()


async def test_the_streaming_bench_reports_what_streaming_adds_to_a_turn(temporal):
    from durable_course.bench import run_streaming_benchmark

    report = await run_streaming_benchmark(temporal.client, iterations=2, warmup=1)
    plain, streamed = report.sides
    assert (plain.name, streamed.name) == ("not streamed", "streamed") and report.pieces_per_reply > 30
    assert plain.publish_signals_per_turn == plain.poll_updates_per_turn == 0 and plain.first_text_ms is None
    assert streamed.publish_signals_per_turn >= 1 and streamed.poll_updates_per_turn >= 1
    assert streamed.events_per_turn > plain.events_per_turn and streamed.first_text_ms is not None
    assert streamed.publish_signals_per_turn < report.pieces_per_reply  # batches, not one signal per piece
    assert report.table().splitlines()[2].startswith("not streamed")
