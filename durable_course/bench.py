"""The benchmark: what durability costs per chat turn, next to a plain asyncio loop doing the same work.

The primitive it shows is the price of all three at once: every step of the durable loop is a workflow
task (primitive 1) or an activity (primitive 2) that the server records before anything else happens
(primitive 3). This module measures that price, turn by turn, on the embedded server:

- `plain`: the same agent loop as plain asyncio code (the same `llm.complete` through LiteLLM, the same
  `parse_reply`, the same `tools.run_tool`), with no Temporal at all: the lower bound.
- `durable`: the course's agent, a chat workflow driven by Updates, as `create_worker` runs it.
- `local-model`: the same workflow with the model call as a *local activity* (`ChatInput.model_call`):
  faster, and weaker; see `workflow.py` for what it gives up.

Measured only when asked for (`--loops`), to show what a setting is worth:

- `unsandboxed` (no workflow sandbox): the same durability for less CPU, and no guard (`worker_options`);
- `default-converter`: the SDK's default data converter instead of the course's pydantic one
  (`server.DATA_CONVERTER`): what that choice buys (`client_for`);
- `no-eager` and `no-cache`: eager activity execution, or the sticky workflow cache, switched off, to show
  what each of these defaults buys;
- `default-server`: the course's agent on a second embedded server left at Temporal's default for the
  dynamic-config setting that removes a wait per step (`server.py`): what that setting buys, in the same run;
- `all-cpus-server`: the course's agent on an embedded server allowed every CPU, as a server that a class
  shares is (`server.EMBEDDED_SERVER_CPUS`): what running a learner's server on one CPU saves.

Each is run for turns that need 0, 1 and 2 tool calls, with the offline model, with the offline model made
to answer in 200 ms (`durable-agent bench --model-latency`, as a real model takes its time) and, when
`LLM_MODEL` names a real model, with that model too. `durable-agent bench` prints a table (or JSON); `run_benchmark()`
returns a `BenchReport` (notebook 06 plots it). Where the time goes is read from the workflow's own event
history: how long workflow tasks and activities waited and ran, per turn.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.worker import UnsandboxedWorkflowRunner

from durable_agent import llm, tools
from durable_agent.activities import AgentActivities, ChatMessage, parse_reply
from durable_agent.config import Settings, redact_secrets, settings
from durable_agent.session import ChatError, start_chat
from durable_agent.worker import create_worker
from durable_agent.workflow import DEFAULT_MAX_STEPS, ChatInput

if TYPE_CHECKING:
    from durable_agent.server import Temporal

from .events import read as read_events

# The turns measured: a message for the offline model, and how many tool calls it needs.
TURNS: dict[int, str] = {
    0: "hello",
    1: "What is 25 + 17?",
    2: "What's the weather in Paris and what is 12 * 3?",
}
PLAIN = "plain"
LOOPS = ("plain", "durable", "local-model", "unsandboxed", "default-converter", "no-eager", "no-cache", "default-server",
         "all-cpus-server")
DEFAULT_LOOPS = ("plain", "durable", "local-model")
LOOP_WIDTH = max(len(loop) for loop in LOOPS)  # the tables' loop column
# `default-server`: the durable loop on a second embedded server that keeps Temporal's default for the
# setting that removes a wait per step (server.py): the history service reads new tasks at most 20 times a second.
DEFAULT_SERVER_CONFIG: dict[str, object] = {"history.transferProcessorMaxPollRPS": 20}
# The loops measured on a server of their own, and how it is started (`start_temporal`'s options).
OWN_SERVER: dict[str, dict[str, Any]] = {"default-server": {"dynamic_config": DEFAULT_SERVER_CONFIG},
                                         "all-cpus-server": {"cpus": None}}
DEFAULT_LATENCY_MS = 200.0  # the offline model is also measured answering in this long, as a real model does
PHASES = ("workflow task wait", "workflow task run", "activity wait", "activity run")


class BenchError(RuntimeError):
    """The benchmark cannot run as asked (bad option) or measured something inconsistent."""


@dataclass
class Stats:
    """Latency figures of one series, in milliseconds."""

    n: int
    mean: float
    std: float
    p50: float
    p95: float
    min: float
    max: float

    @classmethod
    def of(cls, samples: list[float]) -> "Stats":
        if not samples:
            raise BenchError("no samples to summarise")
        ordered = sorted(samples)
        return cls(len(ordered), statistics.fmean(ordered), statistics.pstdev(ordered), _percentile(ordered, 50),
                   _percentile(ordered, 95), ordered[0], ordered[-1])


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted samples."""
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Series:
    """One loop, one model, one kind of turn: every measured turn's latency."""

    loop: str
    model: str
    tools: int  # tool calls the turn needs
    samples_ms: list[float]
    stats: Stats
    tool_calls: float  # tool calls per turn, as observed (the replies' tools_used)
    model_calls: float  # model calls per turn, as observed
    activities: float  # activities per turn, counted in the event history (plain: 0)
    local_activities: float  # local activities per turn (their markers in the history)
    cpu_ms: float  # CPU time of this process per turn (client + worker; not the server): less noisy than latency
    model_ms: Stats | None = None  # plain only: the time spent inside llm.complete per turn (its latency too)
    phases_ms: dict[str, float] = field(default_factory=dict)  # durable only: ms per turn, from the history
    server_cpu_ms: float | None = None  # CPU time of the Temporal server per turn, when the bench started it

    @property
    def steps(self) -> float:
        """Model calls plus tool calls per turn: the work a turn does, whatever runs it."""
        return self.model_calls + self.tool_calls


