"""A chat session end to end, against the real embedded Temporal server and the offline model."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowExecutionStatus

from durable_agent.session import ChatError, format_transcript, open_chat
from durable_agent.workflow import MAX_MESSAGE_CHARS


async def test_arithmetic_uses_the_calculator(chat):
    reply = await chat.send("What is 25 + 17?")
    assert "42" in reply.text
    assert reply.tools_used == ["calculator"] and reply.steps == 2 and not reply.chat_ended
    for question, answer in [("Calculate 100 / 5", "20"), ("25 * 4", "100"), ("what is 7 times 6?", "42")]:
        assert answer in (await chat.send(question)).text


async def test_weather(chat):
    reply = await chat.send("What's the weather in Seattle?")
    assert reply.tools_used == ["weather"]
    assert "Seattle" in reply.text and "(simulated)" in reply.text


async def test_two_tools_in_one_turn(chat):
    reply = await chat.send("What's the weather in Paris and what is 12 * 3?")
    assert reply.tools_used == ["weather", "calculator"] and reply.steps == 3
    assert "Paris" in reply.text and "36" in reply.text


async def test_greeting_and_thanks_use_no_tool(chat):
    hello = await chat.send("Hello!")
    assert hello.text.startswith("Hello!") and hello.tools_used == []
    thanks = await chat.send("thank you")
    assert "welcome" in thanks.text.lower() and thanks.tools_used == []


async def test_goodbye_ends_the_workflow_with_a_transcript(chat):
    await chat.send("What is 25 + 17?")
    reply = await chat.send("Goodbye!")
    assert reply.chat_ended and "Goodbye" in reply.text
    transcript = await chat.handle.result()
    assert transcript.turns == 2
    assert [m.role for m in transcript.messages] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert (await chat.handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    text = format_transcript(transcript.messages)
    assert "You:   What is 25 + 17?" in text and "calculator(expression='25 + 17')" in text and "<- 42" in text


async def test_queries_return_history_and_status(chat):
    status = await chat.status()
    assert (status.state, status.turns) == ("idle", 0)
    await chat.send("What is 2 + 2?")
    history = await chat.history()
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[1].tool_calls[0].name == "calculator" and history[2].content == "4"
    status = await chat.status()
    assert (status.state, status.turns, status.describe()) == ("idle", 1, "idle")


async def test_state_lives_in_temporal_not_in_the_session_object(temporal, chat):
    await chat.send("What is 6 * 7?")
    reopened = open_chat(temporal.client, chat.workflow_id)
    assert [m.content for m in await reopened.history()][-1] == "6 * 7 = 42."


async def test_empty_and_huge_messages_are_rejected_and_lose_nothing(chat):
    await chat.send("What is 1 + 1?")
    with pytest.raises(ChatError, match="the message is empty"):
        await chat.send("   ")
    with pytest.raises(ChatError, match=f"the limit is {MAX_MESSAGE_CHARS}"):
        await chat.send("x" * (MAX_MESSAGE_CHARS + 1))
    assert len(await chat.history()) == 4  # rejected messages are not recorded; earlier ones are intact
    assert "4" in (await chat.send("What is 2 + 2?")).text


async def test_message_after_the_chat_ended(chat):
    await chat.send("bye")
    with pytest.raises(ChatError, match="the chat has ended"):
        await chat.send("What is 1 + 1?")
    assert (await chat.status()).state == "ended"


async def test_end_chat_signal_returns_the_transcript(chat):
    await chat.send("hi")
    transcript = await chat.end()
    assert transcript.turns == 1 and transcript.messages[0].content == "hi"


async def test_hostile_calculator_input_gets_a_clear_reply(chat):
    reply = await chat.send("What is 9**9**9?")
    assert "could not calculate" in reply.text and "too large" in reply.text
    assert "42" in (await chat.send("What is 25 + 17?")).text  # the chat goes on


async def test_unknown_request_explains_what_the_offline_model_can_do(chat):
    reply = await chat.send("Write me a poem")
    assert "didn't understand" in reply.text and "LLM_MODEL" in reply.text


async def test_concurrent_chats_are_independent(temporal, task_queue, worker):
    from durable_agent.session import start_chat

    chats = [await start_chat(temporal.client, task_queue=task_queue) for _ in range(3)]
    replies = await asyncio.gather(*(c.send(f"What is {i} + 1?") for i, c in enumerate(chats)))
    assert [r.text for r in replies] == [f"{i} + 1 = {i + 1}." for i in range(3)]


async def test_the_workflow_itself_rejects_bad_messages_from_any_client(chat):
    """The session refuses bad messages before sending; the Update's validator guards other clients."""
    from temporalio.client import WorkflowUpdateFailedError

    from durable_agent.workflow import DurableAgentWorkflow, UserMessage

    for text, reason in [("", "the message is empty"), ("y" * (MAX_MESSAGE_CHARS + 1), "the limit is")]:
        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await chat.handle.execute_update(DurableAgentWorkflow.send_message, UserMessage(text))
        assert reason in caught.value.cause.message
    assert await chat.history() == []  # a rejected Update leaves no trace in the history


