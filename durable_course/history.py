"""A chat's event history, as a table to read and as a timeline picture.

Primitive 3 (event-sourced state): the server records every step of a workflow as an event (a message
accepted, an activity scheduled, started, completed, a reply sent). That list *is* the agent's state: a
worker rebuilds the conversation by replaying it. This module only reads it.

    from durable_course.history import history_table, history_timeline
    await history_table(chat)        # event, time, activity, attempt, result summary
    await history_timeline(chat)     # activities as bars on a time axis; waits, retries and gaps visible

Both take a `ChatSession`, a workflow handle, or a saved `WorkflowHistory` (e.g. from `to_json()`).
Temporal writes no event for a failed attempt that will be retried: the `ActivityTaskStarted` event of the
attempt that finally ran carries its attempt number and the previous failure. So, in the timeline, the
time between "scheduled" and "started" is the wait: queueing, retry back-off, or a crashed worker.
"""

from __future__ import annotations

import html
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.converter import DataConverter

from durable_agent.session import ChatSession

from .events import ACTIVITY_OUTCOMES, Event, read
from .events import fetch as fetch_history

SUMMARY_CHARS = 70
GAP_SECONDS = 1.0  # a wait at least this long is labelled in the timeline


HistoryEvent = Event  # one event, as events.py reads it; the views fill in its summary


@dataclass
class HistoryTable:
    """The events as a table: printed as text, shown as HTML in a notebook."""

    workflow_id: str
    events: list[HistoryEvent]
    columns: tuple[str, ...] = ("time", "event", "activity", "attempt", "summary")

    def rows(self) -> list[tuple[str, ...]]:
        return [(f"{e.seconds:6.2f} s", e.kind, e.activity, "" if e.attempt is None else str(e.attempt), e.summary)
                for e in self.events]

    def __str__(self) -> str:
        rows = [self.columns, *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self.columns) - 1)]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]
                         for row in rows).rstrip()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{c}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(cell)}</td>" for cell in row)
                       + "</tr>" for row in self.rows())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- reading the history ----------------------------------------------------------------------------------

def decode_events(history: WorkflowHistory) -> list[HistoryEvent]:
    """Every event of a history (read by events.py), with its payloads decoded and summarised."""
    found = read(history)
    for event in found:
        event.summary = _shorten(_summary(event.kind, event.details, event.activity))
    return found


async def history_events(chat: ChatSession | WorkflowHandle | WorkflowHistory) -> list[HistoryEvent]:
    return decode_events(await fetch_history(chat))


async def history_table(chat: ChatSession | WorkflowHandle | WorkflowHistory, *,
                        workflow_tasks: bool = False) -> HistoryTable:
    """The history as a table. Workflow-task events (the worker picking up the workflow's code) are left
    out unless `workflow_tasks=True`: there are many, and their number depends on timing."""
    history = await fetch_history(chat)
    events = [e for e in decode_events(history) if workflow_tasks or not e.is_workflow_task]
    return HistoryTable(history.workflow_id, events)


def _values(payloads: Any) -> list[Any]:
    try:
        return DataConverter.default.payload_converter.from_payloads(list(payloads.payloads))
    except Exception:
        return ["<undecodable payload>"]


def _call(name: str, arguments: dict[str, Any]) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"


