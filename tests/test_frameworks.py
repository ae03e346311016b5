"""Notebook 10: the course's agent written with the OpenAI Agents SDK and with Pydantic AI, on Temporal.

Real embedded Temporal server, real framework integrations, the course's offline model through LiteLLM;
the crash tests SIGKILL real worker processes mid-activity and start new ones."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from durable_agent.llm import offline_reply
from durable_course.frameworks import comparison
from durable_course.frameworks import worker as fw
from durable_course.frameworks.lab import MODEL_ACTIVITY, TOOL_ACTIVITY, WORKFLOW_TYPES, FrameworkLab
from durable_course.history import history_events, history_table

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORK_MODULES = ("durable_course.frameworks", "agents", "pydantic_ai", "temporalio.openai_agents",
                     "temporalio.contrib.openai_agents")
TWO_TOOLS = "What's the weather in Paris and what is 2 ** 10?"


def course_answer(question: str) -> str:
    """What the course's own agent answers (its offline model, with the tools' real results)."""
    from durable_agent.tools import ToolInputError, run_tool

    messages = [{"role": "user", "content": question}]
    while True:
        reply = offline_reply(messages)
        if not reply.get("tool_calls"):
            return reply["content"]
        messages.append(reply)
        for call in reply["tool_calls"]:
            try:
                result = run_tool(call["function"]["name"], json.loads(call["function"]["arguments"]))
            except ToolInputError as err:  # as the course's execute_tool activity answers it
                result = f"Error: {err}"
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})


def test_the_agent_imports_no_framework():
    """Neither in its source (any import, at any depth) nor once loaded in a fresh interpreter."""
    for path in sorted((ROOT / "durable_agent").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("durable_course", "agents", "pydantic_ai")), f"{path.name} imports {name}"
    code = ("import sys, durable_agent.worker, durable_agent.workflow, durable_agent.cli, durable_course.frameworks; "
            f"print(sorted(m for m in sys.modules if m.startswith({FRAMEWORK_MODULES[1:]!r})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"  # importing the course's frameworks package imports no framework


async def run_turn(temporal, name: str, question: str):
    client = await fw.connect(name, temporal.address)
    queue = f"test-{uuid.uuid4().hex[:8]}"
    async with fw.create_worker(client, name, queue):
        handle = await temporal.client.start_workflow(WORKFLOW_TYPES[name], question,
                                                      id=f"{name}-{uuid.uuid4().hex[:8]}", task_queue=queue)
        return await handle.result(), handle


@pytest.mark.parametrize("name", ["openai-agents", "pydantic-ai"])
async def test_a_framework_agent_answers_as_the_course_agent_with_a_model_and_a_tool_activity_each_step(temporal, name):
    answer, handle = await run_turn(temporal, name, TWO_TOOLS)
    assert answer == course_answer(TWO_TOOLS) == "The weather in Paris: foggy, -1°C (simulated). 2 ** 10 = 1024."
    events = await history_events(handle)
    scheduled = [e.activity for e in events if e.kind == "ActivityTaskScheduled"]
    model, tool = MODEL_ACTIVITY[name], TOOL_ACTIVITY[name]
    weather = "weather" if name == "openai-agents" else tool  # one activity type per tool, or per toolset
    assert scheduled == [model, weather, model, tool, model]  # the offline model asks for one tool per step
    # The history views read the frameworks' payloads: the tool calls, their results, the answer.
    summaries = [e.summary for e in events if e.kind in ("ActivityTaskScheduled", "ActivityTaskCompleted")]
    assert "tool calls: weather(city='Paris')" in summaries
    assert "tool calls: calculator(expression='2 ** 10')" in summaries
    assert "1024" in summaries and "Paris: foggy, -1°C (simulated)" in summaries
    assert summaries[-1].startswith("answer: 'The weather in Paris: foggy, -1°C (simulated). 2 ** 10")
    table = str(await history_table(handle))
    assert f"started with {TWO_TOOLS!r}" in table and "result: 'The weather in Paris" in table
    # The side-by-side table names the activities this framework really scheduled.
    column = 2 if name == "openai-agents" else 3
    text = " ".join(row[column] for row in comparison().rows)
    assert all(activity in text for activity in set(scheduled)), (set(scheduled), text)


async def test_a_tool_that_refuses_its_input_answers_with_the_reason(temporal):
    answer, _ = await run_turn(temporal, "pydantic-ai", "What is 1 / 0?")
    assert answer == course_answer("What is 1 / 0?") == "I could not calculate 1 / 0: division by zero."


async def test_a_sigkilled_worker_loses_nothing_and_reruns_only_the_interrupted_activity(temporal):
    """One process runs both frameworks' workers; one SIGKILL lands inside an activity of each."""
    lab = await FrameworkLab.start(temporal)
    try:
        for during, interrupted in (("tool", TOOL_ACTIVITY), ("model", MODEL_ACTIVITY)):
            victim = lab.worker.pid
            crashes = await lab.crash_mid_turn(during)
            assert [c.framework for c in crashes] == ["openai-agents", "pydantic-ai"]
            with pytest.raises(ProcessLookupError):
                os.kill(victim, 0)  # really dead (and reaped)
            for crash in crashes:
                name = crash.framework
                assert crash.answer == "25 + 17 = 42."
                assert crash.killed_pid == victim and crash.new_pid == lab.worker.pid != victim
                assert [(r.activity, r.outcome) for r in crash.runs] == [
                    (MODEL_ACTIVITY[name], "completed"), (TOOL_ACTIVITY[name], "completed"),
                    (MODEL_ACTIVITY[name], "completed")]
                assert crash.interrupted is not None and crash.interrupted.activity == interrupted[name]
                assert crash.interrupted.starts >= 2 and crash.interrupted.attempt >= 2
                assert crash.rerun_completed == []
                before = 1 if during == "tool" else 2  # activities completed before the kill ran exactly once
                assert len(crash.completed_before_kill) == before
                assert all(r.starts == 1 for r in crash.runs if r.activity_id in crash.completed_before_kill)
                assert "Completed activities executed twice: none" in str(crash)
    finally:
        await lab.stop()
    assert not lab.faults.path.exists()


