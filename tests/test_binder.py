"""Binder: the configuration in binder/, and the Temporal UI served through jupyter-server-proxy.

mybinder.org itself cannot run here; what can be checked is checked: Binder installs the course's lock, and
under JupyterHub the embedded server's UI answers through a real Jupyter server's jupyter-server-proxy route,
in the course's own environment, on every run (under CI=true it cannot be skipped). Building a fresh
environment from binder/ and running every notebook in it takes minutes, so that runs only with
DURABLE_AGENT_BINDER_VENV=1 (pip's cache makes the second build faster).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from durable_agent import warm_start
from durable_agent.server import free_port, proxied_ui_path, start_temporal
from durable_agent.session import start_chat
from durable_course import course_server
from jupyter_api import run_in_kernel
from processes import children, command_line, gone, wait_gone

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
PREFIX = "/user/ada/"  # what JupyterHub puts in JUPYTERHUB_SERVICE_PREFIX


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


def test_binder_installs_the_lock_which_has_the_proxy():
    lines = requirement_lines(BINDER / "requirements.txt")
    assert "-r ../requirements.lock" in lines, "Binder installs the course's own pins"
    locked = {re.split(r"[=<>;\[ ]", line, 1)[0].lower().replace("_", "-")
              for line in requirement_lines(ROOT / "requirements.lock") if not line.startswith("-")}
    assert "jupyter-server-proxy" in locked, "the UI is proxied through Jupyter, and the test below needs it"
    for line in (line for line in lines if not line.startswith("-")):  # Binder-only extras, should any come back
        name, _, version = line.partition("==")
        assert version and re.fullmatch(r"[\w.]+", version), f"{line!r} is not pinned with =="
        assert name.lower() not in locked, f"{name} is pinned in requirements.lock already"


def test_binder_python_matches_the_project():
    runtime = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-3\.(\d+)", runtime)
    assert match, f"runtime.txt says {runtime!r}"
    required = re.search(r'^requires-python = ">=3\.(\d+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert required and int(match.group(1)) >= int(required.group(1))


def test_post_build_installs_the_package():
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "postBuild must be executable"
    assert re.search(r"pip install .*--no-deps -e \.$", post_build.read_text(), re.M)


def test_proxied_ui_path():
    assert proxied_ui_path(8233, {}) is None
    assert proxied_ui_path(8233, {"JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"}) == "/user/ada/proxy/absolute/8233"
    assert proxied_ui_path(8233, {"JUPYTERHUB_SERVICE_PREFIX": "/"}) == "/proxy/absolute/8233"


# --- the Web UI through a real Jupyter server with jupyter-server-proxy ---------------------------------------


def _get(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read().decode(errors="replace")


async def _get_when_up(url: str, jupyter: dict, timeout: float = 120) -> tuple[int, str]:
    """GET `url` as soon as it answers (Jupyter starting; the UI's first seconds of 503). The deadline only
    ends a test whose server never comes up: nothing is asserted about how long anything took."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.to_thread(_get, url, jupyter["token"])
        except OSError as err:
            if jupyter["process"].poll() is not None or time.monotonic() > deadline:
                log = jupyter["log"].read_text(errors="replace")[-3000:]
                pytest.fail(f"{url} did not answer ({err}); the Jupyter server's log:\n{log}")
            await asyncio.sleep(0.2)


@pytest.fixture
def jupyter_server(tmp_path, monkeypatch):
    yield from _jupyter_server(tmp_path, monkeypatch)


@pytest.fixture
def jupyter_with_course_server(tmp_path, monkeypatch):
    """The same, configured as binder/postBuild configures Binder: jupyter-server-proxy runs the course server."""
    port = free_port()
    monkeypatch.setenv(course_server.PORT_ENV, str(port))
    monkeypatch.delenv(warm_start.ENV_VAR, raising=False)  # Binder's server has no warm starter but its own
    config = re.search(r"<<'CONFIG'\n(.*?)\nCONFIG\n", (BINDER / "postBuild").read_text(), re.S).group(1)
    config_dir = tmp_path / "jupyter_config_dir"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.py").write_text(  # as postBuild writes it, with this test's database
        config.replace("proxy_config()", f"proxy_config(db_file={str(tmp_path / 'course.db')!r})"))
    for running in _jupyter_server(tmp_path, monkeypatch):
        yield {**running, "port": port}


