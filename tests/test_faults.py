"""The fault-injection lab (durable_course/faults.py, notebook 05) against the real embedded Temporal server.

Workers are real: a worker process killed with SIGKILL by pid, a worker in this process. The model outage
is the offline model failing through LiteLLM's own exception path, or the local OpenAI-protocol server
answering 503/429. Each test prints its report (with the measured recovery times); nothing is timed.
"""

from __future__ import annotations

import importlib
import os

import pytest
from temporalio.client import WorkflowExecutionStatus

from durable_agent import tools
from durable_agent.activities import AgentActivities
from durable_course.events import replay
from durable_course.faults import (ENV_VAR, FaultLab, Faults, activity_runs, fault_lab_plugin,
                                   server_restart_mid_chat)
from durable_agent.llm import LLMConfig
from durable_agent.session import open_chat, start_chat
from durable_agent.worker import start_worker
from durable_agent.workflow import PLAN_ACTIVITY, TOOL_ACTIVITY, DurableAgentWorkflow
from fake_openai import FakeOpenAI, completion, error, tool_call


@pytest.fixture
def faults(tmp_path, monkeypatch):
    found = Faults.create(tmp_path / "faults", activate=False)
    monkeypatch.setenv(ENV_VAR, str(found.path))  # read at call time by workers in this process
    return found


@pytest.fixture
async def fault_lab(temporal, task_queue, faults, tmp_path):
    lab = FaultLab(temporal, faults, task_queue=task_queue, tools_path=str(tmp_path))
    yield lab
    await lab.close()


def test_switches_count_down_skip_and_reset(faults):
    faults.hang("execute_tool", skip=1, times=2)
    faults.model_outage(times=1, status=429)
    hits = [faults.take("hang", "execute_tool") is not None for _ in range(4)]
    assert hits == [False, True, True, False]
    assert faults.take("hang", "plan_next_action") is None
    assert faults.take("outage", "model").status == 429 and faults.take("outage", "model") is None
    faults.hang("plan_next_action")
    faults.reset()
    assert faults.pending() == [] and faults.executions() == []


def test_bad_switches_get_a_clear_error_and_change_nothing(faults):
    with pytest.raises(ValueError, match="needs an HTTP error status"):
        faults.model_outage(times=1, status=200)
    with pytest.raises(ValueError, match="times must be a whole number of at least 1"):
        faults.model_outage(times=0)
    with pytest.raises(ValueError, match="unknown activity type 'plan'"):
        faults.hang("plan")
    with pytest.raises(ValueError, match="skip must be a whole number of at least 0"):
        faults.hang("execute_tool", skip=-1)
    with pytest.raises(ValueError, match="unknown activity type 'tool'"):
        faults.hold("tool")
    assert faults.pending() == []


async def test_bad_experiment_argument_is_refused(fault_lab):
    with pytest.raises(ValueError, match="during must be 'plan_next_action' or 'execute_tool'"):
        await fault_lab.crash_mid_turn(during="the tool")
    assert fault_lab.worker is None  # refused before starting anything


@pytest.mark.slow
async def test_worker_sigkilled_mid_model_call_then_mid_tool_call(fault_lab, faults):
    first = await fault_lab.crash_mid_turn("plan_next_action")
    print(f"\n{first}")
    victim = first.killed_pid
    second = await fault_lab.crash_mid_turn("execute_tool")  # kills the worker that replaced the first
    print(f"\n{second}")
    assert second.killed_pid == first.new_pid != victim
    for report, completed, interrupted, options in ((first, ["1", "2"], "3", PLAN_ACTIVITY),
                                                    (second, ["1"], "2", TOOL_ACTIVITY)):
        assert report.reply == "25 + 17 = 42."
        # The server noticed the dead attempt by the activity's own timeout (a heartbeat timeout if its options
        # have one, else start_to_close): the history says so on the attempt that followed.
        timeout = "Heartbeat" if "heartbeat_timeout" in options else "StartToClose"
        assert report.interrupted.activity_id == interrupted
        assert report.interrupted.last_failure == f"activity {timeout} timeout"
        assert report.completed_before_kill == completed and report.rerun_completed == []
        assert [(r.activity, r.outcome) for r in report.runs] == [
            ("plan_next_action", "completed"), ("execute_tool", "completed"), ("plan_next_action", "completed")]
        # Real executions (the append-only log survived the SIGKILL) match the attempts in the history:
        # once for each activity, twice for the one the kill interrupted.
        assert {r.activity_id: (r.starts, r.attempt) for r in report.runs} == {
            i: (2, 2) if i == interrupted else (1, 1) for i in ("1", "2", "3")}
        finished_by = {e.activity_id: e.pid for e in faults.executions(report.workflow_id) if e.event == "done"}
        assert finished_by == {i: report.new_pid if i >= interrupted else report.killed_pid for i in ("1", "2", "3")}
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert fault_lab.worker.alive and fault_lab.worker.pid == second.new_pid


