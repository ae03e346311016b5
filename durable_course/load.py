"""`durable-agent load`: many chats at once against one worker process, optionally killed now and then.

It prints what a durable agent promises, counted: every turn answered exactly once (none lost, none run
twice), and how often a model call ran twice (a paid call, with a real model). A model call may run twice
only when a worker really died mid-call; on a healthy worker the count must be 0.

    durable-agent load --chats 200 --turns 10                  # a healthy worker under load
    durable-agent load --chats 50 --turns 10 --kill-every 100  # SIGKILL the worker after every 100 answers

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

from . import events
from .faults import PLUGIN, Faults
from durable_agent.server import start_temporal
from durable_agent.session import ChatError, ChatSession, start_chat
from durable_agent.worker import WorkerProcess, start_worker_process


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
    by_turn_ms: dict[int, list[float]] = field(default_factory=dict, repr=False)  # turn number -> latencies
    errors: list[str] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0

    def p50_of_turns(self, first: int, last: int) -> float:
        """p50 latency of the turns numbered first..last (1-based) of every chat."""
        samples = [ms for turn, values in self.by_turn_ms.items() if first <= turn <= last for ms in values]
        return statistics.median(samples) if samples else 0.0

    def drift(self) -> tuple[str, float, float]:
        """p50 of the first and of the last tenth of the turns (at least 10 turns each): does a long chat slow down?"""
        n = max(10, self.turns_per_chat // 10)
        return (f"turns 1-{n} vs {self.turns_per_chat - n + 1}-{self.turns_per_chat}",
                self.p50_of_turns(1, n), self.p50_of_turns(self.turns_per_chat - n + 1, self.turns_per_chat))

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
        if self.turns_per_chat >= 40:
            label, early, late = self.drift()
            lines.append(f"  p50 {label}: {early:.1f} ms vs {late:.1f} ms ({late / early:.2f}x)" if early else "")
        lines += [f"  error: {e}" for e in dict.fromkeys(self.errors)][:8]
        return "\n".join(lines)

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k not in ("latencies_ms", "by_turn_ms")}
        label, early, late = self.drift()
        return json.dumps({**data, "p50_ms": round(self.p50_ms, 1), "p95_ms": round(self.p95_ms, 1),
                           "drift": {"turns": label, "early_p50_ms": round(early, 1), "late_p50_ms": round(late, 1)}},
                          indent=2)


def question(chat: int, turn: int) -> tuple[str, str]:
    a, b = chat + 1, turn + 1
    return f"What is {a} + {b}?", f"{a} + {b} = {a + b}."


async def run_load(chats: int = 50, turns: int = 10, kill_every: int | None = None,
                   progress: Callable[[str], None] = lambda text: None) -> LoadReport:
    """Run the load against an embedded server (or TEMPORAL_ADDRESS) and one worker process. With
    `kill_every`, the worker is SIGKILLed each time that many more turns have been answered (the other
    chats are mid-turn then), and a new worker process is started."""
    if chats < 1 or turns < 1:
        raise ValueError("--chats and --turns must be at least 1")
    if kill_every is not None and kill_every < 1:
        raise ValueError("--kill-every must be a number of answered turns, at least 1")
    faults = Faults.create()  # the execution log; worker processes inherit DURABLE_AGENT_FAULTS
    temporal = await start_temporal(ui=False)
    task_queue = f"load-{uuid.uuid4().hex[:8]}"
    worker: list[WorkerProcess] = [await start_worker_process(temporal.address, namespace=temporal.namespace,
                                                              task_queue=task_queue, plugins=[PLUGIN])]
    report = LoadReport(chats, turns, 0, 0.0)
    try:
        sessions = [await start_chat(temporal.client, task_queue=task_queue) for _ in range(chats)]
        for session in sessions:
            session.patience = 120.0
        started = time.monotonic()
        done, answered = asyncio.Event(), asyncio.Event()

        async def killer() -> None:
            assert kill_every is not None
            while not done.is_set():
                await asyncio.wait([asyncio.ensure_future(done.wait()), asyncio.ensure_future(answered.wait())],
                                   return_when=asyncio.FIRST_COMPLETED)
                answered.clear()
                if not done.is_set() and report.answered >= kill_every * (report.kills + 1):
                    worker[0].kill()
                    report.kills += 1
                    progress(f"worker SIGKILLed after {report.answered} answers ({report.kills})")
                    worker[0] = await start_worker_process(temporal.address, namespace=temporal.namespace,
                                                           task_queue=task_queue, plugins=[PLUGIN])

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
                elapsed = (time.perf_counter() - sent) * 1000
                report.latencies_ms.append(elapsed)
                report.by_turn_ms.setdefault(turn + 1, []).append(elapsed)
                if reply.text == expected:
                    report.answered += 1
                    answered.set()
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
    causes: Counter[str] = Counter()
    for session in sessions:
        asked = Counter(m.content for m in await session.history() if m.role == "user")
        report.duplicated += sum(n - 1 for n in asked.values() if n > 1)
        for event in events.read(await events.fetch(session.handle)):
            if event.kind == "WorkflowTaskFailed":
                causes[" ".join(event.details.failure.message.split())[:200]] += 1
    report.errors += [f"workflow task failed {n}x: {cause}" for cause, n in causes.most_common(3)]
    starts = Counter((e.workflow_id, e.run_id, e.activity_id) for e in faults.executions()
                     if e.activity == "plan_next_action" and e.event == "start")
    report.model_calls = len(starts)
    report.model_calls_run_twice = sum(1 for n in starts.values() if n > 1)
