"""Several agents (durable_agent/agents.py, notebook 09): a triage agent whose specialists are child workflows,
against the real embedded Temporal server, workers in process and as processes."""

from __future__ import annotations

import pytest

from durable_agent import llm
from durable_agent.agents import SpecialistInput, SpecialistWorkflow, agents_plugin, start_triage_chat
from durable_agent.worker import start_worker
from durable_course.agents_lab import AgentsLab
from durable_course.faults import fault_lab_plugin
from durable_course.history import history_table, history_tree


@pytest.fixture
async def agents_worker(temporal, task_queue):
    running = await start_worker(temporal.client, task_queue=task_queue, plugins=[agents_plugin(), fault_lab_plugin()])
    yield running
    await running.stop()


def kinds(history, prefix: str) -> list[str]:
    from durable_course.events import read

    return [e.kind for e in read(history) if e.kind.startswith(prefix) or prefix in e.kind]


async def test_specialists_answer_as_tools_each_a_child_with_its_own_history(temporal, task_queue, agents_worker):
    chat = await start_triage_chat(temporal.client, task_queue=task_queue)
    reply = await chat.send("What is 25 + 17?")
    assert reply.text == "ask_math_specialist: 25 + 17 = 42." and reply.tools_used == ["ask_math_specialist"]
    reply = await chat.send("What's the weather in Paris?")
    assert reply.text.startswith("ask_weather_specialist: The weather in Paris:")
    tree = await history_tree(chat)
    assert tree.workflow_type == "TriageWorkflow" and tree.outcome == "running"
    assert set(tree.activities) == {"plan_next_action"}  # the triage agent runs no tool itself
    assert [(c.workflow_id, c.workflow_type, c.outcome) for c in tree.children] == [
        (f"{chat.workflow_id}-math-1", "SpecialistWorkflow", "completed"),
        (f"{chat.workflow_id}-weather-2", "SpecialistWorkflow", "completed")]
    assert tree.children[0].activities == ["plan_next_action", "execute_tool", "plan_next_action"]
    assert f"└── {chat.workflow_id}-weather-2  SpecialistWorkflow  completed" in str(tree)
    table = str(await history_table(chat))
    assert f"child {chat.workflow_id}-math-1 answered: '25 + 17 = 42.'" in table


async def test_a_handoff_sends_the_next_messages_to_the_specialist_until_back_to_triage(temporal, task_queue,
                                                                                     agents_worker):
    chat = await start_triage_chat(temporal.client, task_queue=task_queue)
    reply = await chat.send("Please transfer me to the weather specialist.")
    assert reply.text == "transfer_to_specialist: you are now talking to the weather specialist."
    assert await chat.handle.query("active_specialist") == "weather"
    reply = await chat.send("What's the weather in Oslo?")
    assert reply.text.startswith("[weather specialist] The weather in Oslo:") and reply.tools_used == ["weather"]
    reply = await chat.send("What is 2 + 2?")  # the weather specialist has no calculator
    assert reply.text == "[weather specialist] I could not calculate 2 + 2: the weather specialist has no calculator tool."
    assert (await chat.send("Back to triage")).text == "You are back with the triage agent."
    assert (await chat.send("What is 3 * 3?")).text == "ask_math_specialist: 3 * 3 = 9."
    tree = await history_tree(chat)
    assert [c.workflow_id.rsplit("-", 2)[1] for c in tree.children] == ["weather", "weather", "math"]


async def test_a_handed_over_specialist_gets_the_conversation(temporal, task_queue, agents_worker):
    chat = await start_triage_chat(temporal.client, task_queue=task_queue)
    await chat.send("What is 25 + 17?")
    await chat.send("Transfer me to the math specialist")
    await chat.send("What is 1 + 1?")
    child = temporal.client.get_workflow_handle(f"{chat.workflow_id}-math-2")
    history = await child.fetch_history()
    from durable_course.events import decode, read

    started = next(e for e in read(history) if e.kind == "WorkflowExecutionStarted")
    handed = decode(started.details.input.payloads, SpecialistInput)
    assert handed.question == "What is 1 + 1?"
    assert [m.content for m in handed.conversation if m.role == "user"] == ["What is 25 + 17?",
                                                                           "Transfer me to the math specialist"]


def test_the_triage_model_is_offered_only_agents():
    with llm.offline_triggers({}, builtins=False):
        assert llm.extract_tool_calls("What is 25 + 17 and the weather in Paris?") == []
    assert llm.extract_tool_calls("What is 25 + 17?") == [("calculator", {"expression": "25 + 17"})]


async def test_an_unknown_specialist_fails_the_child_with_a_clear_error(temporal, task_queue, agents_worker):
    from temporalio.client import WorkflowFailureError

    handle = await temporal.client.start_workflow(SpecialistWorkflow.run, SpecialistInput("poetry", "a haiku"),
                                                  id=f"{task_queue}-poetry", task_queue=task_queue)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert "there is no 'poetry' specialist (there are: math, weather)" in str(failed.value.cause)


async def test_a_crashed_specialist_is_a_longer_wait_for_the_parent(temporal):
    lab = AgentsLab(temporal)
    try:
        report = await lab.crash_specialist_mid_turn()
    finally:
        await lab.close()
    assert report.reply == "ask_math_specialist: 25 + 17 = 42."
    assert report.parent_saw == ["StartChildWorkflowExecutionInitiated", "ChildWorkflowExecutionStarted",
                                 "ChildWorkflowExecutionCompleted"]
    tool = next(r for r in report.child_runs if r.activity == "execute_tool")
    assert (tool.starts, tool.outcome, tool.attempt) == (2, "completed", 2)
    assert all(r.starts == 1 for r in report.child_runs if r.activity == "plan_next_action")


async def test_a_cancelled_specialist_is_an_event_the_parent_answers(temporal):
    lab = AgentsLab(temporal)
    try:
        report = await lab.cancel_specialist()
    finally:
        await lab.close()
    assert report.reply == (f"ask_weather_specialist: Error: the weather specialist ({report.child_id}) was "
                            "cancelled.")
    assert report.parent_saw[-1] == "ChildWorkflowExecutionCanceled" and report.child_outcome == "canceled"
    assert "execute_tool" in [r.activity for r in report.child_runs]
