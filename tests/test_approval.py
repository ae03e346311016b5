"""A tool that waits for a human's approval. Against the real embedded Temporal server, worker in process."""

from __future__ import annotations

import asyncio

import pytest

from durable_agent.approval import ApprovalChatInput, ApprovalChatWorkflow, start_approval_chat
from durable_agent.session import ChatError
from durable_agent.worker import start_worker
from durable_agent.workflow import DurableAgentWorkflow


def tool_activities(history) -> list[str]:
    return [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")]


async def test_an_approved_call_runs_the_tool(temporal, task_queue, worker):
    chat = await start_approval_chat(temporal.client, task_queue=task_queue)
    turn = asyncio.create_task(chat.send("What's the weather in Paris?"))
    request = await chat.wait_for_request()
    assert (request.tool, request.arguments) == ("weather", {"city": "Paris"})
    assert request.describe() == "weather(city='Paris')"
    assert (await chat.status()).state == "awaiting_approval"
    assert not turn.done()
    assert await chat.approve() == "approved: weather(city='Paris')"
    reply = await turn
    assert reply.text.startswith("The weather in Paris:") and reply.tools_used == ["weather"]
    assert await chat.pending() is None
    assert tool_activities(await chat.handle.fetch_history()).count("execute_tool") == 1


async def test_a_rejected_call_never_runs_and_the_agent_says_why(temporal, task_queue, worker):
    chat = await start_approval_chat(temporal.client, task_queue=task_queue)
    turn = asyncio.create_task(chat.send("What's the weather in Paris?"))
    await chat.wait_for_request()
    await chat.reject("not today")
    reply = await turn
    assert reply.text == ("I could not get the weather for Paris: the user did not approve this call: "
                          "not today.")
    assert "execute_tool" not in tool_activities(await chat.handle.fetch_history())


async def test_tools_not_on_the_list_run_without_asking(temporal, task_queue, worker):
    chat = await start_approval_chat(temporal.client, task_queue=task_queue)
    reply = await chat.send("What is 25 + 17?")
    assert reply.text == "25 + 17 = 42." and await chat.pending() is None


async def test_no_answer_in_time_is_a_rejection(temporal, task_queue, worker):
    chat = await start_approval_chat(temporal.client, task_queue=task_queue,
                                     input=ApprovalChatInput(approval_timeout_seconds=1))
    reply = await chat.send("What's the weather in Oslo?")
    assert reply.text == ("I could not get the weather for Oslo: the user did not approve this call: "
                          "nobody answered within 1 seconds.")


async def test_wrong_or_late_decisions_get_a_clear_error(temporal, task_queue, worker):
    chat = await start_approval_chat(temporal.client, task_queue=task_queue)
    with pytest.raises(ChatError, match="no tool call is waiting for approval"):
        await chat.approve()
    with pytest.raises(ChatError, match="no tool call is waiting for approval"):
        await chat.approve(call_id="call_1_1")
    turn = asyncio.create_task(chat.send("What's the weather in Rome?"))
    request = await chat.wait_for_request()
    with pytest.raises(ChatError, match=f"'call_9_9' is not waiting for approval; '{request.call_id}'"):
        await chat.approve(call_id="call_9_9")
    assert await chat.pending() == request  # the bad decision changed nothing
    await chat.approve()
    assert "Rome" in (await turn).text


async def test_the_wait_survives_a_worker_restart(temporal, task_queue, worker):
    chat = await start_approval_chat(temporal.client, task_queue=task_queue)
    turn = asyncio.create_task(chat.send("What's the weather in Lima?"))
    request = await chat.wait_for_request()
    await worker.stop()
    fresh = await start_worker(temporal.client, task_queue=task_queue,
                               workflows=[DurableAgentWorkflow, ApprovalChatWorkflow])
    try:
        assert await chat.pending() == request  # rebuilt from the history by the new worker
        await chat.approve()
        assert (await turn).text.startswith("The weather in Lima:")
    finally:
        await fresh.stop()


async def test_ending_the_chat_while_waiting_rejects_the_call(temporal, task_queue, worker):
    chat = await start_approval_chat(temporal.client, task_queue=task_queue)
    turn = asyncio.create_task(chat.send("What's the weather in Kyiv?"))
    await chat.wait_for_request()
    transcript = await chat.end()
    assert "the chat was ended" in (await turn).text
    assert transcript.turns == 1


async def test_a_timeout_that_is_not_positive_is_refused(temporal, task_queue):
    with pytest.raises(ValueError, match="approval_timeout_seconds must be positive"):
        await start_approval_chat(temporal.client, task_queue=task_queue,
                                  input=ApprovalChatInput(approval_timeout_seconds=0))
