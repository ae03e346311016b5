"""Class mode: a whole class on one shared Temporal server, each learner in a space of their own.

A teacher runs one Temporal server (`durable-agent server`, any Temporal cluster, or a Temporal Cloud
namespace) and points every lab at it (`TEMPORAL_ADDRESS`, or the course server of course_server.py). Who a
learner is comes from JupyterHub (`JUPYTERHUB_USER`) or `DURABLE_COURSE_LEARNER`. Their client then carries
the `Classroom` plugin, added from outside as Temporal's SDK adds behaviour to a client and its workers:

- every workflow id and task queue the learner names is theirs: `chat-1a2b` becomes `ada.chat-1a2b`, the
  task queue `course-04_chat` becomes `ada.course-04_chat` (for the workers made from that client too), so two
  learners' workers never take each other's tasks, whatever code they run;
- listing and counting workflows sees only the learner's own; a workflow id of someone else's
  (`bob.chat-9f8e`) is refused with a clear error, for every operation: read, query, signal, update, cancel.

What this protects against: accidents and curiosity through the course's API and the SDK's client: the
crossing of chats between learners (without it, one learner's worker served 70-90% of another's turns), and
reading or ending someone else's chat by its id. What it does not: a learner who connects a client of their
own without the plugin. Against that, Temporal's own isolation is a namespace per learner
(`create_namespaces`, then `TEMPORAL_NAMESPACE` per learner), with access control per namespace where the
server has it (Temporal Cloud API keys, or an authorizer on a self-hosted cluster; the dev server has none).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

import temporalio.client
from temporalio.client import (
    CancelWorkflowInput, CountWorkflowsInput, DescribeWorkflowInput, FetchWorkflowHistoryEventsInput,
    ListWorkflowsInput, QueryWorkflowInput, SignalWorkflowInput, StartWorkflowInput, StartWorkflowUpdateInput,
    TerminateWorkflowInput,
)
from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkerConfig

LEARNER_ENV = "DURABLE_COURSE_LEARNER"
SEPARATOR = "."


class NotYourChat(ValueError):
    """A learner's client was asked to reach a workflow of another learner."""


def learner_name(env: Mapping[str, str] | None = None) -> str | None:
    """The learner this process works for (JupyterHub's user, else DURABLE_COURSE_LEARNER), made safe for
    ids: lower case letters, digits and `_`. None outside class mode."""
    env = os.environ if env is None else env
    raw = (env.get("JUPYTERHUB_USER") or env.get(LEARNER_ENV) or "").strip().lower()
    name = re.sub(r"[^a-z0-9_]+", "_", raw).strip("_")[:40]
    return name or None


class LearnerGuard(temporalio.client.Interceptor):
    """Keeps a client inside one learner's ids (see the module's docstring)."""

    def __init__(self, learner: str) -> None:
        if not learner or SEPARATOR in learner:
            raise ValueError(f"a learner's name is letters, digits and _, not {learner!r}")
        self.learner = learner
        self.prefix = learner + SEPARATOR

    def own(self, name: str, what: str = "workflow") -> str:
        """`name` in this learner's space: prefixed if it is a plain name, refused if it is someone else's."""
        if name.startswith(self.prefix):
            return name
        owner = name.split(SEPARATOR, 1)[0] if SEPARATOR in name else None
        if owner and re.fullmatch(r"[a-z0-9_]+", owner):
            raise NotYourChat(f"{what} {name!r} belongs to {owner}, not to you ({self.learner}): in class mode "
                              "each learner reaches only their own")
        return self.prefix + name

    def intercept_client(self, next: temporalio.client.OutboundInterceptor) -> temporalio.client.OutboundInterceptor:
        return _Guarded(next, self)


