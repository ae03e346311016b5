"""GitHub Codespaces: `.devcontainer/devcontainer.json` sets up the README's `.venv` with one command and
forwards the course's ports. The set-up command is run for real, in a copy of the course whose `.venv` course.py
installed before (its stamp matches requirements.lock and pyproject.toml), so it must reuse it and finish at once."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".devcontainer" / "devcontainer.json"


@pytest.fixture(scope="module")
def config() -> dict:
    return json.loads(CONFIG.read_text())  # plain JSON: no comments, so any tool can read it


def test_the_set_up_command_is_the_readmes(config):
    command = config["postCreateCommand"]
    assert command == "python3 course.py setup"
    readme = (ROOT / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", readme, re.S))
    assert re.search(rf"^{re.escape(command)}\b", blocks, re.M), "the README shows the same command"


def test_the_course_ports_are_forwarded(config):
    from jupyter_server.serverapp import DEFAULT_JUPYTER_SERVER_PORT

    from durable_agent.cli import parser

    server = parser()[1].choices["server"].parse_args([])
    expected = {DEFAULT_JUPYTER_SERVER_PORT: "JupyterLab", server.ui_port: "Temporal Web UI", server.port: "Temporal server"}
    assert set(config["forwardPorts"]) == set(expected)
    for port, label in expected.items():
        assert config["portsAttributes"][str(port)]["label"].startswith(label)
    assert config["image"].startswith("mcr.microsoft.com/devcontainers/python:") and "3.1" in config["image"]


def test_the_set_up_command_runs_and_reuses_an_installed_environment(config, tmp_path):
    # A copy of the course whose .venv course.py installed before: its python, and the stamp course.py writes
    # after installing requirements.lock and pyproject.toml. The set-up must see it and return at once.
    for name in ("course.py", "requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    fingerprint = hashlib.sha256((ROOT / "requirements.lock").read_bytes() + (ROOT / "pyproject.toml").read_bytes())
    (tmp_path / ".venv" / ".course-installed").write_text(fingerprint.hexdigest())
    done = subprocess.run(shlex.split(config["postCreateCommand"]), cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")  # no "Creating", no "Installing"


def test_setup_alone_is_a_course_command():
    done = subprocess.run([sys.executable, str(ROOT / "course.py"), "nonsense"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and "python3 course.py setup" in done.stdout
