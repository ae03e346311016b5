"""Tools from an MCP server (durable_agent/mcp_tools.py, notebook 08): real MCP server processes over stdio
(durable_course/mcp_server.py), a real embedded Temporal server, workers in process and as processes."""

from __future__ import annotations

import re

import pytest

from durable_agent import llm
from durable_agent.activities import parse_reply
from durable_agent.mcp_tools import McpServer, McpTool, call_key, demo_server, mcp_plugin, start_mcp_chat
from durable_agent.worker import start_worker
from durable_course.faults import fault_lab_plugin
from durable_course.mcp_lab import McpLab, notes_saved
from durable_course.mcp_server import ToolInputError, convert


def scheduled(history) -> list[str]:
    return [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")]


@pytest.fixture
async def mcp_worker(temporal, task_queue):
    running = await start_worker(temporal.client, task_queue=task_queue, plugins=[mcp_plugin(), fault_lab_plugin()])
    yield running
    await running.stop()


async def test_the_agent_lists_the_servers_tools_once_and_calls_each_as_an_activity(temporal, task_queue,
                                                                                    mcp_worker, tmp_path):
    notes = tmp_path / "notes.jsonl"
    chat = await start_mcp_chat(temporal.client, demo_server(str(notes)), task_queue=task_queue)
    reply = await chat.send("Please convert 10 km to mi")
    assert reply.text == "convert_units: 10 km = 6.21 mi." and reply.tools_used == ["convert_units"]
    reply = await chat.send("Note: buy milk")
    assert reply.text == "add_note: saved note #1: buy milk."
    reply = await chat.send("What are my notes? And what is 2 + 3?")
    assert reply.text == "list_notes: #1 buy milk. 2 + 3 = 5."
    assert reply.tools_used == ["list_notes", "calculator"]
    assert notes_saved(notes, "buy milk") == 1
    activities = scheduled(await chat.handle.fetch_history())
    assert activities.count("list_mcp_tools") == 1  # once per run, not per turn
    assert activities.count("call_mcp_tool") == 3 and activities.count("execute_tool") == 1
    listed = await chat.handle.query("mcp_tools")
    assert [t["name"] for t in listed] == ["add_note", "list_notes", "convert_units"]


def test_the_model_never_sees_the_idempotency_key_and_each_call_has_its_own():
    tool = McpTool("add_note", "Save a note.", {"type": "object", "required": ["text"], "properties": {
        "text": {"type": "string"}, "idempotency_key": {"type": "string"}}}, idempotent=False)
    spec = tool.spec()
    assert tool.takes_key and list(spec.parameters["properties"]) == ["text"]
    assert "idempotency_key" in tool.parameters["properties"]  # the listing itself is left as it was

    class Info:
        workflow_id, workflow_run_id, activity_id = "chat-1", "run-1", "7"

    assert call_key(Info()) == "chat-1/run-1/7"  # no attempt number in it: every retry sends the same key


def test_tools_offered_for_one_request_do_not_stay_taught():
    with llm.offline_triggers({"convert_units": r"convert (?P<value>\d+) (?P<from_unit>\w+) to (?P<to_unit>\w+)"}):
        assert llm.extract_tool_calls("convert 3 kg to lb") == [
            ("convert_units", {"value": "3", "from_unit": "kg", "to_unit": "lb"})]
    assert llm.extract_tool_calls("convert 3 kg to lb") == []
    message = {"tool_calls": [{"id": "c", "function": {"name": "convert_units", "arguments": "{}"}}]}
    with pytest.raises(Exception, match="does not exist"):
        parse_reply(message, "m")
    assert parse_reply(message, "m", ("convert_units",)).tool_calls[0].name == "convert_units"


def test_the_converter_and_the_server_command_say_what_they_mean():
    assert convert(100, "F", "C") == "100 F = 37.78 C"
    assert convert(1, "mi", "km") == "1 mi = 1.61 km"
    with pytest.raises(ToolInputError, match="cannot convert km \\(length\\) to kg \\(mass\\)"):
        convert(1, "km", "kg")
    with pytest.raises(ToolInputError, match="unknown unit 'parsec'"):
        convert(1, "parsec", "km")
    server = McpServer("/some/where/bin/python", ["-m", "srv", "--notes", "/tmp/x/notes.jsonl"])
    assert server.describe() == "python -m srv --notes notes.jsonl"


async def test_a_killed_server_mid_call_is_retried_and_at_least_once_is_real(temporal, tmp_path):
    lab = McpLab(temporal, tmp_path)
    try:
        unsafe = await lab.kill_server_mid_call(keys=False, note="buy milk")
        assert unsafe.reply == "add_note: saved note #2: buy milk."  # note #1 holds the same text
        assert unsafe.saved == 2  # written by the killed attempt and again by its retry
        call = next(r for r in unsafe.runs if r.activity == "call_mcp_tool")
        assert (call.starts, call.outcome, call.attempt) == (2, "completed", 2)
        safe = await lab.kill_server_mid_call(keys=True, note="buy bread")
        assert safe.saved == 1 and "was already saved: buy bread" in safe.reply
        call = next(r for r in safe.runs if r.activity == "call_mcp_tool")
        assert (call.starts, call.attempt) == (2, 2)
        assert "at least once" in str(unsafe) and "same idempotency key" in str(safe)
    finally:
        await lab.close()


async def test_a_killed_worker_mid_call_costs_one_retry_and_no_second_note(temporal, tmp_path):
    lab = McpLab(temporal, tmp_path)
    try:
        report = await lab.kill_worker_mid_call(keys=True, note="call the plumber")
        assert report.saved == 1 and report.reply == "add_note: note #1 was already saved: call the plumber."
        call = next(r for r in report.runs if r.activity == "call_mcp_tool")
        assert (call.starts, call.outcome, call.attempt) == (2, "completed", 2)
        assert all(r.starts == 1 for r in report.runs if r.activity == "plan_next_action")
    finally:
        await lab.close()


@pytest.mark.parametrize("fail, expected", [
    ("crash", r"^I cannot use the MCP server's tools: the MCP server `python -m durable_course\.mcp_server --notes "
              r"notes\.jsonl --fail crash` could not be started: .*; it said: course-notes: cannot open the notes "
              r"database \(a simulated crash at start\)$"),
    ("bad-schema", r"^I cannot use the MCP server's tools: the MCP server `.*--fail bad-schema` answered with an "
                   r"error: .*invalid result"),
    ("tool-error", r"^convert_units: Error: the MCP server reported: Error executing tool convert_units\.$"),
])
async def test_a_broken_server_gives_a_clear_error_at_once(temporal, task_queue, mcp_worker, tmp_path, fail,
                                                           expected):
    chat = await start_mcp_chat(temporal.client, demo_server(str(tmp_path / "notes.jsonl"), "--fail", fail),
                                task_queue=task_queue)
    reply = await chat.send("Convert 3 kg to lb")
    assert re.match(expected, reply.text), reply.text
    history = await chat.handle.fetch_history()
    starts = [e.activity_task_started_event_attributes.attempt for e in history.events
              if e.HasField("activity_task_started_event_attributes")]
    assert max(starts) == 1  # not retried: a server that cannot start, or says no, will not change its mind
    if fail != "tool-error":
        assert reply.error and "call_mcp_tool" not in scheduled(history)
        reply = await chat.send("Convert 3 kg to lb")  # the chat lives on; the next message tries again
        assert scheduled(await chat.handle.fetch_history()).count("list_mcp_tools") == 2
