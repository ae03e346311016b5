"""The warm starter (durable_agent/warm_start.py): real forks of a real starter process, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from durable_agent import warm_start
from durable_agent.session import start_chat
from durable_agent.warm_start import WarmProcess, WarmStarter
from durable_agent.worker import start_worker_process

PROBE = """
import json, os, sys, tempfile, time
preloaded = sorted(name for name in ("litellm", "temporalio.worker", "durable_agent") if name in sys.modules)
print(json.dumps({"version": VERSION, "argv": sys.argv[1:], "cwd": os.getcwd(), "path": sys.path[:2],
                  "colour": os.environ.get("COLOUR"), "preloaded": preloaded,
                  "no_pyc": sys.dont_write_bytecode, "tmp": tempfile.gettempdir(), "tz": time.tzname[0]}), flush=True)
if "--fail" in sys.argv:
    raise RuntimeError("the probe failed on purpose")
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


@pytest.fixture(scope="module")
async def starter():
    started = WarmStarter.start()
    await started.wait_ready()
    yield started
    started.close()


def write_probe(folder, version: int) -> None:
    (folder / "warm_probe.py").write_text(PROBE.replace("VERSION", str(version)))


def run_probe(starter, tmp_path, *args: str, env: dict[str, str] | None = None):
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        process = starter.launch([sys.executable, "-m", "warm_probe", *args], cwd=str(tmp_path),
                                 env={**os.environ, "PYTHONPATH": str(tmp_path), **(env or {})},
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    assert isinstance(process, WarmProcess)
    return process, log


async def test_a_forked_worker_polls_with_litellm_loaded_runs_a_turn_and_dies_by_sigkill(starter, temporal,
                                                                                         task_queue):
    worker = await start_worker_process(temporal.address, task_queue=task_queue, warm=starter)
    try:
        assert isinstance(worker.process, WarmProcess)
        assert "LiteLLM loaded" in worker.log()  # no import to wait for: the first model call runs at once
        chat = await start_chat(temporal.client, task_queue=task_queue)
        assert (await chat.send("What is 25 + 17?")).text == "25 + 17 = 42."
        worker.kill()
        assert worker.process.returncode == -signal.SIGKILL and not worker.alive
    finally:
        await worker.stop()


async def test_a_worker_started_without_a_starter_is_started_cold(temporal, task_queue):
    worker = await start_worker_process(temporal.address, task_queue=task_queue, warm=False)
    try:
        assert isinstance(worker.process, subprocess.Popen)
        assert "LiteLLM importing in the background" in worker.log()
    finally:
        await worker.stop()
    assert worker.process.returncode == 0


def test_the_child_runs_as_a_new_interpreter_would_with_the_requesters_environment(starter, tmp_path):
    write_probe(tmp_path, 1)
    process, log = run_probe(starter, tmp_path, "a", "b", env={"COLOUR": "teal", "EXIT_CODE": "3",
                                                               "PYTHONDONTWRITEBYTECODE": "1",
                                                               "TMPDIR": str(tmp_path), "TZ": "NZST-12"})
    assert process.wait(timeout=30) == 3 and process.poll() == 3
    seen = json.loads(log.read_text())
    assert seen["argv"] == ["a", "b"] and seen["cwd"] == str(tmp_path) and seen["colour"] == "teal"
    assert seen["path"] == [str(tmp_path), str(tmp_path)] and seen["no_pyc"] is True
    # What the starter's imports had read from its own environment (the temporary folder, the time zone) is
    # read again from the request's (the chat command writes its log to TMPDIR).
    assert seen["tmp"] == str(tmp_path) and seen["tz"] == "NZST"
    # The libraries come from the starter's memory; this project's own modules are imported afresh.
    assert seen["preloaded"] == ["litellm", "temporalio.worker"]

    write_probe(tmp_path, 2)  # an edited file is what the next child runs
    process, log = run_probe(starter, tmp_path)
    assert process.wait(timeout=30) == 0 and json.loads(log.read_text())["version"] == 2


def test_a_failing_child_exits_with_1_and_its_traceback(starter, tmp_path):
    write_probe(tmp_path, 1)
    process, log = run_probe(starter, tmp_path, "--fail")
    assert process.wait(timeout=30) == 1
    assert "RuntimeError: the probe failed on purpose" in log.read_text()


def test_what_the_starter_cannot_run_as_a_new_interpreter_would_is_started_cold(starter, tmp_path, monkeypatch):
    write_probe(tmp_path, 1)
    differs = {**os.environ, "LITELLM_LOG": "DEBUG"}  # read by LiteLLM when it is imported
    assert starter.launch([sys.executable, "-m", "warm_probe"], env=differs) is None
    assert starter.launch([sys.executable, "-c", "print(1)"]) is None  # only `python -m MODULE`
    assert starter.launch(["/bin/echo", "-m", "x"]) is None
    probe = [sys.executable, "-m", "warm_probe"]
    cold = warm_start.launch(probe, env=differs, cwd=str(tmp_path), stdout=subprocess.DEVNULL, warm=starter)
    warm = warm_start.launch(probe, cwd=str(tmp_path), stdout=subprocess.DEVNULL, warm=starter)
    assert isinstance(cold, subprocess.Popen) and cold.wait(timeout=60) == 0
    assert isinstance(warm, WarmProcess) and warm.wait(timeout=30) == 0
    gone = WarmStarter(starter.process, str(tmp_path / "no-such-socket"), starter.log_path)
    assert isinstance(cold := warm_start.launch(probe, cwd=str(tmp_path), stdout=subprocess.DEVNULL, warm=gone),
                      subprocess.Popen) and cold.wait(timeout=60) == 0
    # By default, the starter this process was given (DURABLE_AGENT_WARM_START); none when it is empty.
    monkeypatch.setenv(warm_start.ENV_VAR, starter.socket_path)
    given = warm_start.launch(probe, cwd=str(tmp_path), stdout=subprocess.DEVNULL)
    assert isinstance(given, WarmProcess) and given.wait(timeout=30) == 0
    monkeypatch.setenv(warm_start.ENV_VAR, "")
    assert isinstance(cold := warm_start.launch(probe, cwd=str(tmp_path), stdout=subprocess.DEVNULL),
                      subprocess.Popen) and cold.wait(timeout=60) == 0


def test_a_garbled_request_is_refused_and_the_starter_serves_on(starter, tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as connection:
        connection.settimeout(10)
        connection.connect(starter.socket_path)
        connection.send(b"{not json")
        assert "unreadable request" in json.loads(connection.recv(4096))["refused"]
    write_probe(tmp_path, 1)
    process, _ = run_probe(starter, tmp_path)
    assert process.wait(timeout=30) == 0


async def test_the_starters_children_die_with_it(tmp_path):
    own = WarmStarter.start(preload=("json",))
    await own.wait_ready()
    (tmp_path / "sleeper.py").write_text("import time\nprint('asleep', flush=True)\ntime.sleep(600)\n")
    process = own.launch([sys.executable, "-m", "sleeper"], cwd=str(tmp_path), stdout=subprocess.DEVNULL)
    assert isinstance(process, WarmProcess) and process.poll() is None
    own.close()  # as when a notebook's kernel or a test run ends: no worker is left behind
    assert process.wait(timeout=30) == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)


def test_a_warm_process_can_be_waited_on_with_a_timeout(starter, tmp_path):
    (tmp_path / "sleeper.py").write_text(textwrap.dedent("""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
        print("asleep", flush=True)
        time.sleep(600)
    """))
    log = tmp_path / "sleeper.log"
    with log.open("wb") as out:
        process = starter.launch([sys.executable, "-m", "sleeper"], cwd=str(tmp_path), stdout=out,
                                 env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert isinstance(process, WarmProcess)
    while "asleep" not in log.read_text():
        assert process.poll() is None
        time.sleep(0.02)
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.2)
    process.terminate()
    assert process.wait(timeout=30) == 7


async def test_a_kernel_is_forked_from_the_starter_and_can_be_interrupted_and_shut_down(starter, monkeypatch):
    from jupyter_client.manager import AsyncKernelManager

    from durable_course.warm_kernels import NAME, WarmKernelProvisioner, use_warm_kernels

    monkeypatch.delenv("JUPYTER_DEFAULT_PROVISIONER_NAME", raising=False)
    with monkeypatch.context() as patched:
        patched.setenv(warm_start.ENV_VAR, starter.socket_path)
        assert use_warm_kernels() and os.environ["JUPYTER_DEFAULT_PROVISIONER_NAME"] == NAME
        manager = AsyncKernelManager(kernel_name="python3")
        await manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        assert isinstance(manager.provisioner, WarmKernelProvisioner)
        assert isinstance(manager.provisioner.process, WarmProcess)
        assert os.getpgid(manager.provisioner.pid) == manager.provisioner.pid  # its own process group
        seen: list[str] = []
        reply = await client.execute_interactive(
            "import os, sys; print(os.getppid(), 'litellm' in sys.modules, 1 + 1)", timeout=30,
            output_hook=lambda message: seen.append(message["content"].get("text", "")))
        assert reply["content"]["status"] == "ok"
        assert "".join(seen).split() == [str(starter.process.pid), "True", "2"]

        sleeping = client.execute("import time; time.sleep(600)")
        await asyncio.sleep(0.5)
        await manager.interrupt_kernel()  # SIGINT to the kernel's process group
        while True:
            message = await client.get_shell_msg(timeout=30)
            if message["parent_header"].get("msg_id") == sleeping:
                break
        assert message["content"]["status"] == "error" and message["content"]["ename"] == "KeyboardInterrupt"
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=False)
    assert not await manager.is_alive()


