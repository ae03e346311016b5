"""`python3 course.py lab`: its arguments reach JupyterLab, and the JupyterLab it opens asks no questions.

The real command is run (with the environment set-up skipped: the test's interpreter is the environment),
and the JupyterLab it starts is asked over its REST API what it serves. A fake `BROWSER` records any attempt
to open a web browser. The toast itself ("Would you like to get notified about official Jupyter news?") is
checked in a real browser by tests/test_browser.py.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from durable_agent.server import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import course  # noqa: E402  (course.py lives at the repository's root, not in a package)

NOTIFICATION = "@jupyterlab/apputils-extension:notification"


def test_the_settings_go_where_this_jupyterlab_reads_them():
    from jupyterlab.commands import get_app_dir

    if os.environ.get("JUPYTERLAB_DIR"):
        pytest.skip("JUPYTERLAB_DIR moves JupyterLab's app folder away from the environment")
    assert course.lab_overrides_path(sys.prefix) == Path(get_app_dir()) / "settings" / "overrides.json"


def test_the_settings_are_merged_with_what_is_there(tmp_path):
    path = course.lab_overrides_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
                                NOTIFICATION: {"doNotDisturbMode": True, "fetchNews": "true"}}))
    assert course.configure_jupyterlab(tmp_path) == path
    assert course.configure_jupyterlab(tmp_path) == path  # twice: the same file
    assert json.loads(path.read_text()) == {
        "@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},  # kept
        NOTIFICATION: {"doNotDisturbMode": True, "fetchNews": "false", "checkForUpdates": False}}


def test_a_broken_settings_file_is_a_clear_error_and_is_left_alone(tmp_path):
    path = course.lab_overrides_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(SystemExit, match="overrides.json is not valid JSON; fix or delete it"):
        course.configure_jupyterlab(tmp_path)
    assert path.read_text() == "{not json"


def _get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_lab_passes_its_arguments_to_jupyterlab(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    prefix = tmp_path / "env"  # stands for .venv: course.py writes its JupyterLab settings there
    opened = tmp_path / "browser-opened"
    fake_browser = tmp_path / "fake-browser"
    fake_browser.write_text(f"#!/bin/sh\necho \"$@\" >> {opened}\n")
    fake_browser.chmod(0o755)
    script = (f"import sys, pathlib; sys.path.insert(0, {str(ROOT)!r}); import course\n"
              f"course.ensure_environment = lambda: None\n"
              f"course.PYTHON, course.VENV = sys.executable, pathlib.Path({str(prefix)!r})\n"
              f"sys.exit(course.main(sys.argv[1:]))")
    env = {**os.environ, "BROWSER": str(fake_browser),
           **{name: str(tmp_path / name.lower()) for name in (
               "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
               "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}}
    settings_dir = course.lab_overrides_path(prefix).parent
    log = (tmp_path / "lab.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", script, "lab", "--port", str(port), "--no-browser", "--ServerApp.ip=127.0.0.1",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--LabApp.app_settings_dir={settings_dir}"],  # JupyterLab reads prefix's settings, as it would .venv's
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)  # its own process group: course.py and the JupyterLab it starts
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # JupyterLab answers on the port given after `lab`
            try:
                _get(f"{base}/api/status", token)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on port {port}:\n{(tmp_path / 'lab.log').read_text()}")
                time.sleep(0.2)
        # The settings course.py wrote are the ones the served JupyterLab uses: no news toast, no update check.
        # (Overrides become the schema's defaults; the learner's own settings, none yet, would win.)
        served = _get(f"{base}/lab/api/settings/{NOTIFICATION}", token)
        defaults = {name: value.get("default") for name, value in served["schema"]["properties"].items()}
        assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False, defaults
        assert "fetchNews" not in served["settings"], served["settings"]
        time.sleep(1)  # JupyterLab opens a browser (if it does) right after it starts listening
        assert not opened.exists(), f"--no-browser did not reach JupyterLab: it opened {opened.read_text()}"
    finally:
        try:
            urllib.request.urlopen(urllib.request.Request(
                f"{base}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"}), timeout=10)
            process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the group this test started, by its id
            process.wait()
        log.close()
    assert process.returncode == 0


def test_binder_sets_the_same_settings(tmp_path):
    """binder/postBuild's own line, run by bash with a fresh environment's `python` first on the PATH."""
    import venv

    [line] = [line for line in (ROOT / "binder" / "postBuild").read_text().splitlines()
              if "configure_jupyterlab" in line and not line.startswith("#")]
    env_dir = tmp_path / "binder-env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    subprocess.run(["bash", "-c", line], cwd=ROOT, check=True,
                   env={**os.environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    written = json.loads(course.lab_overrides_path(env_dir).read_text())
    assert written == course.LAB_OVERRIDES
