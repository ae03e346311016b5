"""Durable outside the happy paths: long chats, hung tools, resends, server crashes, leftovers, noise.

Against the real Temporal dev server (SIGKILLed and restarted on its SQLite file where that is the point),
with real processes and real threads; nothing is patched.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError

from durable_agent import llm, tools
from durable_course.faults import PLUGIN, Faults
from durable_agent.logs import quiet_logs
from durable_agent.server import free_port, start_temporal
from durable_agent.session import ChatError, MessageNotConfirmed, open_chat, start_chat
from durable_agent.worker import start_worker
from durable_agent.workflow import ChatInput
import warm_run
from processes import children, environment, gone, wait_gone

ROOT = Path(__file__).resolve().parent.parent


async def runs_of(client, chat) -> list:
    """The event history of each run of a chat, following continue-as-new from the first run."""
    histories, run_id = [], chat.handle.first_execution_run_id or (await chat.handle.describe()).run_id
    while run_id:
        history = await client.get_workflow_handle(chat.workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                  if last.HasField("workflow_execution_continued_as_new_event_attributes") else None)
    return histories


def plan_input_sizes(histories) -> list[int]:
    """The size in bytes of each model call's input, in order, over all runs."""
    return [e.activity_task_scheduled_event_attributes.input.ByteSize()
            for h in histories for e in h.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == "plan_next_action"]


def count_events(history, event_type) -> int:
    return sum(e.event_type == event_type for e in history.events)


# --- long chats ---------------------------------------------------------------------------------------------

async def test_the_default_chat_continues_as_new_and_its_history_grows_in_a_straight_line(temporal, task_queue,
                                                                                          worker):
    chat = await start_chat(temporal.client, task_queue=task_queue,
                            input=ChatInput(events_per_run=150, context_chars=600))
    replies = []
    for n in range(1, 41):
        replies.append(await chat.send(f"What is {n} + 1?", message_id=f"q{n}"))
    assert [r.text for r in replies] == [f"{n} + 1 = {n + 1}." for n in range(1, 41)]
    assert (await chat.status()).turns == 40  # counted across runs

    runs = await runs_of(temporal.client, chat)
    assert len(runs) >= 4
    # Each run hands over once it has 150 events; it never cuts a turn, so it may finish the one under way.
    assert max(len(h.events) for h in runs) < 150 + 40
    sizes = plan_input_sizes(runs)
    assert len(sizes) == 2 * 40  # a tool turn has two model calls: plan the tool call, then answer
    # The model's input stops growing once the context window is full: in the plain design (whole
    # conversation each call) turn 40's input would be four times turn 10's.
    assert max(sizes[-30:]) <= 1.3 * max(sizes[20:40])

    # The turns that left the window are still known to the model: a summary line each, newest kept first.
    context = await chat.history()
    assert context[0].role == "system"
    known = [n for n in range(1, 41) if any(f"What is {n} + 1?" in m.content for m in context)]
    assert known == list(range(known[0], 41)) and len(known) >= 20, known

    # A message answered in an earlier run, sent again with its id: the same reply, and no new turn.
    accepted_in_last_run = {e.workflow_execution_update_accepted_event_attributes.accepted_request.meta.update_id
                            for e in runs[-1].events
                            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED}
    assert "q30" not in accepted_in_last_run
    again = await chat.send("What is 30 + 1?", message_id="q30")
    assert again == replies[29]
    assert (await chat.status()).turns == 40


@pytest.mark.slow
async def test_a_thousand_turns(temporal, task_queue, worker):
    chat = await start_chat(temporal.client, task_queue=task_queue)
    for n in range(1000):
        reply = await chat.send("thanks")
        assert reply.text.startswith("You're welcome"), (n, reply.text)
    assert (await chat.status()).turns == 1000
    runs = await runs_of(temporal.client, chat)
    assert len(runs) >= 4  # about 200 turns a run (2,000 events)
    assert max(len(h.events) for h in runs) < 2_100
    assert max(sum(e.ByteSize() for e in h.events) for h in runs) < 2_000_000  # far below the 50 MB limit


# --- a tool that hangs ----------------------------------------------------------------------------------------