async def test_model_outage_is_retried_by_a_worker_in_this_process(temporal, task_queue, worker, fault_lab, faults):
    report = await fault_lab.model_outage_turn(failures=2, status=503)
    print(f"\n{report}")
    assert report.reply == "25 + 17 = 42." and report.error is None
    down = "failed: ServiceUnavailableError: the offline model is down (simulated HTTP 503)"
    # The back-offs are the server's own (PLAN_ACTIVITY: 1 s, doubling), read from it while the turn waited.
    assert report.attempts == [(1, None, down), (2, 1.0, down), (3, 2.0, "ok")]
    assert "  attempt 3 after a back-off of 2 s: ok" in str(report).splitlines()
    assert faults.pending() == []  # the switch is used up


async def test_a_rate_limit_with_retry_after_waits_what_the_model_asked(temporal, task_queue, worker, fault_lab,
                                                                       faults):
    report = await fault_lab.model_outage_turn(failures=2, status=429, retry_after=1.5)
    assert report.reply == "25 + 17 = 42." and report.error is None
    limited = "failed: RateLimitError: the offline model is down (simulated HTTP 429)"
    # The policy alone would wait 1 s, then 2 s (test above): the server waited what the model asked, both times.
    assert report.attempts == [(1, None, limited), (2, 1.5, limited), (3, 1.5, "ok")]
    with pytest.raises(ValueError, match="retry_after is a number of seconds"):
        faults.model_outage(1, 429, retry_after=-1)