@dataclass
class Overhead:
    """What a loop costs on top of the plain loop, for one model and kind of turn (from the p50s)."""

    loop: str
    model: str
    tools: int
    per_turn_ms: float  # loop p50 - plain p50
    per_step_ms: float  # per_turn_ms / (model calls + tool calls): the cost of one activity
    ratio_to_plain: float  # loop p50 / plain p50
    ratio_to_model: float  # per_turn_ms / the model's own time per turn (p50, measured in the plain loop)


@dataclass
class BenchReport:
    iterations: int
    warmup: int
    loops: list[str]
    models: list[str]
    series: list[Series]
    overheads: list[Overhead]
    environment: dict[str, str]
    server_config: dict[str, object] = field(default_factory=dict)  # settings given to the bench's own server

    def designs(self) -> list[dict[str, Any]]:
        """Per design (loop) and model, over every kind of turn: the ratio of its p50 to the plain loop's and
        its overhead per step (ms over the plain loop per model or tool call), the median over tool counts."""
        rows = []
        for model in self.models:
            for loop in dict.fromkeys(o.loop for o in self.overheads if o.model == model):
                chosen = [o for o in self.overheads if (o.loop, o.model) == (loop, model)]
                rows.append({"model": model, "loop": loop,
                             "ratio_to_plain": statistics.median(o.ratio_to_plain for o in chosen),
                             "per_step_ms": statistics.median(o.per_step_ms for o in chosen),
                             "by_tools": {str(o.tools): [round(o.ratio_to_plain, 3), round(o.per_step_ms, 3)]
                                          for o in chosen}})
        return rows

    def reference(self) -> list[dict[str, Any]]:
        """The reference implementation's table: chat turns (Updates) of the durable agent, mean / std / min /
        max, one row per model (the instant offline model isolates durability's cost; a model with latency,
        or a real one, shows it next to a model's own time), per kind of turn."""
        rows = []
        for s in self.series:
            if s.loop == "durable":
                plain = next((p for p in self.series if (p.loop, p.model, p.tools) == (PLAIN, s.model, s.tools)), None)
                rows.append({"model": s.model, "tools": s.tools, "turns": s.stats.n, "mean": s.stats.mean,
                             "std": s.stats.std, "min": s.stats.min, "max": s.stats.max,
                             "plain_mean": plain.stats.mean if plain else None})
        return rows
    def get(self, loop: str, model: str, tools: int) -> Series:
        for s in self.series:
            if (s.loop, s.model, s.tools) == (loop, model, tools):
                return s
        raise KeyError((loop, model, tools))

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "designs": self.designs(), "reference": self.reference()}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "BenchReport":
        data = json.loads(text)
        data.pop("designs", None)  # computed from the series
        data.pop("reference", None)
        series = []
        for s in data["series"]:
            s = dict(s, stats=Stats(**s["stats"]))
            if s.get("model_ms"):
                s["model_ms"] = Stats(**s["model_ms"])
            series.append(Series(**s))
        return cls(**dict(data, series=series, overheads=[Overhead(**o) for o in data["overheads"]]))

    def table(self) -> str:
        """The report as text: latency per series, the overhead of durability, and where the time goes."""
        lines = [f"Per-turn latency in ms: {self.iterations} turns per series after {self.warmup} warm-up "
                 f"turns ({self.environment.get('summary', '')}); steps = model + tool calls per turn; "
                 "cpu = this process's CPU ms per turn (client and worker), server = the Temporal server's", ""]
        head = f"{'model':<28} {'loop':<{LOOP_WIDTH}} {'tools':>5} {'steps':>5} " + " ".join(
            f"{k:>7}" for k in ("mean", "std", "p50", "p95", "min", "max", "cpu", "server"))
        lines += [head, "-" * len(head)]
        for s in self.series:
            st = s.stats
            lines.append(f"{_short(s.model):<28} {s.loop:<{LOOP_WIDTH}} {s.tools:>5} {s.steps:>5.0f} " + " ".join(
                f"{v:>7.1f}" for v in (st.mean, st.std, st.p50, st.p95, st.min, st.max, s.cpu_ms)) + (
                f" {s.server_cpu_ms:>7.1f}" if s.server_cpu_ms is not None else f" {'-':>7}"))
        lines += ["", "Overhead over the plain loop (p50): per turn, per step (one model or tool call), and as "
                  "ratios to the plain loop and to the model's own time", ""]
        head = (f"{'model':<28} {'loop':<{LOOP_WIDTH}} {'tools':>5} {'ms/turn':>8} {'ms/step':>8} {'x plain':>8} "
                f"{'x model':>8}")
        lines += [head, "-" * len(head)]
        for o in self.overheads:
            lines.append(f"{_short(o.model):<28} {o.loop:<{LOOP_WIDTH}} {o.tools:>5} {o.per_turn_ms:>8.1f} "
                         f"{o.per_step_ms:>8.1f} {o.ratio_to_plain:>8.1f} {o.ratio_to_model:>8.1f}")
        designs = self.designs()
        if designs:
            lines += ["", "Each design in one line: its p50 as a ratio to the plain loop's, and its overhead per step "
                      "(ms per model or tool call), the median over the kinds of turn", ""]
            head = f"{'model':<28} {'loop':<{LOOP_WIDTH}} {'x plain':>8} {'ms/step':>8}   by tools: x plain / ms per step"
            lines += [head, "-" * len(head)]
            for d in designs:
                detail = "  ".join(f"{n}: {r:.1f}x / {m:.1f}" for n, (r, m) in d["by_tools"].items())
                lines.append(f"{_short(d['model']):<28} {d['loop']:<{LOOP_WIDTH}} {d['ratio_to_plain']:>8.1f} "
                             f"{d['per_step_ms']:>8.1f}   {detail}")
        reference = self.reference()
        if reference:
            lines += ["", f"The reference implementation's table, in this format: {self.iterations} chat turns (Updates) "
                      "of the durable agent per row, ms", ""]
            head = f"{'model':<26} {'tools':>5} {'turns':>5} {'mean':>8} {'std':>8} {'min':>8} {'max':>8} {'plain mean':>11}"
            lines += [head, "-" * len(head)]
            for r in reference:
                plain = f"{r['plain_mean']:>11.1f}" if r["plain_mean"] is not None else f"{'-':>11}"
                lines.append(f"{r['model'][:26]:<26} {r['tools']:>5} {r['turns']:>5} {r['mean']:>8.1f} {r['std']:>8.1f} "
                             f"{r['min']:>8.1f} {r['max']:>8.1f} {plain}")
        timed = [s for s in self.series if s.phases_ms]
        if timed:
            lines += ["", "Where a durable turn's time goes, ms per turn (mean), from the event history; "
                      "'client+server' is the rest: the Update's RPC and the server's own work", ""]
            head = f"{'model':<28} {'loop':<{LOOP_WIDTH}} {'tools':>5} " + " ".join(
                f"{p.replace('workflow task', 'wft'):>14}" for p in PHASES) + f" {'client+server':>14}"
            lines += [head, "-" * len(head)]
            for s in timed:
                rest = s.stats.mean - sum(s.phases_ms.get(p, 0.0) for p in PHASES)
                lines.append(f"{_short(s.model):<28} {s.loop:<{LOOP_WIDTH}} {s.tools:>5} " + " ".join(
                    f"{s.phases_ms.get(p, 0.0):>14.1f}" for p in PHASES) + f" {rest:>14.1f}")
        return "\n".join(lines)


