"""Long chats: continue-as-new bounds the history, the carried summary bounds the model's context.
Against the real embedded Temporal server, with the worker in this process."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowExecutionStatus

from durable_agent.activities import ChatMessage
from durable_agent.long_chat import SUMMARY_HEADER, LongChatInput, start_long_chat, summarize
from durable_agent.session import start_chat

QUESTIONS = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?", "What is 4 + 4?", "What is 5 + 5?",
             "What is 6 + 6?", "What is 7 + 7?"]


async def histories_of_each_run(client, chat) -> list:
    """Follow the chain of runs from the first: each continue-as-new event names the next run."""
    histories, run_id = [], chat.handle.first_execution_run_id
    while run_id:
        history = await client.get_workflow_handle(chat.workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                  if last.HasField("workflow_execution_continued_as_new_event_attributes") else None)
    return histories


def answered_updates(history) -> int:
    return sum(e.HasField("workflow_execution_update_completed_event_attributes") for e in history.events)


async def test_each_run_keeps_a_bounded_history_and_the_chat_goes_on(temporal, task_queue, worker):
    chat = await start_long_chat(temporal.client, task_queue=task_queue, input=LongChatInput(max_turns_per_run=3))
    for n, question in enumerate(QUESTIONS, start=1):
        reply = await chat.send(question)
        assert reply.text == f"{n} + {n} = {2 * n}."
    runs = await histories_of_each_run(temporal.client, chat)
    assert [answered_updates(h) for h in runs] == [3, 3, 1]  # turns 1-3, 4-6, then 7 in the running third run

    plain = await start_chat(temporal.client, task_queue=task_queue)
    for question in QUESTIONS:
        await plain.send(question)
    plain_events = len((await plain.handle.fetch_history()).events)
    # Three turns per run: each run's history is well under half of the same seven turns in one run.
    assert max(len(h.events) for h in runs) < plain_events / 2


async def test_the_summary_is_carried_over_and_the_context_stays_bounded(temporal, task_queue, worker):
    chat = await start_long_chat(temporal.client, task_queue=task_queue, input=LongChatInput(max_turns_per_run=2))
    for question in QUESTIONS[:5]:
        await chat.send(question)
    context = await chat.history()  # what the model is given in this run (the third)
    assert context[0].role == "system" and context[0].content.startswith(SUMMARY_HEADER)
    for n in range(1, 5):
        assert f"The user asked: What is {n} + {n}? The agent answered: {n} + {n} = {2 * n}." in context[0].content
    assert "5 + 5" not in context[0].content  # the current run's turn is in the messages, not the summary
    assert [m.role for m in context[1:]] == ["user", "assistant", "tool", "assistant"]
    status = await chat.status()
    assert status.turns == 5  # counted across runs

    transcript = await chat.end()  # result() follows the chain of runs to the last one
    assert transcript.turns == 5 and transcript.messages[-1].content == "5 + 5 = 10."
    described = await temporal.client.get_workflow_handle(chat.workflow_id).describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED


async def test_goodbye_ends_a_long_chat(temporal, task_queue, worker):
    chat = await start_long_chat(temporal.client, task_queue=task_queue, input=LongChatInput(max_turns_per_run=1))
    await chat.send("What is 2 + 2?")
    reply = await chat.send("Goodbye!")
    assert reply.chat_ended
    assert (await chat.handle.result()).turns == 2


def test_summarize_keeps_the_newest_turns_within_the_budget():
    messages = []
    for n in range(10):
        messages += [ChatMessage("user", f"question {n} " + "x" * 50), ChatMessage("assistant", f"answer {n}")]
    summary = summarize("- The user asked: q0 The agent answered: a0", messages, max_chars=400)
    assert 0 < len(summary) <= 400
    assert "answer 9" in summary and "a0" not in summary
    assert summarize("", messages, max_chars=0) == ""
    long = summarize("", [ChatMessage("user", "y" * 1000), ChatMessage("assistant", "ok")], max_chars=1000)
    assert len(long) < 400 and long.count("...") == 1


async def test_bad_limits_are_refused_before_anything_starts(temporal, task_queue):
    with pytest.raises(ValueError, match="max_turns_per_run must be at least 1"):
        await start_long_chat(temporal.client, "chat-never-started", task_queue=task_queue,
                              input=LongChatInput(max_turns_per_run=0))
    with pytest.raises(ValueError, match="max_summary_chars"):
        await start_long_chat(temporal.client, task_queue=task_queue, input=LongChatInput(max_summary_chars=-1))