def test_the_grader_forks_its_kernels_from_a_warm_starter_of_its_own(monkeypatch):
    from jupyter_client.manager import KernelManager

    from durable_course.warm_kernels import DEFAULT_PROVISIONER, warm_kernels_here

    monkeypatch.delenv(warm_start.ENV_VAR, raising=False)  # as in a teacher's terminal
    monkeypatch.delenv(DEFAULT_PROVISIONER, raising=False)
    with warm_kernels_here() as own:
        assert own is not None and own.ready and os.environ[warm_start.ENV_VAR] == own.socket_path
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel()
        try:
            assert isinstance(manager.provisioner.process, WarmProcess)
        finally:
            manager.shutdown_kernel(now=True)
    assert warm_start.ENV_VAR not in os.environ and own.process.poll() is not None  # stopped at the end
    monkeypatch.setenv(warm_start.ENV_VAR, "")  # turned off: kernels start as usual
    with warm_kernels_here() as none:
        assert none is None


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "started-as-usual"])
async def test_kernels_talk_over_unix_sockets_of_their_own_and_leave_none_behind(starter, monkeypatch, forked):
    """No TCP ports: a port Jupyter found free can be taken by another process before the kernel binds it (the
    kernel then dies before kernel_info). Forked or not, through a restart, and cleaned up after."""
    import stat

    from jupyter_client.manager import AsyncKernelManager

    from durable_course.warm_kernels import DEFAULT_PROVISIONER, NAME, WarmKernelProvisioner

    monkeypatch.setenv(DEFAULT_PROVISIONER, NAME)
    monkeypatch.setenv(warm_start.ENV_VAR, starter.socket_path if forked else "")
    manager = AsyncKernelManager(kernel_name="python3")
    await manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        assert isinstance(manager.provisioner, WarmKernelProvisioner)
        assert isinstance(manager.provisioner.process, WarmProcess) == forked
        written = json.loads(Path(manager.connection_file).read_text())
        folder = Path(written["ip"]).parent
        assert written["transport"] == "ipc" and folder == Path(manager.provisioner.socket_folder)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # only this user can connect
        channels = sorted(f"channel-{written[f'{name}_port']}" for name in ("control", "hb", "iopub", "shell", "stdin"))
        for _ in range(2):
            await client.wait_for_ready(timeout=60)
            assert sorted(p.name for p in folder.iterdir()) == channels
            reply = await client.execute_interactive("1 + 1", timeout=30)
            assert reply["content"]["status"] == "ok"
            await manager.restart_kernel(now=True)  # bound again under the same names
            assert json.loads(Path(manager.connection_file).read_text())["ip"] == written["ip"]
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)
    assert not folder.exists()