class _Guarded(temporalio.client.OutboundInterceptor):
    def __init__(self, next: temporalio.client.OutboundInterceptor, guard: LearnerGuard) -> None:
        super().__init__(next)
        self.guard = guard

    def _query(self, query: str | None) -> str:
        mine = f"WorkflowId STARTS_WITH '{self.guard.prefix}'"
        return f"{mine} AND ({query})" if query else mine

    async def start_workflow(self, input: StartWorkflowInput) -> Any:
        input.id = self.guard.own(input.id)
        input.task_queue = self.guard.own(input.task_queue, "task queue")
        return await self.next.start_workflow(input)

    async def cancel_workflow(self, input: CancelWorkflowInput) -> None:
        input.id = self.guard.own(input.id)
        return await self.next.cancel_workflow(input)

    async def describe_workflow(self, input: DescribeWorkflowInput) -> Any:
        input.id = self.guard.own(input.id)
        return await self.next.describe_workflow(input)

    def fetch_workflow_history_events(self, input: FetchWorkflowHistoryEventsInput) -> Any:
        input.id = self.guard.own(input.id)
        return self.next.fetch_workflow_history_events(input)

    def list_workflows(self, input: ListWorkflowsInput) -> Any:
        input.query = self._query(input.query)
        return self.next.list_workflows(input)

    async def count_workflows(self, input: CountWorkflowsInput) -> Any:
        input.query = self._query(input.query)
        return await self.next.count_workflows(input)

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        input.id = self.guard.own(input.id)
        return await self.next.query_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        input.id = self.guard.own(input.id)
        return await self.next.signal_workflow(input)

    async def terminate_workflow(self, input: TerminateWorkflowInput) -> None:
        input.id = self.guard.own(input.id)
        return await self.next.terminate_workflow(input)

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> Any:
        input.id = self.guard.own(input.id)
        return await self.next.start_workflow_update(input)


class Classroom(SimplePlugin):
    """The class-mode plugin for one learner's client: the guard on the client, and the learner's task queues
    for every worker made from it. `connect(address, plugins=[Classroom("ada")])` (`durable_agent.server.connect`)."""

    def __init__(self, learner: str) -> None:
        self.guard = LearnerGuard(learner)
        super().__init__(f"durable-course.classroom.{learner}", interceptors=[self.guard])

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        config = super().configure_worker(config)
        config["task_queue"] = self.guard.own(config["task_queue"], "task queue")
        return config


async def create_namespaces(client: temporalio.client.Client, learners: list[str],
                            retention: timedelta = timedelta(days=7), ready_seconds: float = 60.0) -> list[str]:
    """The teacher's command: one namespace per learner (`course-<learner>`), created if missing, and returned
    once the server takes work in each (its frontend learns of a new namespace within about ten seconds)."""
    from google.protobuf.duration_pb2 import Duration
    from temporalio.api.workflowservice.v1 import (
        CountWorkflowExecutionsRequest, DescribeNamespaceRequest, RegisterNamespaceRequest,
    )
    from temporalio.service import RPCError, RPCStatusCode

    names = []
    for learner in learners:
        name = f"course-{learner_name({LEARNER_ENV: learner})}"
        try:
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=name))
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            await client.workflow_service.register_namespace(RegisterNamespaceRequest(
                namespace=name, workflow_execution_retention_period=Duration(seconds=int(retention.total_seconds()))))
        names.append(name)
    deadline = asyncio.get_running_loop().time() + ready_seconds
    for name in names:
        while True:
            try:
                await client.workflow_service.count_workflow_executions(
                    CountWorkflowExecutionsRequest(namespace=name))
                break
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.5)
    return names


def plugin_from_env() -> Classroom:
    """The plugin for the learner this process works for: `--plugin durable_course.classroom:plugin_from_env`."""
    learner = learner_name()
    if learner is None:
        raise ValueError(f"class mode needs to know the learner: set JUPYTERHUB_USER or {LEARNER_ENV}")
    return Classroom(learner)


# --- a class, simulated: N learners, each with a worker of their own, on one server ----------------------

COURSE_TURNS = (("What is 25 + 17?", "25 + 17 = 42."), ("What's the weather in Paris?", "The weather in Paris"),
                ("What is 6 * 7?", "6 * 7 = 42."), ("What is 100 / 5?", "100 / 5 = 20."))


