"""One Temporal server for the whole course session (durable_course/course_server.py), against real processes:
the course server as `course.py lab` runs it, labs of two notebooks on it, a restart from its file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from durable_agent.server import free_port
from durable_course import course_server, events
from durable_course import lab as lab_module
from durable_course.lab import start_lab
from course_server_process import CourseServer
from jupyter_api import run_in_kernel
from other_notebook import ChangedInAnotherNotebook

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def shared(tmp_path, monkeypatch):
    server = CourseServer(tmp_path / "course" / "temporal.db")
    server.start()
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    yield server
    server.stop()


def test_a_kernel_knows_its_notebook_by_the_session_name_jupyter_gives_it():
    assert course_server.notebook_task_queue({"JPY_SESSION_NAME": "notebooks/04_chat.ipynb"}) == "course-04_chat"
    assert course_server.notebook_task_queue({"JPY_SESSION_NAME": "/home/ada/My Notes (1).ipynb"}) == \
        "course-My-Notes-1"
    assert course_server.notebook_task_queue({}) is None


def test_where_the_course_server_is():
    assert course_server.where({}) is None
    assert course_server.where({course_server.ADDRESS_ENV: "127.0.0.1:7300", course_server.UI_ENV: "http://x:8300"}) \
        == ("127.0.0.1:7300", "http://x:8300")
    # Under JupyterHub / Binder: the proxied server's port, and its UI behind the hub's prefix.
    assert course_server.where({"JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"}) == ("127.0.0.1:7233", "/user/ada/temporal/")


async def test_every_notebook_uses_the_course_server_each_on_its_own_task_queue(shared, monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/00_welcome.ipynb")
    first = await start_lab()
    first_chat = await first.new_chat()
    assert not first.temporal.embedded and first.temporal.address == f"127.0.0.1:{shared.port}"
    assert first.task_queue == "course-00_welcome" and first.ui_url == f"http://127.0.0.1:{shared.ui_port}"
    assert "task queue course-00_welcome" in repr(first)
    lab_module._current = None  # another notebook's kernel: its own lab, the first one keeps running
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/01_deterministic_orchestrator.ipynb")
    second = await start_lab(worker=False)
    await second.start_worker(workflows=[ChangedInAnotherNotebook])
    try:
        assert second.task_queue == "course-01_deterministic_orchestrator"
        other_chat = await second.new_chat()
        assert (await other_chat.send("What is 2 + 2?")).text == "the other notebook's code answered"
        # The second notebook's changed workflow never takes a turn of the first notebook's chat.
        for n in range(5):
            assert (await first_chat.send(f"What is {n} + 1?")).text == f"{n} + 1 = {n + 1}."
    finally:
        await second.stop()
        await first.stop()
    # lab.stop() stopped the workers, not the course server: the chats are still there to read.
    assert shared.process.poll() is None
    third = await start_lab(worker=False)
    try:
        history = await third.client.get_workflow_handle(first_chat.workflow_id).fetch_history()
        assert events.count(events.read(history), "WorkflowExecutionUpdateCompleted") == 5
    finally:
        await third.stop()


async def test_chats_of_earlier_notebooks_survive_a_restart_of_the_course_server(shared, monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/00_welcome.ipynb")
    lab = await start_lab()
    chat = await lab.new_chat()
    await chat.send("What is 6 * 7?")
    await lab.stop()
    shared.stop()
    shared.start()  # the same file: `python3 course.py lab` on another day
    lab = await start_lab()
    try:
        assert (await chat.send("And 6 * 8?")).text == "6 * 8 = 48."
        assert [m.content for m in await chat.history() if m.role == "user"] == ["What is 6 * 7?", "And 6 * 8?"]
    finally:
        await lab.stop()


async def test_a_course_server_that_does_not_answer_gives_one_line_and_a_server_of_the_notebooks_own(
        monkeypatch, capsys):
    monkeypatch.setenv(course_server.ADDRESS_ENV, f"127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setattr(course_server, "CONNECT_SECONDS", 0.5)
    lab = await start_lab(worker=False, ui=False)
    try:
        assert lab.temporal.embedded
        assert capsys.readouterr().err.strip().splitlines() == [
            f"[the course's Temporal server at {os.environ[course_server.ADDRESS_ENV]} does not answer: this "
            "notebook starts a server of its own, which stops with it]"]
    finally:
        await lab.stop()


WARM_LINE = "Warm starter for the kernels and worker processes:"


def test_course_py_lab_starts_the_course_server_and_stops_it_with_jupyterlab(tmp_path):
    """`python3 course.py lab`, end to end: the server comes up before JupyterLab, JupyterLab's kernels are told
    where it is, and Ctrl-C (SIGINT to the process group, as a terminal sends it) stops both."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, str(ROOT / "course.py"), "lab", "--no-browser", f"--port={port}",
                                "--ServerApp.token=t0ken"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        for line in process.stdout:  # course.py prints the server's addresses before it starts JupyterLab
            lines.append(line)
            if line.startswith(WARM_LINE):
                break
        server_line = next(line for line in lines if line.startswith("Temporal server for the course:"))
        address = server_line.split(": ", 1)[1].split(",")[0]
        ui = server_line.split("Web UI ", 1)[1].split(" ")[0]
        warm = lines[-1].split(": ", 1)[1].strip()
        assert _ui_answers(ui)
        assert _ui_answers(f"http://127.0.0.1:{port}", path="/api/status?token=t0ken")  # JupyterLab is up
        deadline = time.monotonic() + 120
        while not os.path.exists(warm):  # the warm starter answers once it has imported LiteLLM
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        kernel_env = run_in_kernel(f"http://127.0.0.1:{port}", "t0ken", "import os, sys; print(os.environ["
                                   "'DURABLE_COURSE_SERVER'], os.environ['DURABLE_COURSE_UI'], "
                                   "os.environ['DURABLE_AGENT_WARM_START'], 'litellm' in sys.modules)")
        # Forked from the session's warm starter: LiteLLM is there before the notebook asks for it.
        assert kernel_env == [address, ui, warm, "True"]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # a busy JupyterLab may still be starting: Ctrl-C again, as a user does
            os.killpg(process.pid, signal.SIGINT)
            rest, _ = process.communicate(timeout=120)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{ui}/api/v1/namespaces", timeout=5)
    assert not os.path.exists(warm)  # the warm starter stopped too, and its folder is gone


def _ui_answers(ui: str, seconds: float = 60.0, path: str = "/api/v1/namespaces") -> bool:
    """The Web UI answers its API (it starts a moment after the server, and answers 503 for a few seconds)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{ui}{path}", timeout=10).status == 200:
                return True
        except OSError:
            time.sleep(0.25)
    return False
