"""The course's Temporal server as `course.py lab` runs it, a real process, for the tests that need one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from durable_agent.server import free_port
from durable_course import course_server


class CourseServer:
    def __init__(self, db: Path) -> None:
        self.db, self.port, self.ui_port = db, free_port(), free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "durable_course.course_server", "--db", str(self.db), "--port", str(self.port),
             "--ui-port", str(self.ui_port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in self.process.stdout:  # the server command prints its addresses when it is ready
            if "Web UI:" in line:
                return
        raise RuntimeError("the course server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    @property
    def env(self) -> dict[str, str]:
        return {course_server.ADDRESS_ENV: f"127.0.0.1:{self.port}",
                course_server.UI_ENV: f"http://127.0.0.1:{self.ui_port}"}