def _short(model: str) -> str:
    return model if len(model) <= 28 else model[:25] + "..."


# --- (a) the plain loop: the lower bound ------------------------------------------------------------------

@dataclass
class PlainReply:
    text: str
    tools_used: list[str]
    model_calls: int
    model_seconds: float


async def plain_turn(messages: list[ChatMessage], text: str, config: llm.LLMConfig,
                     max_steps: int = DEFAULT_MAX_STEPS) -> PlainReply:
    """One turn of the agent loop in plain asyncio: what `DurableAgentWorkflow._turn` does, minus Temporal.

    The same calls as the activities make (`llm.complete`, `parse_reply`, `tools.run_tool`); nothing is
    recorded, nothing is retried, and a crash loses `messages`.
    """
    messages.append(ChatMessage("user", text))
    specs = tools.tool_specs() + [llm.END_CHAT_SPEC]
    used: list[str] = []
    model_seconds = 0.0
    for step in range(1, max_steps + 1):
        prompt = [{"role": "system", "content": llm.SYSTEM_PROMPT}] + [m.to_openai() for m in messages]
        started = time.perf_counter()
        reply = await llm.complete(prompt, specs, config)
        model_seconds += time.perf_counter() - started
        plan = parse_reply(reply, config.model)
        if not plan.tool_calls:
            messages.append(ChatMessage("assistant", plan.answer))
            return PlainReply(plan.answer, used, step, model_seconds)
        messages.append(ChatMessage("assistant", plan.answer, tool_calls=plan.tool_calls))
        for call in plan.tool_calls:
            try:
                output = tools.run_tool(call.name, call.arguments)
            except tools.ToolInputError as err:
                output = f"Error: {err}"
            used.append(call.name)
            messages.append(ChatMessage("tool", output, tool_call_id=call.id))
    return PlainReply("(step limit)", used, max_steps, model_seconds)