def _jupyter_server(tmp_path, monkeypatch):
    """A real Jupyter server under a JupyterHub-like prefix, with jupyter-server-proxy loaded as on Binder."""
    try:
        import jupyter_server_proxy  # noqa: F401
    except ImportError as err:
        pytest.skip(f"jupyter-server-proxy is not installed ({err}); it is in requirements.lock")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", PREFIX)  # as JupyterHub sets it for the kernel
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, **{name: str(tmp_path / name.lower()) for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")}}
    log = tmp_path / "jupyter.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "server", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--ServerApp.base_url={PREFIX}",
             f"--IdentityProvider.token={token}", "--ServerApp.allow_root=True", f"--ServerApp.root_dir={tmp_path}"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield {"base": f"http://127.0.0.1:{port}", "token": token, "process": process, "log": log}
    finally:
        process.terminate()  # by its own pid
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.ci_required
async def test_the_ui_answers_through_jupyter_server_proxy(jupyter_server, task_queue):
    base = jupyter_server["base"]
    assert (await _get_when_up(f"{base}{PREFIX}api/status", jupyter_server))[0] == 200
    temporal = await start_temporal()  # under JUPYTERHUB_SERVICE_PREFIX: the UI is told its proxied path
    try:
        path = temporal.ui_url
        port = int(path.rsplit("/", 1)[1])
        assert path == f"{PREFIX}proxy/absolute/{port}"
        # jupyter-server-proxy's "absolute" route forwards the full path, so the UI must serve its pages and
        # assets under it; it does because the server was started with --ui-public-path.
        status, page = await _get_when_up(f"{base}{path}/", jupyter_server)
        assert status == 200 and f'href="{path}/_app/' in page
        asset = re.search(r'href="([^"]+[.]js)"', page)
        assert asset and asset.group(1).startswith(f"{path}/_app/"), page[:2000]
        assert (await _get_when_up(f"{base}{asset.group(1)}", jupyter_server))[0] == 200
        # The UI's API, through the proxy, reads the real server: a chat started here is listed there.
        chat = await start_chat(temporal.client, task_queue=task_queue)
        assert temporal.workflow_url(chat.workflow_id) == f"{path}/namespaces/default/workflows/{chat.workflow_id}"
        listed: list[str] = []
        while chat.workflow_id not in listed:  # the server's visibility store lists it a moment after the start
            status, body = await _get_when_up(f"{base}{path}/api/v1/namespaces/default/workflows", jupyter_server)
            assert status == 200
            listed = [w["execution"]["workflowId"] for w in json.loads(body).get("executions") or []]
            await asyncio.sleep(0.1)
    finally:
        await temporal.shutdown()


@pytest.mark.ci_required
async def test_on_binder_the_course_server_runs_under_jupyter_server_proxy(jupyter_with_course_server, task_queue):
    """Nobody has opened the "Temporal UI" tile yet: the first start_lab() asks the proxy, which starts the
    course server; its UI answers behind the hub's prefix, and lists a chat started from the kernel."""
    jupyter = jupyter_with_course_server
    base = jupyter["base"]
    assert (await _get_when_up(f"{base}{PREFIX}api/status", jupyter))[0] == 200
    env = {"JUPYTERHUB_SERVICE_PREFIX": PREFIX, "JUPYTERHUB_SERVICE_URL": f"{base}{PREFIX}",
           "JUPYTERHUB_API_TOKEN": jupyter["token"], course_server.PORT_ENV: str(jupyter["port"])}
    temporal = await course_server.connect(env)
    assert temporal is not None and not temporal.embedded
    assert temporal.address == f"127.0.0.1:{jupyter['port']}" and temporal.ui_url == f"{PREFIX}temporal/"
    status, page = await _get_when_up(f"{base}{PREFIX}temporal/", jupyter)
    assert status == 200 and f'href="{PREFIX}temporal/_app/' in page, page[:2000]
    chat = await start_chat(temporal.client, task_queue=task_queue)
    listed: list[str] = []
    while chat.workflow_id not in listed:
        status, body = await _get_when_up(f"{base}{PREFIX}temporal/api/v1/namespaces/default/workflows", jupyter)
        assert status == 200
        listed = [w["execution"]["workflowId"] for w in json.loads(body).get("executions") or []]
        await asyncio.sleep(0.1)
    await temporal.shutdown()  # a kernel's lab stopping: the course server runs on
    assert await course_server.connect(env) is not None


@pytest.mark.ci_required
async def test_on_binder_kernels_are_forked_from_the_servers_warm_starter(jupyter_with_course_server):
    """Binder starts the Jupyter server itself, without course.py: its configuration (binder/postBuild) starts a
    warm starter beside it. A kernel started through the server is forked from it, with LiteLLM imported, and
    the starter ends with the server."""
    jupyter = jupyter_with_course_server
    assert (await _get_when_up(f"{jupyter['base']}{PREFIX}api/status", jupyter))[0] == 200
    starter, socket_path = _warm_starter_of(jupyter["process"].pid)
    deadline = time.monotonic() + 120
    while not os.path.exists(socket_path):  # it answers once it has imported LiteLLM
        assert time.monotonic() < deadline and not gone(starter)
        await asyncio.sleep(0.1)
    seen = await asyncio.to_thread(run_in_kernel, f"{jupyter['base']}{PREFIX}".rstrip("/"), jupyter["token"],
                                   "import os, sys; print(os.environ['DURABLE_AGENT_WARM_START'], os.getppid(), "
                                   "'litellm' in sys.modules)")
    assert seen == [socket_path, str(starter), "True"]
    jupyter["process"].terminate()
    jupyter["process"].wait(timeout=30)
    assert await asyncio.to_thread(wait_gone, starter), "the warm starter outlived the Jupyter server"


def _warm_starter_of(server_pid: int) -> tuple[int, str]:
    """The warm starter the Jupyter server started: its pid and socket, read from its command line."""
    for pid in children(server_pid):
        argv = command_line(pid)
        if "warm-start" in argv:
            return pid, argv[argv.index("--socket") + 1]
    pytest.fail(f"no warm starter among the children of the Jupyter server (pid {server_pid})")


def test_post_build_configures_the_course_server():
    config = re.search(r"<<'CONFIG'\n(.*?)\nCONFIG\n", (BINDER / "postBuild").read_text(), re.S)
    assert config and "c.ServerProxy.servers = proxy_config()" in config.group(1)
    entry = course_server.proxy_config()["temporal"]
    assert entry["launcher_entry"]["title"] == "Temporal UI" and entry["absolute_url"] is True
    assert entry["command"][1:3] == ["-m", "durable_course.course_server"] and "{port}" in entry["command"]


@pytest.mark.timeout(1800)
@pytest.mark.skipif(os.environ.get("DURABLE_AGENT_BINDER_VENV") != "1",
                    reason="minutes long: set DURABLE_AGENT_BINDER_VENV=1 to build binder/ in a fresh venv")
def test_a_fresh_environment_from_binder_runs_every_notebook(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
           "LLM_MODEL": "", "TEMPORAL_ADDRESS": ""}
    env.pop("PYTHONPATH", None)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", "binder/requirements.txt"], cwd=ROOT, env=env, check=True)
    subprocess.run(["bash", "binder/postBuild"], cwd=ROOT, env=env, check=True)
    # Every notebook, and the Web UI through jupyter-server-proxy (the test above), in the fresh environment.
    result = subprocess.run([python, "-m", "pytest", "notebooks", "tests/test_binder.py", "-q", "-p",
                             "no:cacheprovider", "-k", "not fresh_environment"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
