"""The chat box's logic, driven through its widgets (no browser), against the real embedded server.

A test types into `box.text`, clicks `box.send_button` (its real click handlers run), then awaits the
background task. The slow model of the status test is the local OpenAI-protocol server holding its reply
until the test releases it: nothing depends on how fast this machine is.
"""

from __future__ import annotations

import asyncio
import html

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RetryConfig

from durable_course.chat import ChatBox, chat_box
from durable_agent.server import Temporal, start_temporal
from durable_agent.session import start_chat
from durable_agent.tools import TOOLS, Tool, tool
from durable_agent.worker import start_worker
from durable_agent.workflow import MAX_MESSAGE_CHARS
from fake_openai import FAKE_API_KEY, completion, error, tool_call
from server_state import until_a_workflow_task_waits

TURN_42 = [("user", "What is 25 + 17?"), ("tool", "→ calculator(expression='25 + 17')"), ("tool", "← 42"),
           ("agent", "25 + 17 = 42.")]


def kinds(box: ChatBox) -> list[str]:
    return [kind for kind, _ in box.entries]


async def type_and_send(box: ChatBox, text: str) -> None:
    box.text.value = text
    box.send_button.click()  # runs the button's real on_click handlers
    await box.wait()


async def test_send_shows_the_turn_as_temporal_recorded_it(temporal, chat):
    with_ui = Temporal(temporal.client, temporal.address, temporal.namespace, ui_url="http://127.0.0.1:8233")
    box = await chat_box(chat, with_ui)
    assert box.entries == [] and "idle" in box.status.value
    assert f'href="http://127.0.0.1:8233/namespaces/default/workflows/{chat.workflow_id}"' in box.header.value

    box.text.value = "What is 25 + 17?"
    box.send_button.click()
    # The click returned before the agent answered: the message is sent by a background task.
    assert box.text.value == "" and "agent" not in kinds(box)
    await box.wait()
    assert box.entries == TURN_42
    assert "idle" in box.status.value and not box.text.disabled
    bubbles = box.messages.children
    assert len(bubbles) == 4 and "durable-chat-user" in bubbles[0]._dom_classes
    assert "25 + 17 = 42." in bubbles[-1].value and "durable-chat-agent" in bubbles[-1]._dom_classes
    assert repr(box) == f"ChatBox(workflow {chat.workflow_id})"
    assert box._repr_mimebundle_()["text/plain"] == repr(box)
    assert "Agent: 25 + 17 = 42." in box.transcript()


async def test_text_is_escaped_and_blank_input_is_not_sent(chat):
    box = await chat_box(chat)
    await type_and_send(box, "   ")
    assert box.entries == []
    await type_and_send(box, "<script>alert(1)</script> what is 2 + 2?")
    user_bubble = box.messages.children[0].value
    assert "<script>" not in user_bubble and "&lt;script&gt;alert(1)&lt;/script&gt;" in user_bubble
    assert box.entries[-1] == ("agent", "2 + 2 = 4.")


async def test_reopening_a_chat_by_id_shows_its_history(temporal, chat):
    first = await chat_box(chat)
    await type_and_send(first, "What is 25 + 17?")
    await chat.send("What's the weather in Seattle?")  # sent by another client: the box did not see it
    reopened = await chat_box(chat.workflow_id, temporal)
    assert reopened.entries[:4] == TURN_42
    assert [k for k, _ in reopened.entries[4:]] == ["user", "tool", "tool", "agent"]
    assert "Seattle" in reopened.entries[-1][1]
    assert reopened.entries == (await chat_box(chat.handle)).entries


async def test_errors_appear_in_the_chat(temporal, chat):
    box = await chat_box(chat)
    await type_and_send(box, "x" * (MAX_MESSAGE_CHARS + 1))
    assert box.entries[-1] == ("error", f"the message is {MAX_MESSAGE_CHARS + 1} characters long; "
                                        f"the limit is {MAX_MESSAGE_CHARS}")
    assert "idle" in box.status.value  # refused before it reached the agent: nothing changed
    await chat.end()  # ended by someone else
    await type_and_send(box, "What is 1 + 1?")
    assert box.entries[-3:-1] == [("user", "What is 1 + 1?"),
                                  ("error", "the chat has ended (or does not exist); start a new chat")]
    assert box.entries[-1] == ("info", "This chat has ended. Its history stays in Temporal.")
    assert "ended" in box.status.value and box.text.disabled and box.send_button.disabled
    # Reopened later, the ended chat shows its (empty) history and stays closed for input.
    again = await chat_box(chat.workflow_id, temporal)
    assert again.entries == [("info", "This chat has ended. Its history stays in Temporal.")]
    assert again.text.disabled