async def measure_plain(config: llm.LLMConfig, tools_needed: int, iterations: int, warmup: int) -> Series:
    messages: list[ChatMessage] = []  # one conversation per series, as the durable loop has one chat
    samples, model_ms, calls, used = [], [], [], []
    cpu = 0.0
    for i in range(warmup + iterations):
        cpu_started = time.process_time()
        started = time.perf_counter()
        try:
            reply = await plain_turn(messages, TURNS[tools_needed], config)
        except Exception as err:  # a real model that refuses or is down: say so, keys redacted
            raise BenchError(f"the plain loop failed with {config.model}: "
                             f"{redact_secrets(f'{type(err).__name__}: {err}')}") from None
        elapsed = (time.perf_counter() - started) * 1000
        if i >= warmup:
            cpu += time.process_time() - cpu_started
            samples.append(elapsed)
            model_ms.append(reply.model_seconds * 1000)
            calls.append(reply.model_calls)
            used.append(len(reply.tools_used))
    return Series(PLAIN, config.label, tools_needed, samples, Stats.of(samples), statistics.fmean(used),
                  statistics.fmean(calls), 0.0, 0.0, cpu * 1000 / iterations, model_ms=Stats.of(model_ms))


# --- (b) the durable loop -----------------------------------------------------------------------------------