def _summary(kind: str, d: Any, activity: str) -> str:
    if kind == "WorkflowExecutionStarted":
        started = _values(d.input)
        if started and isinstance(started[0], str):  # a one-turn workflow (notebook 10's framework agents)
            return f"started with {started[0]!r} on task queue {d.task_queue.name!r}"
        return f"chat started on task queue {d.task_queue.name!r}"
    if kind == "WorkflowExecutionUpdateAccepted":
        args = _values(d.accepted_request.input.args)
        text = args[0].get("text", "") if args and isinstance(args[0], dict) else ""
        return f"{d.accepted_request.input.name}: {text!r}"
    if kind == "WorkflowExecutionUpdateCompleted":
        if d.outcome.HasField("failure"):
            return f"refused: {d.outcome.failure.message}"
        reply = (_values(d.outcome.success) or [{}])[0]
        return f"reply: {reply.get('text', '')!r}" if isinstance(reply, dict) else "reply"
    if kind == "WorkflowExecutionSignaled":
        return f"signal {d.signal_name}"
    if kind == "WorkflowExecutionCompleted":
        transcript = (_values(d.result) or [{}])[0]
        if isinstance(transcript, dict):
            return f"transcript: {len(transcript.get('messages', []))} messages, {transcript.get('turns', 0)} turn(s)"
        return f"result: {transcript!r}" if isinstance(transcript, str) else "completed"
    if kind == "ActivityTaskScheduled":
        payload = (_values(d.input) or [{}])[0]
        if isinstance(payload, dict) and "call" in payload:  # execute_tool, call_mcp_tool
            call = payload.get("call", {})
            return _call(call.get("name", "?"), call.get("arguments", {}))
        framework = _framework_request(payload, activity)
        if framework:
            return framework
        if isinstance(payload, dict) and "server" in payload:  # list_mcp_tools
            return "MCP tools/list"
        if isinstance(payload, dict) and "messages" in payload:
            count = len(payload["messages"])
            return f"{count} message{'s' if count != 1 else ''} to the model"
        return ""
    if kind == "ActivityTaskStarted":
        return f"retry after: {d.last_failure.message}" if d.attempt > 1 and d.last_failure.message else ""
    if kind == "ActivityTaskCompleted":
        result = (_values(d.result) or [{}])[0]
        if not isinstance(result, dict):
            return str(result)
        framework = _framework_result(result)
        if framework:
            return framework
        if "output" in result:  # a ToolResult
            return result["output"]
        if "tools" in result and "server" in result:  # an MCP server's tool listing
            return "tools: " + ", ".join(t.get("name", "?") for t in result["tools"])
        calls = result.get("tool_calls") or []
        if calls:
            return "tool calls: " + ", ".join(_call(c.get("name", "?"), c.get("arguments", {})) for c in calls)
        return f"answer: {result.get('answer', '')!r}"
    if kind in ("ActivityTaskFailed", "ActivityTaskTimedOut", "WorkflowTaskFailed", "WorkflowExecutionFailed"):
        return d.failure.message if d.HasField("failure") else ""
    if kind == "WorkflowTaskTimedOut":
        return "the worker did not finish the workflow task in time"
    if kind == "StartChildWorkflowExecutionInitiated":
        return f"start child {d.workflow_id} ({d.workflow_type.name})"
    if kind == "ChildWorkflowExecutionStarted":
        return f"child {d.workflow_execution.workflow_id} started"
    if kind == "ChildWorkflowExecutionCompleted":
        reply = (_values(d.result) or [{}])[0]
        text = reply.get("text", "") if isinstance(reply, dict) else ""
        return f"child {d.workflow_execution.workflow_id} answered: {text!r}"
    if kind == "ChildWorkflowExecutionCanceled":
        return f"child {d.workflow_execution.workflow_id} was cancelled"
    if kind in ("ChildWorkflowExecutionFailed", "ChildWorkflowExecutionTimedOut", "ChildWorkflowExecutionTerminated"):
        return f"child {d.workflow_execution.workflow_id}: {kind.removeprefix('ChildWorkflowExecution').lower()}"
    return ""


# The framework agents of notebook 10 record their own payloads: the OpenAI Agents SDK's model activity
# (`invoke_model_activity`: Responses-API items in and out) and tools as plain activities; Pydantic AI's
# `agent__<name>__model_request` (its messages and parts) and `...__call_tool` ({"name", "tool_args"}).

def _framework_request(payload: Any, activity: str) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("input"), list):  # OpenAI Agents SDK model call
        count = len(payload["input"])
        return f"{count} item{'s' if count != 1 else ''} to the model"
    if isinstance(payload, dict) and "tool_args" in payload:  # Pydantic AI tool call
        return _call(str(payload.get("name", "?")), payload.get("tool_args") or {})
    if isinstance(payload, str) and activity not in ("plan_next_action", "execute_tool"):  # a tool activity
        return f"{activity}({payload!r})"
    return ""


def _framework_result(result: dict[str, Any]) -> str:
    items = result.get("output") if isinstance(result.get("output"), list) else result.get("parts")
    if isinstance(items, list):  # a model's reply: OpenAI output items, or Pydantic AI parts
        calls = [_call(i.get("name") or i.get("tool_name", "?"), _arguments(i.get("arguments", i.get("args"))))
                 for i in items if isinstance(i, dict) and i.get("type", i.get("part_kind")) in ("function_call", "tool-call")]
        if calls:
            return "tool calls: " + ", ".join(calls)
        texts = [i.get("content") if isinstance(i.get("content"), str) else
                 "".join(c.get("text", "") for c in i.get("content") or [] if isinstance(c, dict))
                 for i in items if isinstance(i, dict)]
        return f"answer: {''.join(texts)!r}"
    if result.get("kind") == "tool_return":  # Pydantic AI tool result
        return str(result.get("result", ""))
    return ""


