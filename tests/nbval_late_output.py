"""nbval, made to see what JupyterLab shows after a cell has finished: no notebook writes to stderr late.

nbval reads a cell's output messages until the cell finishes and skips every message that belongs to another
cell. But a worker started as a background task in a cell keeps that cell's context (its parent header), so
its log lines (a failed activity attempt, a failing workflow task) keep arriving for that cell after it
finished, and JupyterLab shows them there, under a cell the learner left long ago. nbval skips them.

This plugin (registered by the root `conftest.py`, so it runs in the suite's one nbval pass over every notebook
and exercise solution) watches the messages nbval reads from the kernel. A stderr line that arrives for a cell
that has already finished fails the cell that is running when it comes, naming the cell it belongs to; after a
notebook's last cell, it waits `DRAIN_SECONDS` for whatever still comes. nbval itself already fails a cell that
writes to stderr while it runs, because no committed notebook has stderr output to compare it with.

It wraps two methods of nbval's `RunningKernel` (nbval has no hook for this); `tests/test_what_jupyterlab_shows.py`
proves it catches a late line, by running nbval with it on a notebook that prints one.
"""

from __future__ import annotations

import functools
import time
from queue import Empty

import pytest
from nbval.kernel import RunningKernel
from nbval.plugin import IPyNbCell

DRAIN_SECONDS = 1.0


class LateOutput:
    """The cells a kernel was asked to run, in order, and the stderr lines that came for one after it finished."""

    def __init__(self) -> None:
        self.cells: dict[str, str] = {}  # message id of an execute request -> the first line of the cell's source
        self.running: str | None = None
        self.late: list[str] = []

    def see(self, message: dict) -> None:
        parent = message.get("parent_header", {}).get("msg_id")
        if parent in self.cells and parent != self.running and message.get("msg_type") == "stream" \
                and message["content"].get("name") == "stderr":
            for line in message["content"].get("text", "").splitlines():
                if line.strip():
                    self.late.append(f"the cell starting {self.cells[parent]!r} wrote to stderr after it had "
                                     f"finished: {line}")

    def take(self) -> list[str]:
        found, self.late = self.late, []
        return found


def _watched(kernel: RunningKernel) -> LateOutput:
    if not hasattr(kernel, "late_output"):
        kernel.late_output = LateOutput()
    return kernel.late_output


def _wrap_kernel() -> None:
    if getattr(RunningKernel, "_late_output_wrapped", False):
        return
    execute, get_message = RunningKernel.execute_cell_input, RunningKernel.get_message

    @functools.wraps(execute)
    def execute_cell_input(self, cell_input, allow_stdin=None):
        msg_id = execute(self, cell_input, allow_stdin=allow_stdin)
        watched = _watched(self)
        lines = (cell_input or "").strip().splitlines()
        watched.cells[msg_id] = lines[0][:60] if lines else ""
        watched.running = msg_id
        return msg_id

    @functools.wraps(get_message)
    def get_message_watched(self, stream, timeout=None):
        message = get_message(self, stream, timeout=timeout)
        if stream == "iopub":
            _watched(self).see(message)
        return message

    RunningKernel.execute_cell_input = execute_cell_input
    RunningKernel.get_message = get_message_watched
    RunningKernel._late_output_wrapped = True


def pytest_configure(config: pytest.Config) -> None:
    _wrap_kernel()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last: dict[object, pytest.Item] = {}
    for item in items:
        if isinstance(item, IPyNbCell):
            last[item.parent] = item
    for item in last.values():
        item.drains_late_output = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    result = yield
    kernel = getattr(item.parent, "kernel", None) if isinstance(item, IPyNbCell) else None
    if kernel is None or not hasattr(kernel, "late_output"):
        return result
    watched = kernel.late_output
    if getattr(item, "drains_late_output", False) and kernel.is_alive():
        watched.running = None  # the last cell has finished too: whatever comes now is late
        deadline = time.monotonic() + DRAIN_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                kernel.get_message("iopub", timeout=left)
            except Empty:
                break
    late = watched.take()
    if late:
        pytest.fail("JupyterLab would show this under a cell that had already finished (nbval does not look "
                    "there):\n" + "\n".join(late), pytrace=False)
    return result
