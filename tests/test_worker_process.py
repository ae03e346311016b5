"""The worker as a separate OS process, and the one-command terminal chat."""

from __future__ import annotations

import os
import subprocess
import sys

from durable_agent.session import start_chat
from durable_agent.worker import start_worker_process


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
    result = subprocess.run(
        [sys.executable, "-m", "durable_agent", "chat"],
        input="What is 25 + 17?\nWhat's the weather in Seattle?\nquit\n", capture_output=True, text=True,
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