@pytest.fixture
def hanging_tool():
    """A tool that blocks its thread until the test releases it (like a call to a server that never answers)."""
    release = threading.Event()
    started = threading.Event()

    @tools.tool("Wait for a thing that never comes.", thing="what to wait for")
    def wait_for_ever(thing: str) -> str:
        started.set()
        release.wait()
        return f"{thing} came"

    llm.teach_offline_model("wait_for_ever", r"wait for (?P<thing>\w+)")
    yield started
    release.set()
    del tools.TOOLS["wait_for_ever"]
    del llm.TAUGHT_TOOLS["wait_for_ever"]


async def test_a_hung_tool_costs_only_its_own_activity(temporal, task_queue, worker, hanging_tool):
    stuck = await start_chat(temporal.client, task_queue=task_queue)
    other = await start_chat(temporal.client, task_queue=task_queue)
    stuck_turn = asyncio.ensure_future(stuck.send("Please wait for godot"))
    await asyncio.to_thread(hanging_tool.wait, 30)
    assert hanging_tool.is_set()

    # The worker is not frozen: another chat on the same worker gets its answer while the tool hangs.
    assert (await other.send("What is 2 + 2?")).text == "2 + 2 = 4."
    assert not stuck_turn.done()

    # The hung attempt is given up after its start_to_close timeout and retried (Temporal's bookkeeping).
    deadline = time.monotonic() + 60
    while True:
        pending = (await stuck.handle.describe()).raw_description.pending_activities
        if pending and pending[0].attempt >= 2:
            break
        assert time.monotonic() < deadline, "the hung tool's attempt was never timed out and retried"
        await asyncio.sleep(0.2)

    # And the worker shuts down although a tool thread is still blocked.
    await asyncio.wait_for(worker.stop(), timeout=60)
    stuck_turn.cancel()
    await asyncio.gather(stuck_turn, return_exceptions=True)


# --- resending ----------------------------------------------------------------------------------------------

async def test_two_clients_sending_the_same_message_get_one_turn(temporal, task_queue, worker):
    first = await start_chat(temporal.client, task_queue=task_queue)
    second = open_chat(temporal.client, first.workflow_id)
    a, b = await asyncio.gather(first.send("What is 6 * 7?", message_id="m-1"),
                                second.send("What is 6 * 7?", message_id="m-1"))
    assert a == b and a.text == "6 * 7 = 42."
    again = await second.send("What is 6 * 7?", message_id="m-1")  # later, after the answer
    assert again == a
    assert (await first.status()).turns == 1
    assert [m.content for m in await first.history() if m.role == "user"] == ["What is 6 * 7?"]
    history = await first.handle.fetch_history()
    assert count_events(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED) == 1


@pytest.fixture
def slow_tool():
    """A tool that takes two seconds: long enough to crash the server while it runs."""

    @tools.tool("Echo a word, slowly.", word="the word")
    def slow_echo(word: str) -> str:
        time.sleep(2)
        return word

    llm.teach_offline_model("slow_echo", r"slowly echo (?P<word>\w+)")
    yield
    del tools.TOOLS["slow_echo"]
    del llm.TAUGHT_TOOLS["slow_echo"]