def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds a process has used (Linux /proc); None elsewhere or without a pid."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_durable(client: Client, task_queue: str, loop: str, model: str, tools_needed: int,
                          iterations: int, warmup: int, server_pid: int | None = None) -> Series:
    """Send `warmup + iterations` messages to one chat workflow and time each Update, client side."""
    chat_input = ChatInput(model_call="local_activity" if loop == "local-model" else "activity")
    chat = await start_chat(client, f"bench-{loop}-{tools_needed}-{uuid.uuid4().hex[:8]}", task_queue=task_queue,
                            input=chat_input)
    await chat.status()  # a query: answered once the worker has run the chat's first task, so it is not timed
    samples, used, steps = [], [], []
    cpu = server_cpu = 0.0
    for i in range(warmup + iterations):
        cpu_started, server_started = time.process_time(), process_cpu_seconds(server_pid)
        started = time.perf_counter()
        try:
            reply = await chat.send(TURNS[tools_needed])
        except ChatError as err:
            raise BenchError(f"the {loop} loop failed a turn: {err}") from None
        elapsed = (time.perf_counter() - started) * 1000
        if reply.error:
            raise BenchError(f"the {loop} loop failed a turn: {reply.error}")
        if i >= warmup:
            cpu += time.process_time() - cpu_started
            if server_started is not None:
                server_cpu += process_cpu_seconds(server_pid) - server_started
            samples.append(elapsed)
            used.append(len(reply.tools_used))
            steps.append(reply.steps)
    history = await chat.handle.fetch_history()
    await chat.end()
    activities, local_activities, phases = _read_history(history, warmup, iterations)
    return Series(loop, model, tools_needed, samples, Stats.of(samples), statistics.fmean(used),
                  statistics.fmean(steps), activities, local_activities, cpu * 1000 / iterations,
                  phases_ms=phases, server_cpu_ms=server_cpu * 1000 / iterations if server_pid else None)


def _read_history(history: Any, warmup: int, iterations: int) -> tuple[float, float, dict[str, float]]:
    """Activities and local activities per measured turn, and the ms per turn spent in each phase.

    A measured turn's events come after the warm-up turns' `UpdateCompleted` events. Each workflow task
    and activity has a scheduled, a started and a completed event: the gaps are the time it waited for a
    worker and the time it ran. Local activities run inside a workflow task and leave a marker.
    """
    events = read_events(history)
    completed = [i for i, e in enumerate(events) if e.kind == "WorkflowExecutionUpdateCompleted"]
    if len(completed) != warmup + iterations:
        raise BenchError(f"the history holds {len(completed)} completed updates, expected {warmup + iterations}")
    if warmup:
        start = completed[warmup - 1] + 1
    else:  # skip the chat's own first workflow task, unless the first message came with it
        kinds = [e.kind for e in events]
        first_task = kinds.index("WorkflowTaskCompleted")
        accepted = kinds.index("WorkflowExecutionUpdateAccepted")
        start = first_task + 1 if first_task < accepted - 1 else 0
    window = events[start:completed[-1] + 1]
    at = {e.id: e.ms for e in events}
    phases = dict.fromkeys(PHASES, 0.0)
    since_event = {"WorkflowTaskStarted": ("workflow task wait", "scheduled_id"),
                   "WorkflowTaskCompleted": ("workflow task run", "started_id"),
                   "ActivityTaskStarted": ("activity wait", "scheduled_id"),
                   "ActivityTaskCompleted": ("activity run", "started_id")}
    for e in window:
        if e.kind in since_event:
            phase, field_name = since_event[e.kind]
            phases[phase] += at[e.id] - at[getattr(e, field_name)]
    count = sum(e.kind == "ActivityTaskScheduled" for e in window)
    markers = sum(e.kind == "MarkerRecorded" for e in window)
    return count / iterations, markers / iterations, {p: v / iterations for p, v in phases.items()}


def worker_options(loop: str) -> dict[str, Any]:
    """The worker options a loop adds to the course's `create_worker` defaults."""
    if loop == "unsandboxed":
        # No sandbox: workflow code runs as ordinary Python. Durability is the same (the history is written
        # and replayed alike); what goes is the guard that stops a workflow from calling datetime.now() or
        # open(), and the per-workflow module isolation. Safe for this workflow: it passes under the sandbox
        # and makes no I/O. Not for workflow code a learner is still writing.
        return {"workflow_runner": UnsandboxedWorkflowRunner()}
    if loop == "no-eager":
        # Eager activity execution off: what it buys, by its absence. With it on (the default), the server
        # hands an activity that this worker schedules straight back in its reply to the workflow task,
        # instead of through the task queue and a poll.
        return {"disable_eager_activity_execution": True}
    if loop == "no-cache":
        # No sticky workflow cache: the worker forgets each workflow after every workflow task, so each task
        # replays the chat's whole history from the start. Correct, and ever slower as the chat grows.
        return {"max_cached_workflows": 0}
    return {}


