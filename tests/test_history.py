"""The event-history views, read from real chats on the real embedded server.

The retry is real: the local OpenAI-protocol server answers the first model call with HTTP 500, the
activity fails, and Temporal runs it again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from durable_course.history import (
    GAP_SECONDS, decode_events, history_events, history_table, history_timeline, workflow_task_spans,
)
from durable_agent.session import open_chat
from durable_agent.worker import start_worker
from fake_openai import FAKE_API_KEY, completion, error, tool_call
from server_state import until_a_workflow_task_waits

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

ONE_TOOL_TURN = [
    ("WorkflowExecutionStarted", ""), ("WorkflowExecutionUpdateAccepted", ""),
    ("ActivityTaskScheduled", "plan_next_action"), ("ActivityTaskStarted", "plan_next_action"),
    ("ActivityTaskCompleted", "plan_next_action"),
    ("ActivityTaskScheduled", "execute_tool"), ("ActivityTaskStarted", "execute_tool"),
    ("ActivityTaskCompleted", "execute_tool"),
    ("ActivityTaskScheduled", "plan_next_action"), ("ActivityTaskStarted", "plan_next_action"),
    ("ActivityTaskCompleted", "plan_next_action"),
    ("WorkflowExecutionUpdateCompleted", ""),
]


async def test_table_of_one_turn(chat):
    await chat.send("What is 25 + 17?")
    table = await history_table(chat)
    assert [(e.kind, e.activity) for e in table.events] == ONE_TOOL_TURN
    summaries = [e.summary for e in table.events]
    assert summaries[1] == "send_message: 'What is 25 + 17?'"
    assert summaries[2] == "1 message to the model"
    assert summaries[4] == "tool calls: calculator(expression='25 + 17')"
    assert summaries[5] == "calculator(expression='25 + 17')" and summaries[7] == "42"
    assert summaries[-2] == "answer: '25 + 17 = 42.'" and summaries[-1] == "reply: '25 + 17 = 42.'"
    assert [e.attempt for e in table.events if e.kind == "ActivityTaskStarted"] == [1, 1, 1]
    seconds = [e.seconds for e in table.events]
    assert seconds[0] == 0 and seconds == sorted(seconds)
    text = str(table)
    assert text.splitlines()[0].split() == ["time", "event", "activity", "attempt", "summary"]
    assert "ActivityTaskCompleted" in text and "reply: '25 + 17 = 42.'" in text and len(text.splitlines()) == 13
    assert "<td style='text-align:left'>send_message: &#x27;What is 25 + 17?&#x27;</td>" in table._repr_html_()


async def test_workflow_tasks_and_the_end_of_a_chat(chat):
    await chat.send("What is 1 + 1?")
    await chat.end()
    everything = await history_table(chat, workflow_tasks=True)
    kinds = [e.kind for e in everything.events]
    assert {"WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted"} <= set(kinds)
    assert kinds[-1] == "WorkflowExecutionCompleted"
    assert everything.events[-1].summary == "transcript: 4 messages, 1 turn(s)"
    assert [e.summary for e in everything.events if e.kind == "WorkflowExecutionSignaled"] == ["signal end_chat"]
    short = await history_table(chat)
    assert not any(e.is_workflow_task for e in short.events) and len(short.events) < len(everything.events)


async def test_a_saved_history_reads_the_same(chat):
    await chat.send("What's the weather in Oslo?")
    saved = (await chat.handle.fetch_history()).to_json()
    loaded = WorkflowHistory.from_json(chat.workflow_id, saved)
    assert [e.summary for e in await history_events(loaded)] == [e.summary for e in await history_events(chat)]
    timeline = await history_timeline(loaded)
    assert [b.label for b in timeline.bars] == ["plan_next_action", "weather", "plan_next_action"]
    assert all(b.outcome == "completed" and b.attempt == 1 for b in timeline.bars)


async def test_bad_input_gets_a_clear_error(temporal):
    with pytest.raises(TypeError, match="not str"):
        await history_table("chat-12345678")
    with pytest.raises(ValueError, match="there is no workflow 'chat-missing0'"):
        await history_table(open_chat(temporal.client, "chat-missing0"))


async def test_a_retry_is_visible_in_the_table_and_the_timeline(fake, provider_chat):
    fake.replies += [error(500, "the model is overloaded"),
                     completion(tool_calls=[tool_call("calculator", '{"expression": "25 + 17"}')]),
                     completion("25 + 17 is 42.")]
    assert (await provider_chat.send("What is 25 + 17?")).text == "25 + 17 is 42."
    table = await history_table(provider_chat)
    timeline = await history_timeline(provider_chat)
    # No event for the failed attempt: the started event of attempt 2 carries the failure it follows.
    started = [e for e in table.events if e.kind == "ActivityTaskStarted"]
    assert [e.attempt for e in started] == [2, 1, 1]
    assert started[0].summary.startswith("retry after: the model call failed: InternalServerError")
    assert FAKE_API_KEY not in str(table)
    first = timeline.bars[0]
    assert (first.label, first.attempt, first.outcome) == ("plan_next_action", 2, "completed")
    assert first.started - first.scheduled >= 1.0  # the back-off (1 s, PLAN_ACTIVITY) before the attempt that ran
    # One activity is labelled as retried. (A busy machine may add "waited ... for a worker" notes: not asserted.)
    notes = [t.get_text() for t in timeline.figure.axes[0].texts]
    assert [n for n in notes if "attempt" in n] == [f"attempt 2, waited {first.started - first.scheduled:.1f} s"]
    assert [t.get_text() for t in timeline.figure.axes[0].get_yticklabels()] == [
        "workflow code", "1. plan_next_action", "2. calculator", "3. plan_next_action"]
    assert repr(timeline) == f"Timeline of {provider_chat.workflow_id}: 3 activities, 1 retried"
    png = timeline._repr_png_()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    ARTIFACTS.mkdir(exist_ok=True)
    timeline.save(str(ARTIFACTS / "history-timeline-retry.png"))


async def test_a_worker_outage_shows_as_a_gap(temporal, task_queue, worker, chat):
    await chat.send("What is 2 + 3?")
    await worker.stop()
    pending = asyncio.create_task(chat.send("What is 3 + 4?"))
    await until_a_workflow_task_waits(chat.handle)  # the message is on the server: its workflow task waits
    await asyncio.sleep(GAP_SECONDS)  # the outage itself: no worker for at least this long
    replacement = await start_worker(temporal.client, task_queue=task_queue)
    try:
        assert (await pending).text == "3 + 4 = 7."
        history = await chat.handle.fetch_history()
    finally:
        await replacement.stop()
    events = decode_events(history)
    # The wait that ended when the replacement worker took the task, just before turn 2 was accepted: from
    # the server's timestamps. It began before the sleep above and ended after it, so it is long enough to be
    # labelled, however busy the machine is.
    accepted = [e.seconds for e in events if e.kind == "WorkflowExecutionUpdateAccepted"][1]
    began, ended = max((w for w in workflow_task_spans(events)[0] if w[1] <= accepted), key=lambda w: w[1])
    assert ended - began >= GAP_SECONDS
    timeline = await history_timeline(history)
    notes = [t.get_text() for t in timeline.figure.axes[0].texts]
    assert f"waited {ended - began:.1f} s for a worker" in notes
    ARTIFACTS.mkdir(exist_ok=True)
    timeline.save(str(ARTIFACTS / "history-timeline-worker-gap.png"))
