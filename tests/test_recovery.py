"""Recovery figures (`durable-agent bench --recovery`) hang together, and a worker polls before LiteLLM loads."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

from durable_agent.session import start_chat
from durable_agent.supervisor import Supervisor, release_activities, running_query
from durable_agent.worker import WorkerProcess, start_worker
from durable_course import events
from durable_course.faults import ENV_VAR, FaultLab, Faults, fault_lab_plugin
from durable_course.recovery import Crash, RecoveryReport, run_recovery


async def test_a_worker_polls_before_litellm_and_recovers_from_a_kill(temporal):
    report = await run_recovery(temporal, starts=1, crashes=1, during=("execute_tool",), local=False,
                                supervised=(False,))
    assert len(report.ready_s) == 1 and report.ready_s[0] > 0
    # The worker said, when it began to poll, that LiteLLM was not loaded yet: it is imported afterwards.
    assert report.litellm_loaded_when_ready == [False] and report.litellm_after_ready_s[0] > 0
    assert len(report.warm_ready_s) == 1 and report.warm_ready_s[0] > 0
    # Restarted from scratch, restarted by a fork of the warm starter, and taken over by a standby.
    assert [(c.during, c.standby, c.warm) for c in report.crashes] == [
        ("execute_tool", False, False), ("execute_tool", False, True), ("execute_tool", True, False)]
    for crash in report.crashes:
        assert crash.reply == "25 + 17 = 42." and crash.rerun_completed == 0
        assert crash.model_call == "activity" and crash.model_runs == 2  # the tool was killed: the model ran twice
        assert 0 <= crash.to_ready <= crash.to_reply and 0 < crash.to_retry <= crash.to_reply
    assert report.crashes[2].to_ready == 0  # the standby took over: no process was started
    assert RecoveryReport.from_json(report.to_json()) == report
    table = report.table()
    for words in ("Worker process ready", "Forked from a warm starter", "as an activity, restarting the worker from "
                  "scratch", "restarting the worker from a warm starter", "with a standby worker"):
        assert words in table


async def test_a_supervised_kill_is_retried_at_once_and_the_next_workflow_task_goes_to_the_live_worker(
        temporal, task_queue):
    """A supervisor that sees the worker process exit fails its running attempt at once (supervisor.py), so the
    server does not wait for the heartbeat timeout; and the worker that runs the retried tool call has the server
    forget the chat's sticky queue (worker.TakeOver), so the workflow task after it is not first offered to the
    dead worker's queue, to time out there."""
    faults = Faults.create(activate=False)
    lab = FaultLab(temporal, faults, task_queue=task_queue)
    spare = None
    try:
        await lab.start_worker_process()
        spare = await lab.launch_worker_process()
        report = await lab.crash_mid_turn("execute_tool", standby=spare, supervised=True)
        assert report.reply == "25 + 17 = 42." and report.interrupted is not None
        # The attempt the kill interrupted failed because the supervisor said so, not by its heartbeat timeout.
        failure = report.interrupted.last_failure
        assert failure.startswith("worker "), failure
        assert failure.endswith(" exited with -9; released by its supervisor"), failure
        assert report.rerun_completed == []
        assert "The supervisor saw the process exit" in str(report)
        history = events.read(await temporal.client.get_workflow_handle(report.workflow_id).fetch_history())
        kinds = [e.kind for e in history]
        assert kinds.count("ActivityTaskStarted") == 3  # model, the tool's retry (the killed attempt is not
        # written: an activity's started event is written when its last attempt ends), model
        assert "WorkflowTaskTimedOut" not in kinds, kinds
    finally:
        if spare is not None and spare is not lab.worker:
            await spare.stop()
        await lab.close()
        faults.remove()


async def test_a_release_names_the_dead_worker_and_fails_nothing_a_live_one_runs(temporal, task_queue, monkeypatch):
    """`release_activities` fails only the attempts the server says the named worker started: a live worker's
    call in flight is left alone, and the turn ends as if nothing had happened."""
    faults = Faults.create(activate=False)
    monkeypatch.setenv(ENV_VAR, str(faults.path))
    worker = await start_worker(temporal.client, task_queue=task_queue, plugins=[fault_lab_plugin()])
    try:
        faults.hold("execute_tool")
        chat = await start_chat(temporal.client, task_queue=task_queue)
        reply = asyncio.create_task(chat.send("What is 25 + 17?"))
        await faults.wait_for(lambda ex: any(e.activity == "execute_tool" and e.event == "start" for e in ex))
        assert await release_activities(temporal.client, "4242@elsewhere", task_queue=task_queue) == []
        faults.release()
        assert (await reply).text == "25 + 17 = 42."
        tool_runs = [e for e in faults.executions(chat.workflow_id) if e.activity == "execute_tool"]
        assert [(e.event, e.attempt) for e in tool_runs] == [("start", 1), ("done", 1)]
    finally:
        await worker.stop()
        faults.remove()