async def test_end_chat_button_completes_the_workflow(chat):
    box = await chat_box(chat)
    await type_and_send(box, "What is 6 * 7?")
    box.end_button.click()
    await box.wait()
    assert box.entries[-1] == ("info", "Chat ended after 1 turn(s). Its history stays in Temporal.")
    assert box.text.disabled and box.end_button.disabled and "ended" in box.status.value
    assert (await chat.handle.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_goodbye_ends_the_chat_from_the_agent_side(chat):
    box = await chat_box(chat)
    await type_and_send(box, "Goodbye!")
    assert box.entries[-1] == ("info", "The agent ended the chat.") and box.text.disabled


async def test_bad_arguments_get_clear_errors(temporal):
    with pytest.raises(ValueError, match="the workflow id is empty"):
        await chat_box("  ", temporal)
    with pytest.raises(ValueError, match="also give the Temporal server"):
        await chat_box("chat-12345678")
    with pytest.raises(TypeError, match="not int"):
        await chat_box(42)
    missing = await chat_box("chat-doesnotexist", temporal)
    assert missing.entries == [("error", "there is no chat chat-doesnotexist on this Temporal server")]


async def test_status_while_a_turn_is_in_flight_and_a_busy_agent(fake, provider_chat):
    slow_plan = completion(tool_calls=[tool_call("calculator", '{"expression": "25 + 17"}')]).held()
    fake.replies += [slow_plan, completion("25 + 17 is 42.")]  # the model "thinks" until released below
    box = await chat_box(provider_chat, poll_seconds=0.05)
    box.text.value = "What is 25 + 17?"
    box.send_button.click()
    while "thinking" not in box.status.value:  # the poller shows the workflow's status query
        await asyncio.sleep(0.01)
    # While the agent thinks, a second message is refused by the workflow and shown as an error.
    await box.send("And 1 + 1?")
    assert box.entries[-1] == ("error", "the agent is still working on the previous message; "
                                        "send this one when it has replied")
    assert fake.held == [slow_plan] and len(fake.requests) == 1  # the first model call is still in flight
    slow_plan.release()
    await box.wait()
    assert box.entries == [("user", "What is 25 + 17?"), ("user", "And 1 + 1?"),
                           ("error", "the agent is still working on the previous message; "
                                     "send this one when it has replied"),
                           ("tool", "→ calculator(expression='25 + 17')"), ("tool", "← 42"),
                           ("agent", "25 + 17 is 42.")]
    assert "idle" in box.status.value and not box.text.disabled
    assert [m.content for m in await provider_chat.history() if m.role == "user"] == ["What is 25 + 17?"]


async def test_a_failed_turn_is_shown_as_an_error(fake, provider_chat):
    fake.replies += [error(401, "invalid api key")]
    box = await chat_box(provider_chat)
    await type_and_send(box, "What is 25 + 17?")
    kind, text = box.entries[-1]
    assert kind == "error" and text.startswith("The model could not plan the next step")
    assert FAKE_API_KEY not in box.transcript()


async def test_server_gone_is_reported_in_the_chat():
    temporal = await start_temporal(ui=False)
    worker = await start_worker(temporal.client, task_queue="server-gone")
    try:
        # A client of its own that gives up on an unreachable server after about a second (the default
        # retries for ten), so the test is quick; the box gets the same error either way.
        client = await Client.connect(temporal.address, retry_config=RetryConfig(max_elapsed_time_millis=1000))
        session = await start_chat(client, task_queue="server-gone")
        session.patience = 2.0  # retry through the outage for 2 s only (the default is 30 s)
        box = await chat_box(session)
        await type_and_send(box, "What is 2 + 3?")
        assert box.entries[-1] == ("agent", "2 + 3 = 5.")
        await worker.stop()
    finally:
        await temporal.shutdown()
    await type_and_send(box, "What is 3 + 4?")
    kind, text = box.entries[-1]
    assert kind == "error" and text.startswith("the Temporal server is unreachable"), text
    assert "may have been accepted" in text and "will not run twice" in text
    assert not box.text.disabled  # nothing is lost: the user can retry once the server is back


async def test_a_message_waits_for_a_worker_and_then_gets_its_reply(temporal, task_queue, worker, chat):
    box = await chat_box(chat)
    await worker.stop()
    box.text.value = "What is 6 * 7?"
    box.send_button.click()
    await until_a_workflow_task_waits(chat.handle)  # the message reached the server; no worker takes it
    assert box.entries == [("user", "What is 6 * 7?")] and "waiting for the agent" in box.status.value
    replacement = await start_worker(temporal.client, task_queue=task_queue)
    try:
        await box.wait()
    finally:
        await replacement.stop()
    assert box.entries[-1] == ("agent", "6 * 7 = 42.") and "idle" in box.status.value


async def test_a_message_resent_from_the_box_runs_once(temporal, task_queue, worker, chat):
    box = await chat_box(chat)
    await worker.stop()
    chat.patience = 1.0  # no worker: give up waiting after a second
    await type_and_send(box, "What is 6 * 7?")
    kind, text = box.entries[-1]
    assert kind == "error" and "will not run twice" in text, text
    restarted = await start_worker(temporal.client, task_queue=task_queue)
    try:
        await type_and_send(box, "What is 6 * 7?")  # the learner sends it again: the same message id
        assert box.entries[-1] == ("agent", "6 * 7 = 42.")
        assert [m.content for m in await chat.history() if m.role == "user"] == ["What is 6 * 7?"]
        assert (await chat.status()).turns == 1
    finally:
        await restarted.stop()


async def test_the_box_follows_a_chat_across_continue_as_new(temporal, task_queue, worker):
    from durable_agent.workflow import ChatInput

    session = await start_chat(temporal.client, task_queue=task_queue, input=ChatInput(events_per_run=40, context_turns=2))
    for n in range(1, 6):
        await session.send(f"What is {n} + {n}?")
    assert (await session.handle.describe()).run_id != session.handle.first_execution_run_id
    box = await chat_box(session.workflow_id, temporal)  # opened again later, by the chat's id
    assert box.entries[0][0] == "info" and "The user asked: What is 1 + 1?" in box.entries[0][1]
    await type_and_send(box, "What is 6 + 6?")
    assert box.entries[-1] == ("agent", "6 + 6 = 12.")
    assert (await session.status()).turns == 6


def intro_text(box: ChatBox) -> str:
    return box.intro.children[0].value


async def test_before_the_first_message_the_box_says_what_the_agent_can_do(chat):
    box = await chat_box(chat)
    assert box.intro.layout.display != "none" and "durable-chat-intro" in box.intro._dom_classes
    text = intro_text(box)
    for registered in TOOLS.values():  # every tool of the agent's registry, with its description
        assert f"<code>{registered.name}</code>: {html.escape(registered.description)}" in text
    assert f"This agent can use {len(TOOLS)} tools:" in text and "Say goodbye (or click <b>End chat</b>)" in text
    examples = [b.description for b in box.example_buttons]
    assert examples == [e for t in TOOLS.values() for e in t.examples] and "What is 25 + 17?" in examples
    # An example is a button that sends its question; then the conversation replaces the introduction.
    [ask_sum] = [b for b in box.example_buttons if b.description == "What is 25 + 17?"]
    ask_sum.click()
    await box.wait()
    assert box.entries == TURN_42 and box.intro.layout.display == "none"
    assert (await chat_box(chat)).intro.layout.display == "none"  # reopened with a history: no introduction


async def test_the_introduction_comes_from_the_registry_not_from_the_box(monkeypatch, chat):
    monkeypatch.setitem(TOOLS, "shout", Tool("shout", "Shout a <word>.", {"properties": {"word": {}}},
                                             lambda word: word.upper(), ("Shout 'hello'",)))
    box = await chat_box(chat)
    assert "<code>shout</code>: Shout a &lt;word&gt;." in intro_text(box)  # escaped, as every text in the box
    assert box.example_buttons[-1].description == "Shout 'hello'"
    monkeypatch.setattr("durable_agent.tools.TOOLS", {})
    bare = await chat_box(chat)
    assert "This agent has no tools" in intro_text(bare) and bare.example_buttons == []


async def test_examples_are_closed_with_the_chat(chat):
    box = await chat_box(chat)
    await type_and_send(box, "Goodbye!")
    assert all(b.disabled for b in box.example_buttons) and box.example_buttons


def test_examples_must_be_a_list_of_questions():
    with pytest.raises(TypeError, match="examples is a list of questions, not one string"):
        tool("Shout a word.", examples="Shout 'hello'", word="the word")
