"""What a person reads when an attempt fails: one line where they are looking; the detail in a log file.

Primitive 2 (managed side effects): a failed activity attempt is often nothing to worry about, since
Temporal retries it. But Temporal's Python SDK logs each failed attempt as a warning with its whole
traceback, 17 lines or more, in a terminal or under a notebook cell. `quiet_logs()` routes the SDK's log:

- to the console, one line per failed attempt: `[plan_next_action attempt 2 failed: the model call failed: ...]`;
- to a log file (`log_path()`), everything, with tracebacks, for when the detail is needed.

The SDK's Rust core logs too (a gRPC call retried while the server restarts, a late activity completion);
its warnings go to the log file only, its errors to both.

In a notebook, `quiet_logs(console=False)` (what the course's `start_lab` does) sends everything to the log
file and nothing under the cells: a worker running in the kernel would otherwise print its lines under the
cell that started it, long after that cell finished, or under whichever cell started a worker of its own.
There, the code the learner runs shows a failing attempt where they are looking, read from the server.

    from durable_agent.logs import quiet_logs
    log_file = quiet_logs()      # once per process; calling it again replaces the previous set-up
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .config import redact_secrets

LOG_FILE_NAME = "durable-agent.log"
_MARK = "_durable_agent_handler"


def log_path() -> Path:
    return Path(tempfile.gettempdir()) / LOG_FILE_NAME


def _reason(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    lines = str(message).strip().splitlines() or [type(error).__name__]
    return redact_secrets(lines[0])


class OneLine(logging.Formatter):
    """One line for a record: which activity attempt failed and why, without the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        activity = getattr(record, "temporal_activity", None)
        if activity and error is not None:
            return f"[{activity.get('activity_type')} attempt {activity.get('attempt')} failed: {_reason(error)}]"
        text = record.getMessage().split(" ({", 1)[0].strip().splitlines()[0]
        if error is not None:
            text = f"{text}: {_reason(error)}"
        return redact_secrets(f"[{record.levelname.lower()}: {text}]")


CORE_LOGGER = "temporalio.core"
_core_forwarded = False


def _not_core_chatter(record: logging.LogRecord) -> bool:
    return not record.name.startswith(CORE_LOGGER) or record.levelno >= logging.ERROR


def _forward_core_logs() -> None:
    """Route the Rust core's log into Python's `logging` (by default it prints to stdout, with colours).
    Applies to clients connected from now on. Once per process."""
    global _core_forwarded
    if _core_forwarded:
        return
    _core_forwarded = True
    from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

    logging_config = LoggingConfig(filter=TelemetryFilter(core_level="WARN", other_level="WARN"),
                                   forwarding=LogForwardingConfig(logger=logging.getLogger(CORE_LOGGER)))
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=logging_config)), error_if_already_set=False)


class Redacted(logging.Formatter):
    """The full record, tracebacks included, with secret values replaced by `***`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_secrets(super().format(record))


def quiet_logs(stream: IO[str] | None = None, log_file: str | Path | None = None, *, console: bool = True) -> Path:
    """Send Temporal's warnings to `stream` (default: stderr) as one line each, and everything to a file.
    `console=False`: everything to the file only."""
    path = Path(log_file) if log_file else log_path()
    logger = logging.getLogger("temporalio")
    for handler in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = []
    if console:
        one_line = logging.StreamHandler(stream or sys.stderr)
        one_line.setLevel(logging.WARNING)
        one_line.setFormatter(OneLine())
        one_line.addFilter(_not_core_chatter)
        handlers.append(one_line)
    detail = logging.FileHandler(path, encoding="utf-8", delay=True)
    detail.setLevel(logging.INFO)
    detail.setFormatter(Redacted("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers.append(detail)
    for handler in handlers:
        setattr(handler, _MARK, True)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    _forward_core_logs()
    return path


@contextlib.contextmanager
def silenced(logger_name: str = "temporalio") -> Iterator[None]:
    """Nothing from `logger_name` (the SDK, by default) while the block runs: for an expected failure that the
    caller reports in its own words (a replay that must fail, a tool that fails on purpose)."""
    logger = logging.getLogger(logger_name)
    level, logger.level = logger.level, logging.CRITICAL
    try:
        yield
    finally:
        logger.setLevel(level)
