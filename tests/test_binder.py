"""Binder: the configuration in binder/, and the Temporal UI served through jupyter-server-proxy.

mybinder.org itself cannot run here; what can be checked is checked: the requirements Binder installs are the
course's lock plus pinned extras, and under JupyterHub the embedded server's UI answers at the proxied path.
Building a fresh environment from binder/ and running every notebook in it takes minutes, so it runs only with
DURABLE_AGENT_BINDER_VENV=1 (pip's cache makes the second build faster).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from durable_agent.server import proxied_ui_path, start_temporal

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


def test_binder_installs_the_lock_plus_pinned_extras():
    lines = requirement_lines(BINDER / "requirements.txt")
    assert "-r ../requirements.lock" in lines, "Binder installs the course's own pins"
    locked = {re.split(r"[=<>;\[ ]", line, 1)[0].lower().replace("_", "-")
              for line in requirement_lines(ROOT / "requirements.lock") if not line.startswith("-")}
    extras = [line for line in lines if not line.startswith("-")]
    assert any(line.startswith("jupyter-server-proxy==") for line in extras), "the UI is proxied through Jupyter"
    for line in extras:
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


async def test_under_jupyterhub_the_ui_answers_at_the_proxied_path(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    temporal = await start_temporal()
    try:
        path = temporal.ui_url
        port = int(path.rsplit("/", 1)[1])
        assert path == f"/user/ada/proxy/absolute/{port}"
        assert temporal.workflow_url("chat-1") == f"{path}/namespaces/default/workflows/chat-1"
        page = ""
        for _ in range(100):  # the UI starts a moment after the server
            try:
                page = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}{path}/", timeout=5).read().decode())
                break
            except OSError:
                await asyncio.sleep(0.1)
        # jupyter-server-proxy's "absolute" route forwards the full path, so the UI must serve its pages and
        # assets under it; it does because the server was started with --ui-public-path.
        assert f'href="{path}/_app/' in page
    finally:
        await temporal.shutdown()


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
    result = subprocess.run([python, "-m", "pytest", "notebooks", "-q", "-p", "no:cacheprovider"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    # The Web UI through jupyter-server-proxy, as on Binder: a Jupyter server under a JupyterHub-like prefix.
    proxy = subprocess.run([python, "-c", PROXY_CHECK], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=180)
    assert proxy.returncode == 0 and "index 200 True, asset 200, api 200" in proxy.stdout, proxy.stdout + proxy.stderr


PROXY_CHECK = r"""
import asyncio, os, re, subprocess, sys, time, urllib.request
os.environ["JUPYTERHUB_SERVICE_PREFIX"] = "/user/test/"
from durable_agent.server import free_port, start_temporal

def get(url):
    request = urllib.request.Request(url, headers={"Authorization": "token secret"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read().decode(errors="replace")

def get_when_up(url):
    for _ in range(150):
        try:
            return get(url)
        except OSError:
            time.sleep(0.2)
    return get(url)

async def main():
    port = free_port()
    jupyter = subprocess.Popen([sys.executable, "-m", "jupyter", "server", "--no-browser", f"--port={port}",
                                "--ServerApp.base_url=/user/test/", "--IdentityProvider.token=secret",
                                "--allow-root"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    temporal = await start_temporal()
    try:
        base = f"http://127.0.0.1:{port}{temporal.ui_url}"
        status, page = get_when_up(base + "/")
        asset = re.search(r'href="([^"]+[.]js)"', page).group(1)
        api = get_when_up(base + "/api/v1/namespaces/default/workflows")[0]
        print(f'index {status} {chr(34).join(["href=", temporal.ui_url + "/_app/"]) in page}, '
              f'asset {get(f"http://127.0.0.1:{port}{asset}")[0]}, api {api}')
    finally:
        await temporal.shutdown()
        jupyter.terminate()
        jupyter.wait()

asyncio.run(main())
"""
