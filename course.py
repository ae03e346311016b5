#!/usr/bin/env python3
"""Set up and run the course with nothing but Python 3.10+.

    python3 course.py lab     # create .venv if needed, install the pinned packages, open JupyterLab
    python3 course.py test    # the same set-up, then run the whole test suite (extra args go to pytest)

Arguments after `lab` go to JupyterLab: `python3 course.py lab --port 8890 --no-browser`.

The first run creates `.venv/` beside this file and installs `requirements.lock` (every package pinned)
plus this project; later runs reuse it, and reinstall only when the lock file or pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
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


def run(command: list[str], **overrides: str) -> int:
    env = {**os.environ, "VIRTUAL_ENV": str(VENV), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           **overrides}
    return subprocess.call(command, cwd=ROOT, env=env)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"lab", "test", "setup"}:
        print(__doc__)
        return 2
    ensure_environment()
    configure_jupyterlab(VENV)
    if argv[0] == "lab":
        # From the repository root, so notebooks/, exercises/ and solutions/ are all in the file browser.
        as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # containers
        return run([str(PYTHON), "-m", "jupyter", "lab", f"--ServerApp.root_dir={ROOT}", *as_root,
                    "notebooks/00_welcome.ipynb", *argv[1:]])
    if argv[0] == "test":
        # The tests and the notebooks' stored outputs assume the offline model and an embedded server,
        # whatever a learner's .env says (an empty variable wins over .env and means "not set").
        return run([str(PYTHON), "-m", "pytest", *argv[1:]], LLM_MODEL="", TEMPORAL_ADDRESS="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