def client_for(client: Client, loop: str) -> Client:
    """The client a loop's chats and worker use: the course's, or the same connection with another converter."""
    if loop != "default-converter":
        return client
    # The SDK's default data converter: the same JSON in the history as the course's pydantic converter (same
    # durability), decoded by the SDK's Python code instead of pydantic-core, which reads each dataclass's type
    # hints again for every value. The same connection, another converter: the chat's client and worker agree.
    return Client(**{**client.config(), "data_converter": DataConverter.default})


# --- the whole benchmark -------------------------------------------------------------------------------------

def overheads(series: list[Series]) -> list[Overhead]:
    result = []
    for s in series:
        if s.loop == PLAIN:
            continue
        plain = next((p for p in series if (p.loop, p.model, p.tools) == (PLAIN, s.model, s.tools)), None)
        if plain is None or plain.model_ms is None:
            continue
        extra = s.stats.p50 - plain.stats.p50
        result.append(Overhead(s.loop, s.model, s.tools, extra, extra / max(s.steps, 1.0),
                               s.stats.p50 / plain.stats.p50, extra / max(plain.model_ms.p50, 1e-6)))
    return result


def environment() -> dict[str, str]:
    from importlib.metadata import version

    cpus = os.cpu_count() or 0
    info = {"python": platform.python_version(), "temporalio": version("temporalio"),
            "litellm": version("litellm"), "cpus": str(cpus), "platform": sys.platform}
    info["summary"] = f"Python {info['python']}, temporalio {info['temporalio']}, {cpus} CPUs"
    return info


def models_to_measure(current: Settings | None = None, latency_ms: float = 0.0) -> list[llm.LLMConfig]:
    """The offline model always (and again answering in `latency_ms`, as a real model takes its time, when
    given); the configured model too when it is a real one (LLM_MODEL)."""
    current = current or settings()
    real = llm.LLMConfig(current.llm_model, current.llm_api_base, current.llm_timeout_seconds)
    slow = [llm.LLMConfig(latency_ms=latency_ms)] if latency_ms else []
    return [llm.LLMConfig()] + slow + ([] if current.offline else [real])


