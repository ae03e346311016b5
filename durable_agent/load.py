"""`durable-agent load`: many chats at once against one worker process, optionally killed now and then.

It prints what a durable agent promises, counted: every turn answered exactly once (none lost, none run
twice), and how often a model call ran twice (a paid call, with a real model). A model call may run twice
only when a worker really died mid-call; on a healthy worker the count must be 0.

    durable-agent load --chats 200 --turns 10                 # a healthy worker under load
    durable-agent load --chats 50 --turns 10 --kill-every 5   # SIGKILL the worker every 5 s, restart it

Each message has a known answer ("What is 7 + 12?"), so a wrong or missing reply is caught; the executions
are counted from the fault lab's execution log, which survives SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable

from .faults import Faults
from .server import start_temporal
from .session import ChatError, ChatSession, start_chat
from .worker import WorkerProcess, start_worker_process


@dataclass
class LoadReport:
    chats: int
    turns_per_chat: int
    kills: int
    seconds: float
    answered: int = 0  # the right reply, once
    wrong: int = 0  # a reply, but not the right one
    lost: int = 0  # the send failed and the turn never happened
    duplicated: int = 0  # a message that the chat ran more than once
    model_calls: int = 0  # model activities the workflows scheduled
    model_calls_run_twice: int = 0  # of those, executed more than once
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    errors: list[str] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0

    def table(self) -> str:
        total = self.chats * self.turns_per_chat
        lines = [
            f"{self.chats} chats x {self.turns_per_chat} turns = {total} turns in {self.seconds:.1f} s; "
            f"worker SIGKILLed {self.kills} time(s)",
            f"  answered once, correctly   {self.answered}",
            f"  wrong reply                {self.wrong}",
            f"  lost                       {self.lost}",
            f"  run twice (duplicated)     {self.duplicated}",
            f"  model calls                {self.model_calls}",
            f"  model calls run twice      {self.model_calls_run_twice}",
            f"  turn latency p50 / p95     {self.p50_ms:.0f} ms / {self.p95_ms:.0f} ms",
        ]
        lines += [f"  error: {e}" for e in self.errors[:5]]
        return "\n".join(lines)

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        return json.dumps({**data, "p50_ms": round(self.p50_ms, 1), "p95_ms": round(self.p95_ms, 1)}, indent=2)


def question(chat: int, turn: int) -> tuple[str, str]:
    a, b = chat + 1, turn + 1
    return f"What is {a} + {b}?", f"{a} + {b} = {a + b}."


async def run_load(chats: int = 50, turns: int = 10, kill_every: float | None = None,
                   progress: Callable[[str], None] = lambda text: None) -> LoadReport:
    """Run the load against an embedded server (or TEMPORAL_ADDRESS) and one worker process."""
    if chats < 1 or turns < 1:
        raise ValueError("--chats and --turns must be at least 1")
    if kill_every is not None and kill_every <= 0:
        raise ValueError("--kill-every must be a positive number of seconds")
    faults = Faults.create()  # the execution log; worker processes inherit DURABLE_AGENT_FAULTS
    temporal = await start_temporal(ui=False)
    task_queue = f"load-{uuid.uuid4().hex[:8]}"
    worker: list[WorkerProcess] = [await start_worker_process(temporal.address, namespace=temporal.namespace,
                                                              task_queue=task_queue)]
    report = LoadReport(chats, turns, 0, 0.0)
    try:
        sessions = [await start_chat(temporal.client, task_queue=task_queue) for _ in range(chats)]
        for session in sessions:
            session.patience = 120.0
        started = time.monotonic()
        done = asyncio.Event()

        async def killer() -> None:
            while not done.is_set():
                try:
                    await asyncio.wait_for(done.wait(), timeout=kill_every)
                except asyncio.TimeoutError:
                    worker[0].kill()
                    report.kills += 1
                    progress(f"worker SIGKILLed ({report.kills})")
                    worker[0] = await start_worker_process(temporal.address, namespace=temporal.namespace,
                                                           task_queue=task_queue)

        async def chat_loop(index: int, session: ChatSession) -> None:
            for turn in range(turns):
                text, expected = question(index, turn)
                sent = time.perf_counter()
                try:
                    reply = await session.send(text, message_id=f"{session.workflow_id}-{turn}")
                except ChatError as err:
                    report.lost += 1
                    report.errors.append(str(err))
                    continue
                report.latencies_ms.append((time.perf_counter() - sent) * 1000)
                if reply.text == expected:
                    report.answered += 1
                else:
                    report.wrong += 1
                    report.errors.append(f"{text!r} got {reply.text!r}")

        kill_task = asyncio.ensure_future(killer()) if kill_every else None
        await asyncio.gather(*(chat_loop(i, s) for i, s in enumerate(sessions)))
        done.set()
        if kill_task:
            await kill_task
        report.seconds = time.monotonic() - started
        progress("counting")
        await _count(report, sessions, faults)
    finally:
        await worker[0].stop()
        await temporal.shutdown()
        faults.remove()
    return report


async def _count(report: LoadReport, sessions: list[ChatSession], faults: Faults) -> None:
    """Turns run per chat (from its history) and executions per model activity (from the execution log)."""
    for session in sessions:
        asked = Counter(m.content for m in await session.history() if m.role == "user")
        report.duplicated += sum(n - 1 for n in asked.values() if n > 1)
    starts = Counter((e.workflow_id, e.activity_id) for e in faults.executions()
                     if e.activity == "plan_next_action" and e.event == "start")
    report.model_calls = len(starts)
    report.model_calls_run_twice = sum(1 for n in starts.values() if n > 1)
