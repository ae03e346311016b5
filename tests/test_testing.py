"""Testing a durable agent (notebook 11): the time-skipping test server, test doubles under the real activity
names, and saved event histories replayed against the code as it is now (the guard a team runs on every deploy).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.worker import Worker

from durable_agent.approval import ApprovalChatInput, ApprovalChatWorkflow, start_approval_chat
from durable_agent.session import start_chat
from durable_agent.workflow import AgentReply, ChatInput, DurableAgentWorkflow, Transcript
from durable_course.events import replay
from durable_course.testing import (
    HISTORIES, WORKFLOWS, FakeModel, FakeTools, load_histories, main, record_histories, start_time_skipping,
    workflow_class, workflow_type,
)

DAY = 24 * 3600


@pytest.fixture(scope="module")
async def env():
    environment = await start_time_skipping()
    yield environment
    await environment.shutdown()


def activity_types(history) -> list[str]:
    return [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")]


async def approval_turn(env, tools: FakeTools, wait: timedelta, approve: bool) -> tuple[AgentReply, timedelta, list]:
    """A weather question in an approval chat whose timeout is 24 hours; the clock moves on by `wait`, then the
    call is approved (or not). Returns the reply, how far the server's clock moved, and the history."""
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    async with Worker(env.client, task_queue=queue, workflows=[ApprovalChatWorkflow],
                      activities=[FakeModel().activity(), tools.activity()]):
        chat = await start_approval_chat(env.client, task_queue=queue,
                                         input=ApprovalChatInput(approval_timeout_seconds=DAY))
        before = await env.get_current_time()
        turn = asyncio.create_task(chat.send("What's the weather in Paris?"))
        await chat.wait_for_request()
        await env.sleep(wait)
        if approve:
            await chat.approve()
        reply = await turn
        moved = await env.get_current_time() - before
        history = await chat.handle.fetch_history()
        await chat.end()
    return reply, moved, history


async def test_a_24_hour_approval_that_nobody_answers_expires(env):
    tools = FakeTools({"weather": "Paris: 21 C, sunny (fake)"})
    reply, moved, history = await approval_turn(env, tools, timedelta(hours=24), approve=False)
    assert reply.text == ("I could not get the weather for Paris: the user did not approve this call: "
                          "nobody answered within 86400 seconds.")
    assert moved >= timedelta(hours=24)  # a day of the server's time passed (in well under a second of ours)
    assert tools.calls == [] and "execute_tool" not in activity_types(history)
    timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
    assert [t.timer_started_event_attributes.start_to_fire_timeout.ToSeconds() for t in timers] == [DAY]


async def test_approved_after_23_hours_the_fake_tool_runs(env):
    tools = FakeTools({"weather": "Paris: 21 C, sunny (fake)"})
    reply, moved, history = await approval_turn(env, tools, timedelta(hours=23), approve=True)
    assert reply.text == "The weather in Paris: 21 C, sunny (fake)."
    assert timedelta(hours=23) <= moved < timedelta(hours=24)
    assert [(c.name, c.arguments) for c in tools.calls] == [("weather", {"city": "Paris"})]
    assert activity_types(history) == ["plan_next_action", "execute_tool", "plan_next_action"]


async def test_a_scripted_model_and_fake_tools_are_served_under_the_real_names(env):
    model = FakeModel(replies=[
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "calculator", "arguments": json.dumps({"expression": "6 * 7"})}}]},
        {"role": "assistant", "content": "It is 42, says the fake."},
    ])
    tools = FakeTools({"calculator": "42"})
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    async with Worker(env.client, task_queue=queue, workflows=[DurableAgentWorkflow],
                      activities=[model.activity(), tools.activity()]):
        chat = await start_chat(env.client, task_queue=queue)
        reply = await chat.send("anything: the script decides")
        assert (reply.text, reply.tools_used, reply.steps) == ("It is 42, says the fake.", ["calculator"], 2)
        assert [c.arguments for c in tools.calls] == [{"expression": "6 * 7"}]
        # The second model call saw the tool's result: the workflow code ran unchanged between the doubles.
        assert [(m.role, m.content) for m in model.calls[1]][-1] == ("tool", "42")
        assert activity_types(await chat.handle.fetch_history()) == ["plan_next_action", "execute_tool",
                                                                     "plan_next_action"]
        await chat.end()