async def wait_for_state(chat, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (await chat.status()).state != state:
        assert time.monotonic() < deadline, f"the chat never reached {state!r}"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_server_crash_mid_turn_never_runs_the_message_twice(tmp_path, task_queue, slow_tool):
    port, db = free_port(), tmp_path / "temporal.db"
    temporal = await start_temporal(db_file=db, ui=False, port=port)
    worker = await start_worker(temporal.client, task_queue=task_queue)
    restarted = None
    try:
        # The first worker of a process imports LiteLLM in a thread (seconds of CPU that the event loop competes
        # with): wait for it, so the message is accepted well within the short patience below on a busy machine.
        await llm.litellm_ready()
        chat = await start_chat(temporal.client, task_queue=task_queue)
        chat.patience = 1.0  # give up quickly while the server is down, to show what the learner reads
        turn = asyncio.ensure_future(chat.send("Please slowly echo hello"))
        await wait_for_state(chat, "running_tool")  # the message is accepted: it is in the event history
        temporal.server.kill()  # SIGKILL, mid-turn

        with pytest.raises(MessageNotConfirmed) as refused:
            await turn
        # The message was accepted before the kill: the learner is told so, whichever way the outage surfaced
        # (the reply's poll failing, or timing out while the client retried the connection).
        said = str(refused.value)
        assert said.startswith("the Temporal server is unreachable (")
        assert "your message was accepted before that" in said and "will not run twice" in said

        restarted = await start_temporal(db_file=db, ui=False, port=port)  # same file, same port
        chat.patience = 60.0
        reply = await chat.send("Please slowly echo hello")  # the learner resends: the same message id
        assert reply.text == "slow_echo: hello."
        assert (await chat.status()).turns == 1
        assert [m.content for m in await chat.history() if m.role == "user"] == ["Please slowly echo hello"]
    finally:
        # The worker first, whatever failed: a worker left running on a dead server hangs the test run's end.
        await worker.stop()
        if restarted is not None:
            await restarted.shutdown()
        await temporal.shutdown()


# --- what a person reads --------------------------------------------------------------------------------------

async def test_status_and_unknown_chats_are_clear(temporal, task_queue, worker):
    chat = await start_chat(temporal.client, task_queue=task_queue)
    await chat.send("What is 1 + 2?")
    await chat.end()
    assert (await chat.status()).state == "ended"

    nobody = open_chat(temporal.client, "chat-does-not-exist")
    for call in (nobody.history, nobody.status, nobody.end):
        with pytest.raises(ChatError, match="there is no chat chat-does-not-exist on this Temporal server"):
            await call()


async def test_a_failed_attempt_is_one_line_and_its_traceback_goes_to_the_log(temporal, task_queue, worker,
                                                                            tmp_path):
    console, log_file = io.StringIO(), tmp_path / "detail.log"
    quiet_logs(console, log_file)
    faults = Faults.create()
    try:
        faults.model_outage(times=1)
        chat = await start_chat(temporal.client, task_queue=task_queue)
        assert (await chat.send("What is 3 + 4?")).text == "3 + 4 = 7."  # the second attempt answers
    finally:
        faults.remove()
        quiet_logs()
    lines = console.getvalue().splitlines()
    assert lines == ["[plan_next_action attempt 1 failed: the model call failed: ServiceUnavailableError: "
                     "litellm.ServiceUnavailableError: OfflineException - the offline model is down (simulated HTTP 503)]"]
    assert "Traceback" in log_file.read_text()


@pytest.mark.slow
def test_the_chat_command_prints_one_line_per_failed_attempt(tmp_path):
    faults = Faults.create(tmp_path / "faults", activate=False)
    faults.model_outage(times=2)
    env = {**os.environ, "DURABLE_AGENT_FAULTS": str(faults.path), "TMPDIR": str(tmp_path)}
    done = warm_run.run([sys.executable, "-m", "durable_agent", "chat", "--plugin", PLUGIN],
                        input="What is 25 + 17?\nquit\n", env=env, timeout=120, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert "Agent: 25 + 17 = 42." in output, output
    assert "Traceback" not in output
    failed = [line for line in output.splitlines() if "failed:" in line]
    assert [line.split(" failed:")[0] for line in failed] == ["[plan_next_action attempt 1",
                                                               "[plan_next_action attempt 2"], output
    assert "Traceback" in (tmp_path / "durable-agent.log").read_text()


# --- no leftovers -----------------------------------------------------------------------------------------------

pytestmark_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

STARTER = """
import asyncio
from durable_agent.server import start_temporal
async def main():
    temporal = await start_temporal(ui=False)
    print(temporal.server.pid, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


@pytestmark_linux
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_the_embedded_server_dies_with_the_process_that_started_it(how):
    parent = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              start_new_session=True)
    server_pid = int(parent.stdout.readline())
    assert not gone(server_pid)
    # To the parent's process group, as a terminal sends Ctrl-C: the server has a session of its own (so that a
    # kernel's interrupt does not stop it), and dies because its parent does.
    os.killpg(parent.pid, how)
    parent.wait(timeout=30)
    assert wait_gone(server_pid), f"the Temporal server (pid {server_pid}) outlived its parent"


@pytestmark_linux
async def test_the_embedded_server_of_one_process_runs_on_one_cpu(temporal):
    # EMBEDDED_SERVER_CPUS: the Go scheduler hands one turn's short steps between fewer threads (less CPU).
    assert environment(temporal.server.process.pid)["GOMAXPROCS"] == "1"


@pytestmark_linux
def test_the_server_command_stops_its_server_on_sigterm():
    command = subprocess.Popen([sys.executable, "-m", "durable_agent", "server", "--port", str(free_port()),
                                "--ui-port", str(free_port())], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines = []
    while not any("Press Ctrl-C" in line for line in lines):
        line = command.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    servers = children(command.pid)
    assert len(servers) == 1
    assert "GOMAXPROCS" not in environment(servers[0])  # a server others' workers share may use every CPU
    command.send_signal(signal.SIGTERM)
    command.wait(timeout=30)
    assert wait_gone(servers[0])
    assert "Temporal dev server stopped" in command.stdout.read()


# --- the load command -------------------------------------------------------------------------------------------

async def test_the_load_command_counts_every_turn_through_a_worker_kill():
    from durable_course.load import run_load

    report = await run_load(chats=4, turns=3, kill_every=8)
    assert report.kills == 1  # after 8 answers, with the other chats mid-turn
    assert (report.answered, report.wrong, report.lost, report.duplicated) == (12, 0, 0, 0), report.table()
    assert report.model_calls >= 24  # two model calls a turn (plan the tool call, then answer)
    assert len(report.latencies_ms) == 12 and report.p95_ms >= report.p50_ms > 0
    assert "answered once, correctly   12" in report.table()


async def test_a_server_whose_chosen_port_was_taken_meanwhile_starts_on_another(monkeypatch):
    """Two servers starting side by side (a class graded in parallel) can both be told a port is free; the one
    that binds second fails with "address already in use". start_temporal then chooses again. The race is made
    certain here: the first port it is offered is already listening."""
    import socket

    from durable_agent import server as server_module

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    offered = [taken.getsockname()[1]]
    real_free_port = server_module.free_port
    monkeypatch.setattr(server_module, "free_port", lambda: offered.pop() if offered else real_free_port())
    try:
        temporal = await start_temporal(ui=False)
        try:
            assert temporal.address != f"127.0.0.1:{taken.getsockname()[1]}" and offered == []
            assert await temporal.client.service_client.check_health()  # it answers on the other port
        finally:
            await temporal.shutdown()
        # A port the caller gave is the caller's choice: taken, it is an error that says so, not another port.
        with pytest.raises(RuntimeError, match="address already in use"):
            await start_temporal(ui=False, port=taken.getsockname()[1])
    finally:
        taken.close()


async def test_every_port_the_server_binds_is_chosen_by_us_and_chosen_again_when_taken(monkeypatch):
    """The dev server binds more than its gRPC and UI ports: an HTTP API port and a metrics port, which the CLI
    would pick itself, racing the servers started beside it. start_temporal chooses them too, and starts again
    when one was taken (here the metrics port, the third port it asks for)."""
    import socket

    from durable_agent import server as server_module

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real_free_port = server_module.free_port
    offered = [taken.getsockname()[1], real_free_port(), real_free_port()]  # popped from the end: gRPC, HTTP, metrics
    monkeypatch.setattr(server_module, "free_port", lambda: offered.pop() if offered else real_free_port())
    try:
        temporal = await start_temporal(ui=False)
        try:
            assert offered == [] and await temporal.client.service_client.check_health()
            assert f"--metrics-port {taken.getsockname()[1]}" not in " ".join(temporal.server.process.args)
        finally:
            await temporal.shutdown()
    finally:
        taken.close()


async def test_a_port_taken_by_another_temporal_server_never_connects_us_to_that_server(monkeypatch, temporal):
    """The same race, when what took the port is another Temporal server (a neighbour's notebook): it answers
    at once, while ours is still starting and about to fail. Connecting then would hand back a client of the
    neighbour's server, lost when the neighbour stops it. The client must be ours: connected only once our
    server has said it holds its ports."""
    from durable_agent import server as server_module

    neighbour = int(temporal.address.rsplit(":", 1)[1])  # the session's server: it answers on that port
    offered = [neighbour]
    real_free_port = server_module.free_port
    monkeypatch.setattr(server_module, "free_port", lambda: offered.pop() if offered else real_free_port())
    # A workflow id known only to the neighbour's server: ours has never heard of it.
    await temporal.client.start_workflow("NoSuchWorkflow", id="only-on-the-neighbour", task_queue="nobody")
    ours = await start_temporal(ui=False)
    try:
        assert offered == [] and ours.address != temporal.address
        with pytest.raises(RPCError, match="not found"):
            await ours.client.get_workflow_handle("only-on-the-neighbour").describe()
    finally:
        await ours.shutdown()
        await temporal.client.get_workflow_handle("only-on-the-neighbour").terminate()