async def test_a_supervisor_refuses_a_process_that_has_not_said_who_it_is(temporal):
    process = WorkerProcess.launch([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(RuntimeError, match=r"has not said its identity \(is it ready\?\)"):
            Supervisor(temporal.client).watch(process)
    finally:
        process.kill()


def test_a_task_queue_name_that_cannot_be_queried_is_refused():
    assert running_query("fault-lab") == 'ExecutionStatus="Running" AND TaskQueue="fault-lab"'
    assert running_query(None) == 'ExecutionStatus="Running"'
    with pytest.raises(ValueError, match="cannot be queried"):
        running_query('q" OR TaskQueue="other')


async def test_bad_recovery_options_are_refused():
    with pytest.raises(ValueError, match="starts must be at least 1"):
        await run_recovery(starts=0)
    with pytest.raises(ValueError, match="during must name activities"):
        await run_recovery(during=("telepathy",))
    with pytest.raises(ValueError, match="supervised must be"):
        await run_recovery(supervised=())
    with pytest.raises(ValueError, match="warm must be"):
        await run_recovery(warm=(None,))


def test_the_table_reads_a_report():
    report = RecoveryReport([0.5, 0.7], [False, False], [3.0, 4.0],
                            [Crash("plan_next_action", False, 0.6, 3.1, 6.0, "ok", 0, "activity", 3),
                             Crash("plan_next_action", True, 0.0, 10.2, 11.0, "ok", 0, "local_activity", 3),
                             Crash("execute_tool", True, 0.0, 0.1, 0.9, "ok", 0, "activity", 2, supervised=True),
                             Crash("execute_tool", False, 0.2, 0.1, 1.1, "ok", 0, "activity", 2, supervised=True,
                                   warm=True)],
                            warm_ready_s=[0.2, 0.3])
    table = report.table()
    assert "p50 0.60 s" in table and "Forked from a warm starter (LiteLLM imported), 2 starts: p50 0.25 s" in table
    assert ("model call as an activity, restarting the worker from scratch, noticed by the heartbeat timeout: "
            "6.00 s over 1 crashes") in table
    assert ("model call as an activity, restarting the worker from a warm starter, supervised: 1.10 s over 1 "
            "crashes") in table
    assert ("model call as a local activity, with a standby worker, noticed by the heartbeat timeout: 11.00 s over "
            "1 crashes") in table
    assert "model call as an activity, with a standby worker, supervised: 0.90 s over 1 crashes" in table
    assert json.loads(report.to_json())["crashes"][0]["to_reply"] == 6.0


def test_the_first_model_call_does_not_stall_the_event_loop_while_litellm_imports():
    # A fresh interpreter, LiteLLM not imported: the first model call imports it in a thread, and the event
    # loop goes on ticking meanwhile (a synchronous import would freeze it for the whole import).
    script = textwrap.dedent("""
        import asyncio, sys
        from durable_agent import llm

        async def main():
            ticks = 0
            async def tick():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1
            ticker = asyncio.create_task(tick())
            before = "litellm" in sys.modules
            reply = await llm.complete([{"role": "user", "content": "hello"}], [], llm.LLMConfig())
            ticker.cancel()
            print(before, ticks, reply["content"][:6])

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, ticks, reply = done.stdout.split()
    assert before == "False" and reply == "Hello!"
    assert int(ticks) >= 20, f"the event loop ticked only {ticks} times while LiteLLM was imported"


def test_an_event_loop_closing_while_litellm_imports_does_not_wait_for_the_import():
    """A worker asked to stop while LiteLLM still imports in the background ends at once: the import runs in a
    thread of its own, which asyncio does not wait for when its loop closes (in one of asyncio's executor
    threads, the loop's end waited out the import, seconds, and a worker stopped under load was SIGKILLed).
    A caller that gave up waiting does not cancel the import for the next one."""
    script = textwrap.dedent("""
        import asyncio
        from durable_agent import llm

        async def give_up():
            try:
                await asyncio.wait_for(llm.litellm_ready(), 0.2)
            except asyncio.TimeoutError:
                pass

        asyncio.run(give_up())
        print("imported" if llm._litellm is not None else "still-importing")
        print(asyncio.run(llm.litellm_ready()).__name__)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["still-importing", "litellm"]