async def test_bad_input_gets_a_clear_error(temporal):
    with pytest.raises(ValueError, match="unknown framework 'langchain'; choose one of openai-agents, pydantic-ai"):
        await fw.start_worker_process(["pydantic-ai", "langchain"], temporal.address)
    with pytest.raises(ValueError, match=r"give a list of framework names, e.g. \['pydantic-ai'\], not 'pydantic-ai'"):
        await fw.start_worker_process("pydantic-ai", temporal.address)
    lab = FrameworkLab(temporal, faults=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="during must be 'tool' or 'model'"):
        await lab.crash_mid_turn(during="sleep")
    with pytest.raises(ValueError, match="unknown framework"):
        await lab.start_turn("langchain", "hi")
    cli = subprocess.run([sys.executable, "-m", "durable_course.frameworks", "worker", "langchain", "--address",
                          "x"], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert cli.returncode == 2 and "invalid choice: 'langchain'" in cli.stderr


EX9_AGENT = '''
from datetime import timedelta
from temporalio import activity, workflow
with workflow.unsafe.imports_passed_through():
    from agents import Agent, Runner, function_tool
    from temporalio.contrib.openai_agents.workflow import activity_as_tool
    from durable_course.frameworks import tools

{tool}

@workflow.defn(name="{name}")
class WeatherAgentWorkflow:
    @workflow.run
    async def run(self, question: str) -> str:
        agent = Agent(name="Weather agent", instructions=tools.INSTRUCTIONS, tools=[WEATHER_TOOL])
        return str((await Runner.run(agent, question)).final_output)
'''
ASYNC_FUNCTION_TOOL = '''
@function_tool
async def weather(city: str) -> str:
    """Get the current weather for a city (simulated offline data)."""
    return tools.weather(city)

WEATHER_TOOL = weather
ACTIVITIES = []
'''
SLOW_TO_NOTICE = '''
@activity.defn(name="weather")
async def weather(city: str) -> str:
    """Get the current weather for a city (simulated offline data)."""
    return tools.weather(city)

WEATHER_TOOL = activity_as_tool(weather, start_to_close_timeout=timedelta(seconds=60))
ACTIVITIES = [weather]
'''


async def test_exercise_9_catches_a_tool_that_only_looks_right(temporal, tmp_path, monkeypatch, capsys):
    """An async @function_tool answers correctly but is no activity; an activity with only a 60 s timeout
    notices a dead worker after a minute. The check says NOT YET to each, for that reason, from the history."""
    from types import SimpleNamespace

    from durable_course import checks

    monkeypatch.syspath_prepend(str(tmp_path))
    lab = SimpleNamespace(temporal=temporal, client=temporal.client)
    for module_name, tool, expected in [
        ("ex9_async_tool", ASYNC_FUNCTION_TOOL, ["NOT YET", "NOT YET", "PASS"]),
        ("ex9_slow_to_notice", SLOW_TO_NOTICE, ["PASS", "NOT YET", "PASS"]),
    ]:
        (tmp_path / f"{module_name}.py").write_text(EX9_AGENT.format(tool=tool, name=module_name))
        module = __import__(module_name)
        before = len(checks.RESULTS)
        await checks.check_framework_tool(lab, module)
        results = checks.RESULTS[before:]
        assert [r.status for r in results] == expected, [r.report() for r in results]
    out = capsys.readouterr().out
    assert "the history has no activity for the weather tool (activities: invoke_model_activity" in out
    assert "start_to_close_timeout = 60 s: a worker killed mid-call is noticed only after 60 s" in out
