"""The real-provider path: LiteLLM's OpenAI client against a local server speaking the OpenAI protocol.

Nothing is patched: the worker's activities call `litellm.acompletion("openai/fake-model", api_base=...)`,
which sends real HTTP requests to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from durable_agent.activities import AgentActivities
from durable_course.faults import watch_backoffs
from durable_agent.llm import LLMConfig
from durable_agent.session import ChatError, start_chat
from durable_agent.worker import start_worker
from fake_openai import FAKE_API_KEY, completion, error, tool_call

SECRET = FAKE_API_KEY


async def history_text(chat) -> str:
    return json.dumps([m.content for m in await chat.history()])


async def test_tool_call_through_the_openai_protocol(fake, provider_chat):
    fake.replies += [
        completion(tool_calls=[tool_call("calculator", '{"expression": "25 + 17"}')]),
        completion("25 + 17 is 42."),
    ]
    reply = await provider_chat.send("What is 25 + 17?")
    assert reply.text == "25 + 17 is 42." and reply.tools_used == ["calculator"]
    first, second = (r["body"] for r in fake.requests)
    assert fake.requests[0]["path"] == "/v1/chat/completions"
    assert fake.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert first["model"] == "fake-model"
    assert {t["function"]["name"] for t in first["tools"]} == {"calculator", "weather", "end_chat"}
    assert first["messages"][0]["role"] == "system" and first["messages"][-1]["content"] == "What is 25 + 17?"
    # The tool's real result went back to the model, tied to the call id.
    assert second["messages"][-1] == {"role": "tool", "content": "42", "tool_call_id": "call_1"}
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "calculator"


async def test_the_api_key_never_enters_the_history(fake, provider_chat):
    fake.replies += [completion("Hi there.")]
    await provider_chat.send("hello")
    history = await provider_chat.handle.fetch_history()
    assert SECRET not in history.to_json()


async def test_a_rejected_key_fails_fast_and_is_not_leaked(fake, provider_chat):
    fake.replies += [error(401, f"Incorrect API key provided: {SECRET}")]
    reply = await provider_chat.send("hello")
    assert reply.error and "refused" in reply.text and "AuthenticationError" in reply.text
    assert len(fake.requests) == 1  # non-retryable: no second attempt
    history = await provider_chat.handle.fetch_history()
    assert SECRET not in history.to_json() and SECRET not in reply.text and "***" in reply.text


@pytest.mark.parametrize("bad_reply, expected", [
    (completion(tool_calls=[tool_call("calculator", "{not json")]), "not a JSON object"),
    (completion(tool_calls=[tool_call("calculator", '["25 + 17"]')]), "not a JSON object"),
    (completion(tool_calls=[tool_call("delete_files", '{"path": "/"}')]), "tool that does not exist: 'delete_files'"),
    (completion(""), "neither text nor a tool call"),
])
async def test_bad_model_output_gets_a_clear_reply_without_retries(fake, provider_chat, bad_reply, expected):
    fake.replies += [bad_reply]
    reply = await provider_chat.send("What is 25 + 17?")
    assert expected in reply.text and reply.error == reply.text
    assert len(fake.requests) == 1
    # Nothing is lost: the message and the explanation are in the history, and the chat goes on.
    assert "What is 25 + 17?" in await history_text(provider_chat)
    fake.replies += [completion("Recovered.")]
    assert (await provider_chat.send("again")).text == "Recovered."


async def test_outage_is_retried_until_the_model_answers(fake, provider_chat):
    fake.replies += [error(503, "overloaded"), error(429, "slow down"), completion("Back again.")]
    reply, backoffs = await watch_backoffs(provider_chat.handle, provider_chat.send("hello"))
    assert reply.text == "Back again." and reply.error is None
    assert len(fake.requests) == 3
    # The back-off before each retry, as the server applied it (PLAN_ACTIVITY: 1 s, doubling): read from the
    # server while the turn waited, not timed on this machine's clock.
    assert backoffs == {("1", 2): 1.0, ("1", 3): 2.0}


async def test_message_while_the_agent_is_busy(fake, provider_chat):
    slow = completion("Slow answer.").held()  # the model call stays in flight until released below
    fake.replies += [slow, completion("Next.")]
    first = asyncio.create_task(provider_chat.send("first"))
    while not fake.held:  # the first turn is in the model call
        await asyncio.sleep(0.02)
    with pytest.raises(ChatError, match="still working on the previous message"):
        await provider_chat.send("second")
    assert (await provider_chat.status()).describe() == "thinking"
    assert not first.done()
    slow.release()
    assert (await first).text == "Slow answer."
    assert (await provider_chat.send("third")).text == "Next."
    assert [m.content for m in await provider_chat.history() if m.role == "user"] == ["first", "third"]


async def test_step_limit_is_reported(temporal, task_queue, fake):
    from durable_agent.workflow import ChatInput

    activities = AgentActivities(LLMConfig(model="openai/fake-model", api_base=fake.base_url))
    worker = await start_worker(temporal.client, task_queue=task_queue, activities=activities)
    try:
        chat = await start_chat(temporal.client, task_queue=task_queue, input=ChatInput(max_steps_per_turn=2))
        fake.replies += [completion(tool_calls=[tool_call("calculator", '{"expression": "1 + 1"}', f"c{i}")])
                         for i in range(2)]
        reply = await chat.send("loop forever")
        assert reply.text.startswith("I stopped after 2 steps") and reply.tools_used == ["calculator"] * 2
    finally:
        await worker.stop()


async def test_a_429_with_retry_after_waits_what_the_provider_asked(fake, provider_chat):
    # The policy alone would wait 1 s, then 2 s; the provider asks for 2 s (longer), then 1 s (shorter).
    fake.replies += [error(429, "slow down", {"Retry-After": "2"}), error(429, "soon", {"Retry-After": "1"}),
                     completion("Back again.")]
    reply, backoffs = await watch_backoffs(provider_chat.handle, provider_chat.send("hello"))
    assert reply.text == "Back again." and len(fake.requests) == 3
    # Read from the server's description of the pending activity, as it applied them.
    assert backoffs == {("1", 2): 2.0, ("1", 3): 1.0}
    # Without the header the policy's back-off applies, as before (test_outage_is_retried_until_the_model_answers).