def test_a_jupyter_server_whose_warm_starter_cannot_start_starts_without_it(monkeypatch, tmp_path):
    """Binder's server configuration calls `start_for_this_server()`: a speed-up, never a reason for the server
    not to start. A starter that cannot start (here: no temporary folder to put its socket in) leaves none
    exported, and kernels start as usual."""
    import tempfile

    from durable_course.warm_kernels import DEFAULT_PROVISIONER, start_for_this_server

    monkeypatch.delenv(warm_start.ENV_VAR, raising=False)
    monkeypatch.delenv(DEFAULT_PROVISIONER, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    assert start_for_this_server() is None
    assert warm_start.ENV_VAR not in os.environ


def test_ctrl_c_ends_a_child_as_it_would_an_interpreter_and_not_the_starter(starter, tmp_path):
    (tmp_path / "sleeper.py").write_text("import time\nprint('asleep', flush=True)\ntime.sleep(600)\n")
    log = tmp_path / "sleeper.log"
    with log.open("wb") as out:
        process = starter.launch([sys.executable, "-m", "sleeper"], cwd=str(tmp_path), stdout=out,
                                 stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    while "asleep" not in log.read_text():
        assert process.poll() is None
        time.sleep(0.02)
    os.kill(starter.process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == -signal.SIGINT and "KeyboardInterrupt" in log.read_text()
    assert starter.process.poll() is None  # the starter ignores it: whoever started it stops it
    write_probe(tmp_path, 1)
    assert run_probe(starter, tmp_path)[0].wait(timeout=30) == 0


def test_the_command_refuses_a_socket_path_that_exists(tmp_path):
    taken = tmp_path / "socket"
    taken.write_text("")
    done = subprocess.run([sys.executable, "-m", "durable_agent", "warm-start", "--socket", str(taken)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"durable-agent warm-start: {taken} already exists"
