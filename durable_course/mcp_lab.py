"""Breaking the MCP tools on purpose (notebook 08): kill the MCP server, or the worker, in the middle of a call.

The demo server (`mcp_server.py`) has a *pause file*: while it exists, `add_note` stops right after writing
the note, before it answers, and writes its pid next to the notes file. That is the worst moment for a crash:
the side effect is done, the answer is lost. The experiments here kill at that moment, let Temporal retry,
and count the notes the file really holds, so the at-least-once lesson is a number, not a claim:

    lab = McpLab(temporal, notes_dir)
    print(await lab.kill_server_mid_call(keys=False))   # the retry writes the note again: 2 notes
    print(await lab.kill_server_mid_call(keys=True))    # the same idempotency key: 1 note
    print(await lab.kill_worker_mid_call())             # SIGKILL the worker process instead: 1 note
    await lab.close()

Every activity attempt is logged by the fault lab's plugin (`faults.py`), so each report shows how often
each activity really ran next to what the event history recorded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from durable_agent.logs import silenced
from durable_agent.mcp_tools import PLUGIN as MCP_PLUGIN
from durable_agent.mcp_tools import McpServer, demo_server, mcp_plugin, start_mcp_chat

from .faults import ActivityRun, ExperimentWorkers, Faults, activity_runs

if TYPE_CHECKING:
    from durable_agent.server import Temporal
    from durable_agent.session import ChatSession
    from durable_agent.worker import BackgroundWorker, WorkerProcess

NOTES_FILE = "notes.jsonl"


def notes_saved(notes_file: str | os.PathLike[str], text: str) -> int:
    """How many notes with this text the file holds (what really happened, whatever anyone reported)."""
    from .mcp_server import Notes

    return sum(1 for note in Notes(notes_file).all() if note["text"] == " ".join(text.split()))


@dataclass
class McpCrashReport:
    what: str  # "the MCP server" or "the worker"
    note: str
    keys: bool
    reply: str
    runs: list[ActivityRun]
    saved: int  # notes with this text the turn added to the file

    def __str__(self) -> str:
        call = next((r for r in self.runs if r.activity == "call_mcp_tool" and r.starts > 1), None)
        notes = {call.activity_id: "   <- killed mid-call, run again"} if call else {}
        why = ("the retry carried the same idempotency key, so the server saw a repeat" if self.keys else
               "the note was written by the killed attempt AND by its retry: at least once")
        return "\n".join([
            f"SIGKILL to {self.what} while add_note was running, after it had written the note"
            f" (idempotency keys {'on' if self.keys else 'off'}).",
            f"Agent (the same Update, never re-sent): {self.reply}",
            "This turn's activities (executions counted by the log, outcome recorded in the event history):",
            *(r.line(notes.get(r.activity_id, "")) for r in self.runs),
            f"Notes {self.note!r} this turn added to the notes file: {self.saved}   <- {why}",
        ])


@dataclass
class McpLab(ExperimentWorkers):
    """An MCP notes server in a folder of its own, a fault log, and the workers the experiments use."""

    PROCESS_PLUGINS = (MCP_PLUGIN,)

    temporal: Temporal
    folder: Path
    task_queue: str = field(default_factory=lambda: f"mcp-lab-{uuid.uuid4().hex[:6]}")
    faults: Faults = field(default=None)  # type: ignore[assignment]
    worker: WorkerProcess | None = None
    kernel_worker: BackgroundWorker | None = None

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.faults is None:
            self.faults = Faults.create(self.folder / "faults")

    @property
    def notes_file(self) -> Path:
        return self.folder / NOTES_FILE

    @property
    def pause_file(self) -> Path:
        return Path(f"{self.notes_file}.pause")

    def server(self, *extra: str) -> McpServer:
        return demo_server(str(self.notes_file), *extra)

    def kernel_plugins(self) -> list[Any]:
        return [mcp_plugin()]

    async def new_chat(self, keys: bool = True, *extra: str) -> ChatSession:
        return await start_mcp_chat(self.temporal.client, self.server(*extra), task_queue=self.task_queue,
                                    idempotency_keys=keys)

    async def _paused_call(self, chat: ChatSession, note: str) -> tuple[asyncio.Task[Any], int]:
        """Send 'Note: ...' with the pause file in place; return the pending reply and the paused server's pid."""
        pid_file = Path(f"{self.notes_file}.pid")
        pid_file.unlink(missing_ok=True)
        self.pause_file.write_text("")
        pending = asyncio.create_task(chat.send(f"Note: {note}"))
        deadline = time.monotonic() + 90
        while not pid_file.exists():
            if pending.done() or time.monotonic() > deadline:
                self.pause_file.unlink(missing_ok=True)
                reply = pending.result().text if pending.done() else "no reply"
                raise RuntimeError(f"add_note never paused (is the worker polling {self.task_queue}?): {reply}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        return pending, int(pid_file.read_text())

    async def kill_server_mid_call(self, keys: bool, note: str = "buy milk") -> McpCrashReport:
        """SIGKILL the MCP server while add_note is paused; the worker stays up and retries the call."""
        await self.some_worker()
        chat = await self.new_chat(keys)
        await chat.send("Convert 1 km to m")  # the tools are listed and the server is warm before the kill
        before = notes_saved(self.notes_file, note)
        pending, pid = await self._paused_call(chat, note)
        os.kill(pid, signal.SIGKILL)  # by process id: exactly the paused server
        self.pause_file.unlink(missing_ok=True)
        return await self._report("the MCP server", chat, pending, note, keys, before)

    async def kill_worker_mid_call(self, keys: bool = True, note: str = "call the plumber") -> McpCrashReport:
        """SIGKILL the worker process while add_note is paused in its MCP server; start another worker."""
        victim = await self.a_worker_process()
        chat = await self.new_chat(keys)
        await chat.send("Convert 1 km to m")
        before = notes_saved(self.notes_file, note)
        pending, _ = await self._paused_call(chat, note)
        victim.kill()  # SIGKILL by pid; its MCP server notices its parent is gone and exits
        self.worker = None
        self.pause_file.unlink(missing_ok=True)
        await self.start_worker_process()
        return await self._report("the worker", chat, pending, note, keys, before)

    async def _report(self, what: str, chat: ChatSession, pending: asyncio.Task[Any], note: str,
                      keys: bool, before: int) -> McpCrashReport:
        with silenced():  # the failed attempt is in the report; no stray line under whichever cell runs then
            reply = await pending
        history = await chat.handle.fetch_history()
        runs = activity_runs(history, self.faults.executions(chat.workflow_id))
        turn = [r for r in runs if int(r.activity_id) > 4]  # the note's turn: after list, plan, call, plan
        return McpCrashReport(what, note, keys, reply.text, turn, notes_saved(self.notes_file, note) - before)

    async def close(self) -> None:
        self.pause_file.unlink(missing_ok=True)
        await self._stop_workers()
        self.faults.clear()
