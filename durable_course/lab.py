"""One notebook cell starts the course's machinery: a Temporal server to talk to, and a worker.

    from durable_course.lab import start_lab
    lab = await start_lab()              # server + worker in this kernel, in about a second
    chat = await lab.new_chat()
    await lab.ask(chat, "What is 25 + 17?")
    await lab.stop()                     # or just shut the kernel down

The server is the course server when one runs for this session (`python3 course.py lab`, or JupyterHub and
Binder: course_server.py): the same server, Web UI and chats for every notebook, and `lab.stop()` stops only
this notebook's worker. Each notebook then has its own task queue (`lab.task_queue`). Otherwise (nbval, a
notebook opened on its own) it is an embedded server that `lab.stop()` stops. Running the cell again stops
the previous lab first, so re-running a notebook never leaves anything behind. The worker runs as a
background task on the kernel's event loop, so later cells stay usable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client

from durable_agent.logs import log_path, quiet_logs
from durable_agent.server import Temporal, start_temporal
from durable_agent.session import ChatSession, start_chat
from durable_agent.worker import BackgroundWorker, start_worker
from durable_agent.config import settings
from durable_agent.workflow import AgentReply

from . import classroom, course_server
from .progress import GIVE_UP_SECONDS, send_watched


@dataclass
class Lab:
    temporal: Temporal
    worker: BackgroundWorker | None
    task_queue: str = ""  # this notebook's (default: the agent's)

    def __post_init__(self) -> None:
        self.task_queue = self.task_queue or settings().task_queue

    @property
    def client(self) -> Client:
        return self.temporal.client

    @property
    def ui_url(self) -> str | None:
        return self.temporal.ui_url

    async def new_chat(self, workflow_id: str | None = None, **kwargs: Any) -> ChatSession:
        kwargs.setdefault("task_queue", self.task_queue)
        return await start_chat(self.client, workflow_id, **kwargs)

    @property
    def log_file(self) -> Path:
        """Where the worker's log goes, every failed attempt with its traceback (nothing of it under the cells)."""
        return log_path()

    async def ask(self, chat: ChatSession, text: str, *, give_up_after: float = GIVE_UP_SECONDS) -> AgentReply:
        """Send a message, print the exchange, and return the reply. While the turn waits on a failing activity,
        print each failed attempt (read from the server); after `give_up_after` seconds of that, raise
        `TurnStuck` with the last error (durable_course/progress.py)."""
        __tracebackhide__ = True
        print(f"You:   {text}", flush=True)
        reply = await send_watched(chat, text, give_up_after=give_up_after)
        tools = f"   [tools: {', '.join(reply.tools_used)}]" if reply.tools_used else ""
        print(f"Agent: {reply.text}{tools}")
        return reply

    async def start_worker(self, **kwargs: Any) -> BackgroundWorker:
        """(Re)start the in-kernel worker, e.g. after `stop_worker()` or after fixing a tool."""
        await self.stop_worker()
        kwargs.setdefault("task_queue", self.task_queue)
        self.worker = await start_worker(self.client, **kwargs)
        return self.worker

    async def stop_worker(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None

    async def stop(self) -> None:
        """Stop the worker, and the server if it is this notebook's own (never the course server). Idempotent."""
        global _current
        await self.stop_worker()
        await self.temporal.shutdown()
        if _current is self:
            _current = None

    def __repr__(self) -> str:
        worker = "running" if self.worker else "stopped"
        if self.temporal.embedded:
            return f"Lab(Temporal embedded dev server at {self.temporal.address}, worker {worker}, UI {self.ui_url})"
        return (f"Lab(Temporal server at {self.temporal.address}, task queue {self.task_queue}, worker {worker}, "
                f"UI {self.ui_url})")


_current: Lab | None = None


async def start_lab(*, worker: bool = True, db_file: str | None = None, ui: bool = True,
                    own_server: bool = False) -> Lab:
    """Connect to the course server (or start an embedded one) and, unless `worker=False`, start a worker in
    this kernel. `own_server=True` (or a `db_file`) always starts an embedded server for this notebook."""
    global _current
    if _current is not None:
        await _current.stop()
    # The worker's log goes to a file, never under a cell; `ask` shows a failing attempt where the learner looks.
    quiet_logs(console=False)
    # Class mode (classroom.py): on a shared server, a learner's client and workers keep to the learner's own
    # chats and task queues.
    learner = classroom.learner_name()
    plugins = [classroom.Classroom(learner)] if learner else []
    shared = None if own_server or db_file or settings().temporal_address else await course_server.connect(
        plugins=plugins)
    if shared is not None:
        _current = Lab(shared, None, course_server.notebook_task_queue() or "")
    else:
        embedded = own_server or db_file or not settings().temporal_address
        _current = Lab(await start_temporal(db_file=db_file, ui=ui, plugins=[] if embedded else plugins), None,
                       course_server.notebook_task_queue() or "" if not embedded else "")
    if worker:
        await _current.start_worker()
    return _current