def test_the_saved_histories_cover_every_chat_workflow():
    histories = load_histories()
    assert {workflow_type(h) for h in histories} == {"DurableAgentWorkflow", "ApprovalChatWorkflow",
                                                     "LongChatWorkflow"}
    assert {h.workflow_id for h in histories} == {p.stem for p in HISTORIES.glob("*.json")}


@pytest.mark.parametrize("history", load_histories(), ids=lambda h: h.workflow_id)
async def test_todays_code_replays_every_saved_history(history):
    report = await replay(history, workflow_class(history))
    assert report.ok, str(report)


@workflow.defn(name="DurableAgentWorkflow", sandboxed=False)
class ModeratedAgent(DurableAgentWorkflow):
    """A change a teammate might ship: a moderation step before every turn. Incompatible with running chats."""

    @workflow.run
    async def run(self, input: ChatInput) -> Transcript:
        return await super().run(input)

    async def before_turn(self, text: str) -> AgentReply | None:
        await workflow.execute_activity("moderate", text, start_to_close_timeout=timedelta(seconds=5))
        return None


async def test_an_incompatible_change_fails_against_the_saved_histories():
    chat = next(h for h in load_histories() if workflow_type(h) == "DurableAgentWorkflow")
    report = await replay(chat, ModeratedAgent)
    assert not report.ok and report.error_type == "NondeterminismError"
    assert "'plan_next_action'" in report.temporal_says and "'moderate'" in report.temporal_says


async def test_the_record_command_writes_histories_that_replay(tmp_path, capsys):
    written = await record_histories(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in HISTORIES.glob("*.json"))
    for history in load_histories(tmp_path):
        assert (await replay(history, workflow_class(history, WORKFLOWS))).ok
    # The same histories' shape as the committed ones: same activities in the same order.
    for fresh, saved in zip(load_histories(tmp_path), load_histories()):
        assert activity_types(fresh) == activity_types(saved)


def test_the_replay_command_exits_1_when_a_history_does_not_replay(tmp_path, capsys):
    saved = HISTORIES / "chat_tools_and_goodbye.json"
    broken = json.loads(saved.read_text())
    for event in broken["events"]:  # the history now says a different activity was scheduled
        attributes = event.get("activityTaskScheduledEventAttributes")
        if attributes:
            attributes["activityType"]["name"] = "moderate"
            break
    (tmp_path / "edited.json").write_text(json.dumps(broken))
    assert main(["replay", "--folder", str(tmp_path)]) == 1
    assert "replay FAILED (NondeterminismError)" in capsys.readouterr().out
    assert main(["replay"]) == 0


# --- exercise 10's check: it reads the server's clock and the saved file, not what the learner's code says ----


async def test_exercise_10_check_catches_an_approval_without_moving_the_clock(tmp_path, capsys):
    from types import SimpleNamespace

    from durable_course import checks
    from durable_course.testing import FakeTools

    async def approve_at_once(env, chat, hours):
        await chat.wait_for_request()
        await chat.approve()

    async def save_nothing_useful(handle, path):
        path.write_text('{"events": []}')

    learner = SimpleNamespace(fake_execute_tool=FakeTools({"weather": "sunny (fake)"}).activity(),
                              approve_after=approve_at_once, save_history=save_nothing_useful)
    await checks.check_testing(None, learner)
    out = capsys.readouterr().out
    assert "PASS     [ex10] the fake tool is served as the agent's execute_tool activity" in out
    assert "hours (server time) after the request, not 23: the clock was not moved on" in out
    assert "the file holds 0 events; the server recorded" in out
