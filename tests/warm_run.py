"""`subprocess.run` for the course's commands (`python -m MODULE ...`), forked from the suite's warm starter.

A command that chats imports LiteLLM, seconds of CPU in a new interpreter. Forked from the warm starter that
each test process exports (conftest.py, `durable_agent/warm_start.py`), it starts as a new interpreter would,
with its own argv, environment, working directory and standard streams, and LiteLLM already imported: what
`python3 course.py lab` gives a learner's terminal commands too. Started as usual when it cannot be forked.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Sequence

from durable_agent.warm_start import launch


def run(command: Sequence[str], *, input: str | None = None, timeout: float, cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Like `subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout, ...)`."""
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        stdin.write((input or "").encode())
        stdin.seek(0)
        process = launch(command, env=env, cwd=str(cwd) if cwd is not None else None, stdin=stdin, stdout=stdout,
                         stderr=stderr)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(list(command), process.returncode, stdout.read().decode(),
                                           stderr.read().decode())
