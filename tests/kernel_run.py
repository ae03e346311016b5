"""Run a notebook the way JupyterLab shows it: every output message kept, each under the cell it belongs to.

nbval and nbclient read a cell's outputs until that cell finishes, and drop whatever arrives for it later. But
a worker started as a background task in a cell keeps that cell's context (its parent header), so its log
lines keep arriving for that cell, and JupyterLab shows them there, under a cell that finished long ago.
`run_notebook` keeps every iopub message of the kernel, attributes it to its cell by the parent message id,
and notes whether it arrived after the cell had finished ("late").
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

import nbformat


@dataclass
class Output:
    kind: str          # stream name ("stdout", "stderr"), or "error", "display_data", "execute_result"
    text: str
    late: bool         # arrived after its cell had finished


@dataclass
class CellRun:
    index: int         # position in the notebook (all cells, markdown included)
    source: str
    tags: list[str]
    outputs: list[Output] = field(default_factory=list)
    finished: bool = False

    def text(self, kind: str) -> str:
        return "".join(o.text for o in self.outputs if o.kind == kind)

    @property
    def failed(self) -> bool:
        return any(o.kind == "error" for o in self.outputs)


def _record(cells: dict[str, CellRun], message: dict) -> None:
    cell = cells.get(message.get("parent_header", {}).get("msg_id", ""))
    if cell is None:
        return
    kind, content = message["msg_type"], message["content"]
    if kind == "stream":
        cell.outputs.append(Output(content["name"], content["text"], cell.finished))
    elif kind == "error":
        cell.outputs.append(Output("error", "\n".join(content.get("traceback", [])) or content["evalue"],
                                   cell.finished))
    elif kind in ("display_data", "execute_result"):
        cell.outputs.append(Output(kind, str(content.get("data", {}).get("text/plain", "")), cell.finished))


def run_notebook(path: Path, *, sources: dict[int, str] | None = None, cell_timeout: float = 300.0,
                 drain: float = 1.0, env: dict[str, str] | None = None) -> list[CellRun]:
    """Run every code cell of `path` in a fresh kernel started in its folder; `sources` replaces the source of
    the cells at those indexes (a learner's submission). Returns the code cells with all their outputs."""
    from jupyter_client.manager import KernelManager

    notebook = nbformat.read(path, as_version=4)
    environment = {**os.environ, "LLM_MODEL": "", "TEMPORAL_ADDRESS": "", **(env or {})}
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(path.parent), env=environment)
    client = manager.client()
    client.start_channels()
    by_message: dict[str, CellRun] = {}
    runs: list[CellRun] = []
    try:
        client.wait_for_ready(timeout=60)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            run = CellRun(index, (sources or {}).get(index, cell.source), cell.metadata.get("tags", []))
            runs.append(run)
            msg_id = client.execute(run.source, store_history=True, allow_stdin=False, stop_on_error=False)
            by_message[msg_id] = run
            deadline = time.monotonic() + cell_timeout
            while not run.finished:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    manager.interrupt_kernel()
                    raise TimeoutError(f"{path.name}, cell {index}: still running after {cell_timeout} s:\n"
                                       f"{run.source}")
                try:
                    message = client.get_iopub_msg(timeout=min(remaining, 1.0))
                except Empty:
                    continue
                _record(by_message, message)
                if (message["msg_type"] == "status" and message["parent_header"].get("msg_id") == msg_id
                        and message["content"]["execution_state"] == "idle"):
                    run.finished = True
        deadline = time.monotonic() + drain  # whatever still arrives after the last cell
        while time.monotonic() < deadline:
            try:
                _record(by_message, client.get_iopub_msg(timeout=0.1))
            except Empty:
                pass
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return runs
