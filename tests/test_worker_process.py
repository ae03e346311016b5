"""The worker as a separate OS process, and the one-command terminal chat."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from durable_agent.session import start_chat
from durable_agent.supervisor import SUPERVISOR_READY_LINE, WARM_LINE
from durable_agent.warm_start import ENV_VAR as WARM_START
from durable_agent.worker import WorkerProcess, start_worker_process
from durable_course.faults import ENV_VAR, Faults, activity_runs
import warm_run
from processes import children, command_line, gone


async def test_worker_subprocess_serves_a_chat_started_here(temporal, task_queue):
    process = await start_worker_process(temporal.address, task_queue=task_queue)
    try:
        assert process.alive and process.pid != os.getpid()
        chat = await start_chat(temporal.client, task_queue=task_queue)
        reply = await chat.send("What is 25 + 17?")
        assert "42" in reply.text
        history = await chat.handle.fetch_history()
        identities = {e.activity_task_started_event_attributes.identity for e in history.events
                      if e.HasField("activity_task_started_event_attributes")}
        assert identities and all(identity.startswith(f"{process.pid}@") for identity in identities)
    finally:
        await process.stop()
    assert not process.alive and "durable-agent worker stopped" in process.log()


def test_cli_chat_answers_offline_with_one_command(tmp_path):
    result = warm_run.run(  # forked from the suite's warm starter, as from `course.py lab`'s
        [sys.executable, "-m", "durable_agent", "chat"],
        input="What is 25 + 17?\nWhat's the weather in Seattle?\nquit\n",
        timeout=120, cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"},
    )
    assert result.returncode == 0, result.stderr
    assert "Agent: 25 + 17 = 42." in result.stdout
    assert "Agent: The weather in Seattle:" in result.stdout
    assert "--- Transcript (2 turns) ---" in result.stdout
    assert "Temporal UI: http://127.0.0.1:" in result.stdout


def test_worker_without_a_server_says_how_to_get_one(tmp_path):
    result = subprocess.run([sys.executable, "-m", "durable_agent", "worker"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"})
    assert result.returncode == 2 and "give --address" in result.stderr


def _pids_polling(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"durable-agent supervisor: worker pid (\d+) polling", log)]


async def test_worker_processes_under_a_supervisor_lose_nothing_to_a_sigkill(temporal, task_queue, monkeypatch):
    """`durable-agent worker --processes 2`: a SIGKILLed worker's tool call is failed by the supervisor at once
    (not by its heartbeat timeout), the other process answers, a new one takes the dead one's place (forked from
    the supervisor's own warm starter: LiteLLM loaded when it polls), and SIGTERM stops them all."""
    faults = Faults.create(activate=False)
    monkeypatch.delenv(WARM_START)  # not the suite's starter: the supervisor starts one of its own
    parent = WorkerProcess.launch(
        [sys.executable, "-m", "durable_agent", "worker", "--address", temporal.address, "--task-queue", task_queue,
         "--processes", "2", "--plugin", "durable_course.faults:fault_lab_plugin"],
        env={ENV_VAR: str(faults.path)},
        log_prefix="durable-agent-supervisor-")
    try:
        deadline = time.monotonic() + 120
        while SUPERVISOR_READY_LINE not in parent.log() or WARM_LINE not in parent.log():
            assert parent.alive and time.monotonic() < deadline, parent.log()
            await asyncio.sleep(0.05)
        first = _pids_polling(parent.log())
        assert len(first) == 2
        faults.hang("execute_tool")
        chat = await start_chat(temporal.client, task_queue=task_queue)
        turn = asyncio.create_task(chat.send("What is 25 + 17?"))
        await faults.wait_for(lambda ex: any(e.activity == "execute_tool" and e.event == "start" for e in ex))
        victim = next(e.pid for e in faults.executions() if e.activity == "execute_tool")
        assert victim in first
        os.kill(victim, signal.SIGKILL)
        assert (await turn).text == "25 + 17 = 42."
        runs = activity_runs(await chat.handle.fetch_history(), faults.executions(chat.workflow_id))
        tool = next(r for r in runs if r.activity == "execute_tool")
        assert (tool.starts, tool.attempt) == (2, 2)
        assert tool.last_failure == f"worker {victim}@{socket.gethostname()} exited with -9; released by its supervisor"
        while len(_pids_polling(parent.log())) < 3:  # a new worker process in the dead one's place
            assert parent.alive and time.monotonic() < deadline, parent.log()
            await asyncio.sleep(0.05)
        assert f"worker pid {victim} exited with -9; released 1 activity attempt(s)" in parent.log()
        replacement = re.findall(r"worker pid \d+ polling \(log: (\S+)\)", parent.log())[-1]
        assert "LiteLLM loaded" in Path(replacement).read_text()
    finally:
        await parent.stop()
        faults.remove()
    assert parent.process.returncode == 0 and "durable-agent supervisor stopped" in parent.log()
    assert all(gone(pid) for pid in _pids_polling(parent.log())), parent.log()


async def test_a_supervisor_told_no_warm_starts_starts_no_starter(temporal, task_queue):
    """An empty DURABLE_AGENT_WARM_START turns warm starts off for the supervisor too (as for the grader, the
    suite and every launch): it starts no warm starter of its own, and its workers start from scratch."""
    parent = WorkerProcess.launch(
        [sys.executable, "-m", "durable_agent", "worker", "--address", temporal.address, "--task-queue", task_queue,
         "--processes", "1"], env={WARM_START: ""}, log_prefix="durable-agent-supervisor-", warm=False)
    try:
        deadline = time.monotonic() + 120
        while SUPERVISOR_READY_LINE not in parent.log():
            assert parent.alive and time.monotonic() < deadline, parent.log()
            await asyncio.sleep(0.05)
        commands = [command_line(pid) for pid in children(parent.pid)]
        assert commands and not [c for c in commands if "warm-start" in c], commands
        assert all("worker" in c for c in commands), commands  # its one worker, started as a new interpreter
    finally:
        await parent.stop()
    assert WARM_LINE not in parent.log()


def test_a_negative_number_of_processes_is_refused():
    done = subprocess.run([sys.executable, "-m", "durable_agent", "worker", "--address", "127.0.0.1:1",
                           "--processes", "-1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "durable-agent worker: --processes must be 0 (this process) or more, not -1"