async def test_the_course_writes_payloads_with_pydantic_and_a_chat_begun_with_the_default_converter_goes_on(
        temporal, task_queue):
    """The course's clients, and the workers made from them, use Temporal's pydantic data converter (compiled
    decoding: server.DATA_CONVERTER). It writes the JSON the SDK's default converter writes, so a chat that a
    worker with the default converter began is replayed and carried on by a worker with the course's."""
    from temporalio.client import Client
    from temporalio.contrib.pydantic import PydanticPayloadConverter
    from temporalio.converter import DataConverter

    from durable_agent.server import DATA_CONVERTER, connect
    from durable_agent.session import start_chat
    from durable_agent.worker import start_worker

    assert DATA_CONVERTER.payload_converter_class is PydanticPayloadConverter
    assert temporal.client.data_converter is DATA_CONVERTER
    assert (await connect(temporal.address)).data_converter is DATA_CONVERTER
    default = Client(**{**temporal.client.config(), "data_converter": DataConverter.default})
    before = await start_worker(default, task_queue=task_queue)
    chat = await start_chat(default, task_queue=task_queue)
    assert "42" in (await chat.send("What is 25 + 17?")).text
    await before.stop()  # its cached chat goes with it: the next worker replays the history
    after = await start_worker(temporal.client, task_queue=task_queue)
    try:
        reopened = open_chat(temporal.client, chat.workflow_id)
        reply = await reopened.send("What's the weather in Paris and what is 12 * 3?")
        assert "36" in reply.text and reply.tools_used == ["weather", "calculator"]
        history = await reopened.history()
    finally:
        await after.stop()
    assert [m.role for m in history[:4]] == ["user", "assistant", "tool", "assistant"]  # the first turn, decoded
    assert history[1].tool_calls[0].arguments == {"expression": "25 + 17"} and history[2].content == "42"
    tool_outputs = [m.content for m in history if m.role == "tool"]
    assert len(tool_outputs) == 3 and tool_outputs[1].startswith("Paris: ") and tool_outputs[2] == "36"


async def test_an_offline_model_call_is_priced_from_litellms_map_with_its_options_model_built_once():
    """Two things LiteLLM did on every call, done once when it is imported (llm.litellm_module): search its price
    map for the offline model, which it does not know, and try again to build the pydantic model of a call's
    options, which it defers and then fails to build where it is first used."""
    from litellm.types.router import LiteLLM_Params

    from durable_agent import llm

    litellm = await llm.litellm_ready()
    model = llm.LLMConfig().model
    assert litellm.get_model_info(model)["input_cost_per_token"] == 0 == litellm.get_model_info(model)["output_cost_per_token"]
    assert LiteLLM_Params.__pydantic_complete__
    response = await llm._acompletion([{"role": "user", "content": "What is 2 + 2?"}], [], llm.LLMConfig())
    assert response._hidden_params["response_cost"] == 0.0