@dataclass
class ClassLoadReport:
    learners: int
    turns_per_learner: int
    seconds: float = 0.0
    answered: int = 0
    wrong: int = 0
    lost: int = 0
    crossed: int = 0  # a turn answered by another learner's worker (its task queue says so)
    server_rss_mb: float = 0.0
    worker_rss_mb: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    errors: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def table(self) -> str:
        workers = self.worker_rss_mb
        return "\n".join([
            f"{self.learners} learners x {self.turns_per_learner} turns on one Temporal server, each learner with "
            f"a worker process of their own: {self.seconds:.1f} s",
            f"  answered correctly         {self.answered} of {self.learners * self.turns_per_learner}",
            f"  wrong / lost / crossed     {self.wrong} / {self.lost} / {self.crossed}",
            f"  turn latency p50 / p95     {self.percentile(0.5):.0f} ms / {self.percentile(0.95):.0f} ms",
            f"  shared server memory       {self.server_rss_mb:.0f} MB",
            f"  worker memory, each        {statistics.fmean(workers) if workers else 0:.0f} MB "
            f"(max {max(workers, default=0):.0f} MB; {sum(workers):.0f} MB in all)",
            *[f"  error: {e}" for e in dict.fromkeys(self.errors)][:5]])

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        return json.dumps({**data, "p50_ms": round(self.percentile(0.5), 1),
                           "p95_ms": round(self.percentile(0.95), 1)}, indent=2)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (Linux /proc), in MB; 0 where /proc is not there."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        own = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return 0.0
    return int(own.split()[1]) / 1024 + sum(rss_mb(int(child)) for child in children)


async def run_class_load(learners: int = 30, turns: int = 4,
                         progress: Callable[[str], None] = lambda text: None) -> ClassLoadReport:
    """Start one server, a worker process per learner (in class mode), and have every learner chat at once."""
    from durable_agent.server import connect, start_temporal
    from durable_agent.session import ChatError, start_chat
    from durable_agent.worker import start_worker_process

    if learners < 1 or turns < 1:
        raise ValueError("--learners and --turns must be at least 1")
    report = ClassLoadReport(learners, turns)
    temporal = await start_temporal(ui=False, cpus=None)  # the class's shared server: every CPU
    names = [f"learner{i:03d}" for i in range(1, learners + 1)]
    workers = []
    try:
        progress(f"starting {learners} worker processes")
        workers = await asyncio.gather(*(start_worker_process(
            temporal.address, task_queue="course", env={LEARNER_ENV: name}, plugins=[PLUGIN], ready_timeout=300)
            for name in names))
        clients = [await connect(temporal.address, plugins=[Classroom(n)]) for n in names]
        started = time.monotonic()

        async def learner(name: str, client: temporalio.client.Client) -> None:
            try:
                await chat_turns(name, client)
            except Exception as err:  # noqa: BLE001 - one learner's failure is counted, the class goes on
                report.errors.append(f"{name}: {type(err).__name__}: {err}")

        async def chat_turns(name: str, client: temporalio.client.Client) -> None:
            chat = await start_chat(client, task_queue="course")
            chat.patience = 120.0
            for turn in range(turns):
                report.lost += 1  # until it is answered
                text, expected = COURSE_TURNS[turn % len(COURSE_TURNS)]
                sent = time.perf_counter()
                try:
                    reply = await chat.send(text)
                except ChatError as err:
                    report.errors.append(str(err))
                    continue
                report.lost -= 1
                report.latencies_ms.append((time.perf_counter() - sent) * 1000)
                if reply.text.startswith(expected):
                    report.answered += 1
                else:
                    report.wrong += 1
                    report.errors.append(f"{text!r} got {reply.text!r}")
            described = await client.get_workflow_handle(chat.workflow_id).describe()
            report.crossed += described.task_queue != f"{name}{SEPARATOR}course"

        progress(f"{learners} learners chatting")
        await asyncio.gather(*(learner(n, c) for n, c in zip(names, clients)))
        report.seconds = time.monotonic() - started
        report.server_rss_mb = rss_mb(temporal.server.pid) if temporal.server else 0.0
        report.worker_rss_mb = [round(rss_mb(w.pid), 1) for w in workers]
    finally:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        await temporal.shutdown()
    return report


PLUGIN = "durable_course.classroom:plugin_from_env"
