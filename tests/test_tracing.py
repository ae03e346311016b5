"""Traces of a turn (client -> workflow -> activities) with temporalio.contrib.opentelemetry, added from outside
as a client plugin, written to a JSON-lines file."""

from __future__ import annotations

import json

from durable_agent.session import start_chat
from durable_agent.worker import create_worker
from durable_course.tracing import Tracing

TURN = """StartWorkflowUpdate:send_message
  ValidateUpdate:send_message
  HandleUpdate:send_message
    StartActivity:plan_next_action
      RunActivity:plan_next_action
    StartActivity:execute_tool
      RunActivity:execute_tool
    StartActivity:plan_next_action
      RunActivity:plan_next_action"""


async def test_a_turn_is_one_trace_from_the_client_to_the_activities(temporal, task_queue, tmp_path):
    tracing = Tracing.start(tmp_path / "traces.jsonl")
    client = await tracing.client(temporal.address)
    async with create_worker(client, task_queue=task_queue):  # the worker inherits the client's plugin
        chat = await start_chat(client, task_queue=task_queue)
        reply = await chat.send("What is 25 + 17?")
        tree = tracing.tree(trace_of=chat.workflow_id)
        await chat.end()
    assert reply.text == "25 + 17 = 42."
    assert tree == "StartWorkflow:DurableAgentWorkflow\n" + TURN
    # Once the chat ends, the workflow's own span (its whole run) closes too, under StartWorkflow.
    assert "StartWorkflow:DurableAgentWorkflow\n  RunWorkflow:DurableAgentWorkflow" in tracing.tree(chat.workflow_id)
    lines = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    assert {line["name"] for line in lines} >= {"StartWorkflowUpdate:send_message", "RunActivity:execute_tool"}
    update = next(line for line in lines if line["name"] == "StartWorkflowUpdate:send_message")
    in_turn = [line for line in lines if line["context"]["trace_id"] == update["context"]["trace_id"]]
    assert len(in_turn) == len(TURN.splitlines())  # client, workflow and activities: one trace
    assert all(line["attributes"].get("temporalWorkflowID") == chat.workflow_id for line in in_turn)


async def test_without_the_plugin_nothing_is_traced(temporal, task_queue, worker, tmp_path):
    tracing = Tracing.start(tmp_path / "traces.jsonl")
    chat = await start_chat(temporal.client, task_queue=task_queue)
    await chat.send("What is 1 + 1?")
    await chat.end()
    assert tracing.tree(trace_of=chat.workflow_id) == "" and tracing.spans == []