def _arguments(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except ValueError:
            return {"arguments": value}
    return value if isinstance(value, dict) else {}


def _shorten(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


# --- the timeline picture ---------------------------------------------------------------------------------

@dataclass
class Bar:
    """One activity on the timeline: waiting from `scheduled` to `started`, running until `closed`."""

    label: str
    scheduled: float
    started: float | None = None
    closed: float | None = None
    outcome: str = "running"  # "completed", "failed", "timed out", "running"
    attempt: int = 1


def timeline_bars(events: list[HistoryEvent]) -> list[Bar]:
    """The activities of a history, one bar each, in the order they were scheduled."""
    bars: dict[int, Bar] = {}
    for e in events:
        if e.kind == "ActivityTaskScheduled":
            name = e.summary.split("(")[0] if e.activity in ("execute_tool", "call_mcp_tool") and e.summary else e.activity
            bars[e.id] = Bar(name, e.seconds)
        elif e.scheduled_id in bars:
            bar = bars[e.scheduled_id]
            if e.kind == "ActivityTaskStarted":
                bar.started, bar.attempt = e.seconds, e.attempt or 1
            elif e.kind in ACTIVITY_OUTCOMES:
                bar.closed, bar.outcome = e.seconds, ACTIVITY_OUTCOMES[e.kind]
    return list(bars.values())


def workflow_task_spans(events: list[HistoryEvent]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """When the workflow's code waited for a worker, and when a worker ran it: (waits, runs).

    A wait that outlives a dead worker's task (WorkflowTaskTimedOut, then scheduled again) is one wait."""
    waits: list[tuple[float, float]] = []
    runs: list[tuple[float, float]] = []
    waiting_since: float | None = None
    running_since: float | None = None
    for e in events:
        if e.kind == "WorkflowTaskScheduled" and waiting_since is None:
            waiting_since = e.seconds
        elif e.kind == "WorkflowTaskStarted":
            if waiting_since is not None:
                waits.append((waiting_since, e.seconds))
            waiting_since, running_since = None, e.seconds
        elif e.kind in ("WorkflowTaskCompleted", "WorkflowTaskFailed", "WorkflowTaskTimedOut") and running_since is not None:
            runs.append((running_since, e.seconds))
            running_since = None
    return waits, runs


@dataclass
class Timeline:
    """A matplotlib figure of the history (`.figure`); a notebook shows it as a PNG."""

    workflow_id: str
    bars: list[Bar]
    figure: Any

    def save(self, path: str) -> None:
        self.figure.savefig(path, dpi=110, bbox_inches="tight")

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        return buffer.getvalue()

    def __repr__(self) -> str:
        retried = sum(1 for b in self.bars if b.attempt > 1)
        return f"Timeline of {self.workflow_id}: {len(self.bars)} activities, {retried} retried"


COLOURS = {"completed": "#2da44e", "failed": "#cf222e", "timed out": "#d4a72c", "canceled": "#8c959f",
           "running": "#0969da"}


def timeline_figure(events: list[HistoryEvent], title: str = "") -> Any:
    """Draw the activities as bars on a time axis; messages and replies as vertical lines."""
    from matplotlib.figure import Figure  # no pyplot: nothing global, nothing shown twice

    bars = timeline_bars(events)
    end = max((e.seconds for e in events), default=0.0)
    figure = Figure(figsize=(9, 1.4 + 0.38 * (len(bars) + 1)))
    ax = figure.add_subplot()
    waits, runs = workflow_task_spans(events)  # row 0: the workflow's own code, run by a worker
    ax.broken_barh([(a, max(b - a, end * 0.002)) for a, b in waits], (-0.25, 0.5), facecolors="#eaeef2",
                   edgecolors="#8c959f", hatch="//")
    ax.broken_barh([(a, max(b - a, end * 0.002)) for a, b in runs], (-0.25, 0.5), facecolors="#8250df")
    for a, b in waits:
        if b - a >= GAP_SECONDS:
            ax.text((a + b) / 2, 0, f"waited {b - a:.1f} s for a worker", ha="center", va="center", fontsize=8,
                    color="#cf222e", bbox=dict(facecolor="white", edgecolor="none", pad=1))
    for row, bar in enumerate(bars, start=1):
        started = bar.started if bar.started is not None else (bar.closed if bar.closed is not None else end)
        wait = started - bar.scheduled
        ax.barh(row, max(wait, end * 0.002), left=bar.scheduled, height=0.5, color="#eaeef2",
                edgecolor="#8c959f", hatch="//" if bar.attempt > 1 or wait >= GAP_SECONDS else None)
        if bar.started is not None:
            closed = bar.closed if bar.closed is not None else end
            ax.barh(row, max(closed - bar.started, end * 0.004), left=bar.started, height=0.5,
                    color=COLOURS[bar.outcome])
        notes = []
        if bar.attempt > 1:
            notes.append(f"attempt {bar.attempt}")
        if wait >= GAP_SECONDS:
            notes.append(f"waited {wait:.1f} s")
        if bar.outcome not in ("completed", "running"):
            notes.append(bar.outcome)
        if notes:
            ax.annotate(", ".join(notes), (bar.closed if bar.closed is not None else started, row), xytext=(6, 0), textcoords="offset points",
                        va="center", fontsize=8, color="#cf222e")
    for e in events:
        if e.kind == "WorkflowExecutionUpdateAccepted":
            ax.axvline(e.seconds, color="#1f6feb", linestyle=":", linewidth=1)
        elif e.kind in ("WorkflowExecutionUpdateCompleted", "WorkflowExecutionSignaled"):
            ax.axvline(e.seconds, color="#2da44e", linestyle=":", linewidth=1)
    ax.set_yticks(range(len(bars) + 1), ["workflow code"] + [f"{i + 1}. {b.label}" for i, b in enumerate(bars)],
                  fontsize=8)
    ax.set_ylim(len(bars) + 0.5, -0.7)
    ax.set_xlim(0, max(end * 1.15, 0.1))
    ax.set_xlabel("seconds since the chat started (blue dotted: message received, green: reply or signal)",
                  fontsize=8)
    legend = "grey = waiting (for a worker, retry back-off, a crash), colour = running"
    ax.set_title(f"{title}: {legend}" if title else legend, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


async def history_timeline(chat: ChatSession | WorkflowHandle | WorkflowHistory) -> Timeline:
    """The history as a timeline picture (see `timeline_figure`)."""
    history = await fetch_history(chat)
    events = decode_events(history)
    return Timeline(history.workflow_id, timeline_bars(events), timeline_figure(events, f"Chat {history.workflow_id}"))


# --- several agents: a workflow and its children, as a tree -------------------------------------------------

@dataclass
class WorkflowNode:
    """One workflow of a tree: its id and type, how it ended (as its parent recorded it), and its children."""

    workflow_id: str
    workflow_type: str
    outcome: str  # "running", "completed", "canceled", "failed", ...
    activities: list[str]
    children: list["WorkflowNode"]

    def lines(self, prefix: str = "", last: bool = True, root: bool = True) -> list[str]:
        branch = "" if root else ("└── " if last else "├── ")
        counts: dict[str, int] = {}
        for name in self.activities:
            counts[name] = counts.get(name, 0) + 1
        acts = ", ".join(f"{n} {name}" for name, n in counts.items()) or "no activities"
        out = [f"{prefix}{branch}{self.workflow_id}  {self.workflow_type}  {self.outcome}  ({acts})"]
        inner = prefix + ("" if root else ("    " if last else "│   "))
        for i, child in enumerate(self.children):
            out.extend(child.lines(inner, i == len(self.children) - 1, False))
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    __repr__ = __str__


_CHILD_OUTCOMES = {"ChildWorkflowExecutionCompleted": "completed", "ChildWorkflowExecutionCanceled": "canceled",
                   "ChildWorkflowExecutionFailed": "failed", "ChildWorkflowExecutionTimedOut": "timed out",
                   "ChildWorkflowExecutionTerminated": "terminated"}


async def history_tree(chat: ChatSession | WorkflowHandle, client: Any = None) -> WorkflowNode:
    """A workflow and the child workflows it started (recursively), each read from its own event history:
    the same tree the Temporal UI shows on the parent's page."""
    handle = chat.handle if isinstance(chat, ChatSession) else chat
    client = client or handle._client  # noqa: SLF001 (a handle knows its client)
    history = await fetch_history(handle)
    return await _node(client, history, "running")


async def _node(client: Any, history: WorkflowHistory, outcome: str) -> WorkflowNode:
    events = read(history)
    kind = next((e.details.workflow_type.name for e in events if e.kind == "WorkflowExecutionStarted"), "?")
    started: dict[int, str] = {}
    ended: dict[str, str] = {}
    for e in events:
        if e.kind == "StartChildWorkflowExecutionInitiated":
            started[e.id] = e.details.workflow_id
        elif e.kind in _CHILD_OUTCOMES:
            ended[e.details.workflow_execution.workflow_id] = _CHILD_OUTCOMES[e.kind]
    last = events[-1].kind if events else ""
    if last.startswith("WorkflowExecution") and last.removeprefix("WorkflowExecution").lower() in (
            "completed", "failed", "canceled", "terminated", "timedout", "continuedasnew"):
        outcome = last.removeprefix("WorkflowExecution").lower()
    children = []
    for child_id in started.values():
        child_history = await client.get_workflow_handle(child_id).fetch_history()
        children.append(await _node(client, child_history, ended.get(child_id, "running")))
    activities = [e.activity for e in events if e.kind == "ActivityTaskScheduled"]
    return WorkflowNode(history.workflow_id, kind, outcome, activities, children)