async def test_model_outage_on_the_real_provider_path(temporal, task_queue, fault_lab, faults, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-0000")
    fake = FakeOpenAI()
    fake.replies += [error(503, "overloaded"), error(429, "slow down"),
                     completion(tool_calls=[tool_call("calculator", '{"expression": "25 + 17"}')]),
                     completion("25 + 17 is 42.")]
    activities = AgentActivities(LLMConfig(model="openai/fake-model", api_base=fake.base_url, timeout_seconds=10))
    worker = await start_worker(temporal.client, task_queue=task_queue, activities=activities,
                                plugins=[fault_lab_plugin()])
    try:
        report = await fault_lab.model_outage_turn(failures=0)
    finally:
        await worker.stop()
        fake.close()
    print(f"\n{report}")
    assert report.reply == "25 + 17 is 42." and len(fake.requests) == 4
    assert report.attempts == [
        (1, None, "failed: ServiceUnavailableError: overloaded"), (2, 1.0, "failed: RateLimitError: slow down"),
        (3, 2.0, "ok")]


@pytest.mark.slow
async def test_an_outage_longer_than_every_attempt_is_reported_in_the_reply(temporal, task_queue, fault_lab, faults,
                                                                            monkeypatch):
    """PLAN_ACTIVITY's promise: five attempts, 1, 2, 4 and 8 s apart, then the turn reports the outage.
    The only test that waits out the whole policy (15 s of back-off): the real policy, not a shortened one."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-0000")
    fake = FakeOpenAI()
    fake.replies += [error(503, "overloaded")] * 5 + [completion("Back again.")]
    activities = AgentActivities(LLMConfig(model="openai/fake-model", api_base=fake.base_url, timeout_seconds=10))
    worker = await start_worker(temporal.client, task_queue=task_queue, activities=activities,
                                plugins=[fault_lab_plugin()])
    try:
        report = await fault_lab.model_outage_turn(failures=0, question="hello")
        print(f"\n{report}")
        assert len(fake.requests) == 5  # exactly five provider requests: the sixth reply is still unused
        assert [(n, outcome) for n, _, outcome in report.attempts] == [
            (n, "failed: ServiceUnavailableError: overloaded") for n in range(1, 6)]
        assert report.backoffs == [1.0, 2.0, 4.0, 8.0]
        assert report.error == report.reply
        assert report.reply.startswith("The model could not plan the next step: the model call failed: "
                                       "ServiceUnavailableError") and "overloaded" in report.reply
        # The history agrees: one planning activity, failed on its fifth and last attempt.
        chat = temporal.client.get_workflow_handle(report.workflow_id)
        assert [(r.activity, r.outcome, r.attempt, r.starts) for r in activity_runs(await chat.fetch_history(),
                                                                                      faults.executions())] == [
            ("plan_next_action", "failed", 5, 5)]
        # The chat is not broken: once the provider is back, the next message is answered.
        assert (await open_chat(temporal.client, chat.id).send("hello again")).text == "Back again."
    finally:
        await worker.stop()
        fake.close()


BUGGY_TOOL = '''
from durable_agent.tools import tool

FORECASTS = {"paris": "sunny, 21°C", "london": "light rain, 14°C"}


@tool("Get the current weather for a city.", city="the city name, e.g. 'Paris'")
def weather(city: str) -> str:
    return f"{city}: {FORECASTS[city]} (lab data)"
'''


@pytest.mark.slow
@pytest.mark.parametrize("in_kernel", [False, True], ids=["worker-process", "worker-in-this-process"])
async def test_buggy_tool_is_hot_fixed_while_the_turn_waits(fault_lab, faults, tmp_path, monkeypatch, in_kernel):
    module = f"lab_weather_{'kernel' if in_kernel else 'process'}"
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / f"{module}.py").write_text(BUGGY_TOOL)
    turn = await fault_lab.start_buggy_turn(module, "What's the weather in Paris?", failures=2, in_kernel=in_kernel)
    print(f"\n{turn}")
    assert turn.failed_attempts == ["KeyError: 'Paris'"] * 2
    assert turn.agent_status == "running tool weather" and turn.next_attempt == 3
    assert fault_lab.worker is None and fault_lab.kernel_worker is None and not turn.reply.done()
    assert (await turn.chat.handle.describe()).status == WorkflowExecutionStatus.RUNNING

    (tmp_path / f"{module}.py").write_text(BUGGY_TOOL.replace("FORECASTS[city]", "FORECASTS[city.lower()]"))
    report = await fault_lab.restart_with_fix(turn)
    print(f"\n{report}")
    assert report.reply == "The weather in Paris: sunny, 21°C (lab data)."
    assert {(r.activity_id, r.activity): (r.starts, r.attempt) for r in report.runs} == {
        ("1", "plan_next_action"): (1, 1),  # planned before the bug: reused, not run again
        ("2", "execute_tool"): (3, 3),  # failed twice, then the fixed code
        ("3", "plan_next_action"): (1, 1)}
    assert faults.count("plan_next_action", workflow_id=turn.chat.workflow_id) == 2
    await fault_lab.close()
    assert tools.TOOLS["weather"].fn is tools.weather  # the built-in tool is back


async def test_a_tool_module_that_does_not_import_fails_the_worker_start_clearly(fault_lab, tmp_path):
    (tmp_path / "broken_tool.py").write_text("def weather(city):\n    return city +\n")
    with pytest.raises(RuntimeError, match="SyntaxError"):
        await fault_lab.start_worker_process("broken_tool")


CHANGED_WORKFLOWS = '''
from __future__ import annotations

from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent.activities import AgentActivities, ToolCall, ToolInput
    from durable_agent.workflow import TOOL_ACTIVITY, ChatInput, DurableAgentWorkflow, Transcript


async def check_weather():
    call = ToolCall("check", "weather", {"city": "Paris"})
    await workflow.execute_activity_method(AgentActivities.execute_tool, ToolInput(call), **TOOL_ACTIVITY)


@workflow.defn(name="DurableAgentWorkflow")
class AddsAnActivity(DurableAgentWorkflow):
    @workflow.run
    async def run(self, input: ChatInput) -> Transcript:
        return await super().run(input)

    async def _turn(self, text: str):
        await check_weather()
        return await super()._turn(text)


@workflow.defn(name="DurableAgentWorkflow")
class ReadsTheClock(DurableAgentWorkflow):
    @workflow.run
    async def run(self, input: ChatInput) -> Transcript:
        return await super().run(input)

    async def _turn(self, text: str):
        return await super()._turn(f"[{datetime.now():%H:%M}] {text}")


@workflow.defn(name="DurableAgentWorkflow")
class PatchedAddsAnActivity(DurableAgentWorkflow):
    @workflow.run
    async def run(self, input: ChatInput) -> Transcript:
        return await super().run(input)

    async def _turn(self, text: str):
        if workflow.patched("check-weather-first"):
            await check_weather()
        return await super()._turn(text)
'''


async def test_replay_catches_changed_workflow_code_and_patched_fixes_it(temporal, task_queue, chat, tmp_path,
                                                                         monkeypatch):
    (tmp_path / "changed_agent_test.py").write_text(CHANGED_WORKFLOWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    changed = importlib.import_module("changed_agent_test")
    await chat.send("What is 25 + 17?")
    history = await chat.handle.fetch_history()

    assert (await replay(history, DurableAgentWorkflow)).ok
    added = await replay(history, changed.AddsAnActivity)
    print(f"\n{added}")
    assert not added.ok and added.error_type == "NondeterminismError"
    assert "'plan_next_action' at this point; the changed code asks for 'execute_tool'" in added.explanation
    assert "workflow.patched" in added.explanation and "TMPRL1100" in added.temporal_says
    clock = await replay(history, changed.ReadsTheClock)
    print(clock)
    assert not clock.ok and clock.error_type == "RestrictedWorkflowAccessError"
    assert "calls datetime.datetime.now()" in clock.explanation and "workflow.now()" in clock.explanation
    patched = await replay(history, changed.PatchedAddsAnActivity)
    print(patched)
    assert patched.ok

    # New chats do take the new path: the extra activity runs before the model is asked.
    queue = f"{task_queue}-patched"
    worker = await start_worker(temporal.client, task_queue=queue, workflows=[changed.PatchedAddsAnActivity])
    try:
        new_chat = await start_chat(temporal.client, task_queue=queue)
        assert (await new_chat.send("What is 2 + 2?")).text == "2 + 2 = 4."
        runs = activity_runs(await new_chat.handle.fetch_history())
    finally:
        await worker.stop()
    assert [r.activity for r in runs] == ["execute_tool", "plan_next_action", "execute_tool", "plan_next_action"]


async def test_server_restart_with_a_tool_call_in_flight(tmp_path, faults):
    report = await server_restart_mid_chat(tmp_path / "temporal.db", faults)
    print(f"\n{report}")
    assert report.first_reply == "25 + 17 = 42." and report.second_reply == "6 * 7 = 42."
    assert report.intact and report.messages_before == 6 and report.turns == 2
    # Each activity's real executions (the log) and its attempts (the history): all exactly once, including
    # the tool call that was running while the server was down; its result reached the restarted server.
    assert report.in_flight == "5"
    assert [(r.activity_id, r.activity, r.outcome, r.attempt, r.starts) for r in report.runs] == [
        (str(i), name, "completed", 1, 1) for i, name in enumerate(
            ["plan_next_action", "execute_tool", "plan_next_action"] * 2, start=1)]
    held = [e for e in faults.executions() if e.fault == "hold"]
    assert [(e.activity_id, e.event) for e in held] == [("5", "start"), ("5", "done")]
    assert faults.pending() == []
