#!/usr/bin/env python3
"""Set up and run the course with nothing but Python 3.10+.

    python3 course.py lab     # create .venv if needed, install the pinned packages, open JupyterLab
    python3 course.py test    # the same set-up, then run the whole test suite (extra args go to pytest)
    python3 course.py setup   # only the set-up (a codespace runs this once: .devcontainer/)

`lab` passes its other arguments to JupyterLab (`--port 8899`, `--no-browser`), and runs the course's
Temporal server beside it (chats kept in `.course/temporal.db`; Web UI at http://127.0.0.1:8233, or the next
free port), and a warm starter that JupyterLab's kernels and the notebooks' worker processes are forked from,
with LiteLLM already imported (durable_agent/warm_start.py). Ctrl-C in this terminal stops them all.

The first run creates `.venv/` beside this file and installs `requirements.lock` (every package pinned)
plus this project; later runs reuse it, and reinstall only when the lock file or pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".course-installed"
# JupyterLab settings the course sets for everyone (merged into <env>/share/jupyter/lab/settings/overrides.json):
# no "Would you like to get notified about official Jupyter news?" toast over the first notebook, and no
# update check (it, too, would fetch from the internet).
LAB_OVERRIDES = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.lock", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_environment() -> None:
    if sys.version_info < (3, 10):
        sys.exit(f"Python 3.10 or newer is needed; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"Creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    print("Installing the pinned packages (a few minutes, once) ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements.lock")], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(_fingerprint())


def lab_overrides_path(prefix: Path | str) -> Path:
    """Where the JupyterLab of the environment at `prefix` reads its overrides (its app settings folder)."""
    return Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"


def configure_jupyterlab(prefix: Path | str) -> Path:
    """Merge LAB_OVERRIDES into the JupyterLab of the environment at `prefix`; other settings in the file
    are kept. Binder's postBuild calls it too. Returns the file's path."""
    path = lab_overrides_path(prefix)
    try:
        current = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        sys.exit(f"{path} is not valid JSON; fix or delete it, then run this again")
    for plugin, settings in LAB_OVERRIDES.items():
        current.setdefault(plugin, {}).update(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path


def venv_env(**overrides: str) -> dict[str, str]:
    return {**os.environ, "VIRTUAL_ENV": str(VENV), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **overrides}


def run(command: list[str], **overrides: str) -> int:
    return subprocess.call(command, cwd=ROOT, env=venv_env(**overrides))


def _free(port: int) -> int:
    """`port` if nothing listens there, else any free port."""
    for wanted in (port, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", wanted))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free port")


def start_course_server() -> tuple[subprocess.Popen, dict[str, str]]:
    """The course's Temporal server, for every notebook of this session; returns it and what kernels need."""
    state = ROOT / ".course"
    state.mkdir(exist_ok=True)
    port, ui_port = _free(7233), _free(8233)
    log = (state / "server.log").open("wb")
    server = subprocess.Popen([str(PYTHON), "-m", "durable_course.course_server", "--db", str(state / "temporal.db"),
                               "--port", str(port), "--ui-port", str(ui_port)],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while server.poll() is None and time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    if server.poll() is not None:
        raise SystemExit(f"the course's Temporal server did not start; see {state / 'server.log'}")
    ui = f"http://127.0.0.1:{ui_port}"
    print(f"Temporal server for the course: 127.0.0.1:{port}, Web UI {ui} (chats kept in .course/temporal.db)")
    print("Ctrl-C here stops JupyterLab and this server.", flush=True)
    return server, {"DURABLE_COURSE_SERVER": f"127.0.0.1:{port}", "DURABLE_COURSE_UI": ui}


def start_warm_starter() -> tuple[subprocess.Popen, dict[str, str]]:
    """A warm starter (durable_agent/warm_start.py) for this session: JupyterLab's kernels, and the worker
    processes the notebooks start, are forked from it with LiteLLM already imported. Returns it and what
    JupyterLab needs to use it (without it, or until it is ready, they start as usual)."""
    socket_path = os.path.join(tempfile.mkdtemp(prefix="durable-course-warm-"), "socket")
    log = (ROOT / ".course" / "warm-start.log").open("wb")
    starter = subprocess.Popen([str(PYTHON), "-m", "durable_agent", "warm-start", "--socket", socket_path],
                               cwd=ROOT, env=venv_env(), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    print(f"Warm starter for the kernels and worker processes: {socket_path}", flush=True)
    return starter, {"DURABLE_AGENT_WARM_START": socket_path, "JUPYTER_DEFAULT_PROVISIONER_NAME": "durable-warm"}


def stop(process: subprocess.Popen, seconds: float = 20) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"lab", "test", "setup"}:
        print(__doc__)
        return 2
    ensure_environment()
    configure_jupyterlab(VENV)
    if argv[0] == "lab":
        # From the repository root, so notebooks/, exercises/ and solutions/ are all in the file browser.
        as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # containers
        server, where = start_course_server()
        starter, warm = start_warm_starter()
        try:
            return run([str(PYTHON), "-m", "jupyter", "lab", f"--ServerApp.root_dir={ROOT}", *as_root,
                        "notebooks/00_welcome.ipynb", *argv[1:]], **where, **warm)
        except KeyboardInterrupt:
            return 130
        finally:
            stop(server)  # it stops its dev server, which keeps every chat in the file
            stop(starter)  # and any kernel still running that it forked
            shutil.rmtree(os.path.dirname(warm["DURABLE_AGENT_WARM_START"]), ignore_errors=True)
    if argv[0] == "test":
        # The tests and the notebooks' stored outputs assume the offline model and an embedded server,
        # whatever a learner's .env says (an empty variable wins over .env and means "not set").
        return run([str(PYTHON), "-m", "pytest", *argv[1:]], LLM_MODEL="", TEMPORAL_ADDRESS="",
                   DURABLE_COURSE_SERVER="", JPY_SESSION_NAME="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