async def run_benchmark(client: Client | None = None, *, iterations: int = 50, warmup: int = 5,
                        loops: tuple[str, ...] | list[str] = DEFAULT_LOOPS,
                        models: list[llm.LLMConfig] | None = None,
                        tool_counts: tuple[int, ...] = (0, 1, 2), progress: Any = None,
                        server_config: dict[str, object] | None = None) -> BenchReport:
    """Measure every loop, model and kind of turn; start the embedded server if no client is given (with
    `server_config` added to its settings). For each model and kind of turn the loops are measured one
    right after the other, so a change in the machine's load touches them alike."""
    if iterations < 1 or warmup < 0:
        raise BenchError(f"iterations must be at least 1 and warmup at least 0 (got {iterations}, {warmup})")
    unknown = sorted(set(loops) - set(LOOPS))
    if unknown or not loops:
        raise BenchError(f"unknown loop(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(LOOPS)}")
    if set(tool_counts) - set(TURNS):
        raise BenchError(f"tool counts must be among {sorted(TURNS)}")
    if server_config and client is not None:
        raise BenchError("server settings apply to the server the benchmark starts: give no client with them")
    models = models or models_to_measure()
    say = progress or (lambda text: None)
    from durable_agent.server import start_temporal

    servers = []
    series: list[Series] = []
    try:
        # Each loop's client, and its server's process (to read its CPU) when this process started it.
        clients: dict[str, tuple[Client, int | None]] = {}
        if client is None and set(loops) - {PLAIN, *OWN_SERVER}:
            servers.append(await start_temporal(ui=False, dynamic_config=server_config))
            client = servers[-1].client
        shared = (client, _server_pid(servers[-1]) if servers else None)
        for loop in (name for name in LOOPS if name in loops and name != PLAIN):
            if loop in OWN_SERVER:
                servers.append(await start_temporal(ui=False, **OWN_SERVER[loop]))
                clients[loop] = (servers[-1].client, _server_pid(servers[-1]))
            else:
                clients[loop] = shared
        for config in models:
            model = config.label
            async with contextlib.AsyncExitStack() as stack:
                running = {}
                for loop, (loop_client, pid) in clients.items():
                    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
                    loop_client = client_for(loop_client, loop)
                    worker = create_worker(loop_client, task_queue=task_queue, activities=AgentActivities(config),
                                           **worker_options(loop))
                    await stack.enter_async_context(worker)
                    running[loop] = (loop_client, task_queue, pid)
                for n in tool_counts:
                    if PLAIN in loops:
                        say(f"plain loop, {model}, {n} tool(s)")
                        series.append(await measure_plain(config, n, iterations, warmup))
                    for loop, (loop_client, task_queue, pid) in running.items():
                        say(f"{loop} loop, {model}, {n} tool(s)")
                        series.append(await measure_durable(loop_client, task_queue, loop, model, n, iterations,
                                                            warmup, pid))
    finally:
        for server in servers:
            await server.shutdown()
    order = {loop: i for i, loop in enumerate(LOOPS)}
    series.sort(key=lambda s: ([c.label for c in models].index(s.model), order[s.loop], s.tools))
    return BenchReport(iterations, warmup, list(loops), [c.label for c in models], series, overheads(series),
                       environment(), dict(server_config or {}))


def _server_pid(temporal: Temporal) -> int | None:
    """The embedded server's process id, to read its CPU (None for a server this process did not start)."""
    return temporal.server.pid if temporal.server else None


def plot(report: BenchReport, model: str | None = None) -> Any:
    """Box plots of the latency distributions, one panel per kind of turn (matplotlib, log scale)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    model = model or report.models[0]
    counts = sorted({s.tools for s in report.series if s.model == model})
    figure, axes = plt.subplots(1, len(counts), figsize=(4 * len(counts), 3.6), squeeze=False, sharey=True)
    everything = [x for s in report.series if s.model == model for x in s.samples_ms]
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
             if min(everything) / 2 <= t <= max(everything) * 2]
    for ax, n in zip(axes[0], counts):
        chosen = [s for s in report.series if s.model == model and s.tools == n]
        ax.boxplot([s.samples_ms for s in chosen], showfliers=True)
        ax.set_xticks(range(1, len(chosen) + 1), [s.loop for s in chosen], rotation=20)
        ax.set_title(f"{n} tool call{'s' if n != 1 else ''} per turn")
        ax.set_yscale("log")
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel("ms per turn (log scale)")
    figure.suptitle(f"Latency of a chat turn ({_short(model)}, {report.iterations} turns each)")
    figure.tight_layout()
    return figure


# --- what streaming costs (`durable-agent bench --streaming`, notebook 12) -------------------------------------

STREAMED_TURN = "hello"  # the offline model answers with its help text: about forty words, streamed word by word


@dataclass
class StreamingSide:
    name: str  # "not streamed" or "streamed"
    turn_ms: Stats  # the Update, client side: message sent -> reply received
    first_text_ms: Stats | None  # message sent -> the first piece of text shown (streamed only)
    events_per_turn: float  # events the turn added to the chat's history
    bytes_per_turn: float  # their size
    publish_signals_per_turn: float  # the stream's batches (signals)
    poll_updates_per_turn: float  # the reader's long polls (Updates)


@dataclass
class StreamingCost:
    iterations: int
    pieces_per_reply: float
    seconds_per_word: float
    sides: list[StreamingSide]

    def table(self) -> str:
        rows = [f"Streaming a reply of {self.pieces_per_reply:.0f} pieces, {self.iterations} turns each "
                f"(offline model, {self.seconds_per_word * 1000:g} ms between words):",
                f"{'':14}{'turn p50':>10}{'first text p50':>16}{'events/turn':>13}{'KB/turn':>9}"
                f"{'signals/turn':>14}{'polls/turn':>12}"]
        for side in self.sides:
            first = f"{side.first_text_ms.p50:.0f} ms" if side.first_text_ms else "-"
            rows.append(f"{side.name:<14}{side.turn_ms.p50:>7.0f} ms{first:>16}{side.events_per_turn:>13.1f}"
                        f"{side.bytes_per_turn / 1024:>9.1f}{side.publish_signals_per_turn:>14.1f}"
                        f"{side.poll_updates_per_turn:>12.1f}")
        return "\n".join(rows)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _stream_events(events: list[Any]) -> tuple[int, int]:
    signals = sum(1 for e in events if e.kind == "WorkflowExecutionSignaled"
                  and e.details.signal_name.startswith("__temporal_workflow_stream"))
    polls = sum(1 for e in events if e.kind == "WorkflowExecutionUpdateAccepted"
                and e.details.accepted_request.input.name.startswith("__temporal_workflow_stream"))
    return signals, polls


async def measure_streaming_side(client: Client, task_queue: str, streamed: bool, iterations: int,
                                 warmup: int) -> tuple[StreamingSide, float]:
    from durable_agent.streaming import StreamedText, stream_reply

    chat = await start_chat(client, f"bench-stream-{uuid.uuid4().hex[:8]}", task_queue=task_queue,
                            input=ChatInput(stream_replies=streamed))
    await chat.status()
    turns, firsts, pieces = [], [], []
    start_events = 0
    for i in range(warmup + iterations):
        if i == warmup:
            start_events = len((await chat.handle.fetch_history()).events)
        started, first = time.perf_counter(), []
        if streamed:
            shown = StreamedText()
            reply = await stream_reply(chat, STREAMED_TURN, lambda _t: first or first.append(time.perf_counter()),
                                       shown)
            if shown.text != reply.text:
                raise BenchError("the streamed text differs from the reply: " + shown.text[:60])
        else:
            reply = await chat.send(STREAMED_TURN)
        elapsed = (time.perf_counter() - started) * 1000
        if i >= warmup:
            turns.append(elapsed)
            if first:
                firsts.append((first[0] - started) * 1000)
            pieces.append(len(reply.text.split()))
    history = await chat.handle.fetch_history()
    raw = list(history.events)[start_events:]
    events = read_events(history)[start_events:]
    await chat.end()
    signals, polls = _stream_events(events)
    side = StreamingSide("streamed" if streamed else "not streamed", Stats.of(turns),
                         Stats.of(firsts) if firsts else None, len(events) / iterations,
                         sum(e.ByteSize() for e in raw) / iterations, signals / iterations, polls / iterations)
    return side, statistics.fmean(pieces)


async def run_streaming_benchmark(client: Client | None = None, *, iterations: int = 20, warmup: int = 3,
                                  seconds_per_word: float = 0.0) -> StreamingCost:
    """The same turn (a forty-word reply from the offline model), not streamed and streamed: time per turn, time
    to the first text, and what it adds to the history. `seconds_per_word` paces the offline model's stream
    (0: as fast as it can, so the difference is streaming's own cost)."""
    if iterations < 1 or warmup < 0:
        raise BenchError(f"iterations must be at least 1 and warmup at least 0 (got {iterations}, {warmup})")
    temporal = None
    if client is None:
        from durable_agent.server import start_temporal

        temporal = await start_temporal(ui=False)
        client = temporal.client
    pace, llm.OFFLINE_SECONDS_PER_WORD = llm.OFFLINE_SECONDS_PER_WORD, seconds_per_word
    try:
        task_queue = f"bench-{uuid.uuid4().hex[:8]}"
        async with create_worker(client, task_queue=task_queue):
            await llm.litellm_ready()
            sides, pieces = [], 0.0
            for streamed in (False, True):
                side, pieces = await measure_streaming_side(client, task_queue, streamed, iterations, warmup)
                sides.append(side)
    finally:
        llm.OFFLINE_SECONDS_PER_WORD = pace
        if temporal is not None:
            await temporal.shutdown()
    return StreamingCost(iterations, pieces, seconds_per_word, sides)
