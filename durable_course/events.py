"""Reading event histories, and replaying them: the one place the course does either.

Primitive 3 (event-sourced state): a workflow's event history is its state. The history views
(`history.py`), the fault lab (`faults.py`), the exercise checks (`checks.py`) and the benchmark (`bench.py`)
all read histories through this module, and replay them with `replay()`.

    history = await fetch(chat)                 # a ChatSession, a workflow handle, or a saved WorkflowHistory
    for event in read(history): ...             # Event: id, kind ("ActivityTaskStarted"), time, activity, attempt
    for activity in activities(history): ...    # Activity: type, input, outcome, attempt, result, last failure
    report = await replay(history, MyWorkflow)  # ReplayReport: ok, or the error and what it means
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from durable_agent.logs import silenced
from durable_agent.server import DATA_CONVERTER
from durable_agent.session import ChatSession

Chat = ChatSession | WorkflowHandle | WorkflowHistory


async def fetch(chat: Chat) -> WorkflowHistory:
    """The full event history of a chat, from the server (or as given, if already fetched)."""
    if isinstance(chat, WorkflowHistory):
        return chat
    if isinstance(chat, ChatSession):
        chat = chat.handle
    if not isinstance(chat, WorkflowHandle):
        raise TypeError(f"expected a ChatSession, a workflow handle or a WorkflowHistory, not {type(chat).__name__}")
    try:
        return await chat.fetch_history()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ValueError(f"there is no workflow {chat.id!r} on this server") from None
        raise


@dataclass
class Event:
    """One event of a history, in plain words. `details` is the event's own attributes (payloads and all)."""

    id: int
    kind: str  # e.g. "ActivityTaskScheduled", "WorkflowExecutionUpdateCompleted"
    time: datetime
    seconds: float  # since the first event
    activity: str = ""  # the activity type, for activity events
    attempt: int | None = None  # for ActivityTaskStarted: 1, or more after retries
    scheduled_id: int | None = None  # for task events: the event that scheduled the task
    started_id: int | None = None  # for a task's completion: the event that started it
    details: Any = field(default=None, repr=False)
    summary: str = ""  # filled in by the history views

    @property
    def is_workflow_task(self) -> bool:
        return self.kind.startswith("WorkflowTask")

    @property
    def ms(self) -> float:
        """Milliseconds since the first event."""
        return self.seconds * 1000


def _events(history: WorkflowHistory | Sequence[Any]) -> Sequence[Any]:
    return history.events if isinstance(history, WorkflowHistory) else history


def read(history: WorkflowHistory | Sequence[Any]) -> list[Event]:
    """Every event of a history (or of a list of raw events), decoded into `Event`s."""
    raw_events = _events(history)
    events: list[Event] = []
    activity_types: dict[int, str] = {}  # scheduled event id -> activity type
    start = raw_events[0].event_time.ToDatetime() if raw_events else None
    for raw in raw_events:
        attribute = raw.WhichOneof("attributes") or ""
        kind = "".join(word.title() for word in attribute.removesuffix("_event_attributes").split("_"))
        time = raw.event_time.ToDatetime()
        details = getattr(raw, attribute) if attribute else None
        event = Event(raw.event_id, kind, time, (time - start).total_seconds(), details=details)
        if kind == "ActivityTaskScheduled":
            activity_types[raw.event_id] = details.activity_type.name
            event.scheduled_id = raw.event_id
        elif hasattr(details, "scheduled_event_id"):
            event.scheduled_id = details.scheduled_event_id
        if hasattr(details, "started_event_id"):
            event.started_id = details.started_event_id
        if kind.startswith("ActivityTask") and event.scheduled_id is not None:
            event.activity = activity_types.get(event.scheduled_id, "")
        if kind == "ActivityTaskStarted":
            event.attempt = details.attempt
        events.append(event)
    return events


def count(events: Sequence[Event], kind: str) -> int:
    return sum(1 for e in events if e.kind == kind)


@dataclass
class Activity:
    """One activity as the history records it: what was asked, and how it ended."""

    type: str
    activity_id: str
    scheduled_id: int  # the event id of its ActivityTaskScheduled
    input: list[Any]  # payloads
    schedule_to_close: float | None  # seconds, as the server enforces it (None: no limit)
    outcome: str = "pending"  # "completed", "failed", "timed out", "canceled"
    attempt: int = 0  # the last attempt the history recorded (its started event)
    result: list[Any] = field(default_factory=list)  # payloads, when completed
    retry_state: int | None = None  # when failed: why the server stopped retrying
    last_failure: str = ""  # why the attempt before the recorded one ended (kept on the started event)


# How each closing event of an activity reads (the history views and `activities` use it).
ACTIVITY_OUTCOMES = {"ActivityTaskCompleted": "completed", "ActivityTaskFailed": "failed",
                     "ActivityTaskTimedOut": "timed out", "ActivityTaskCanceled": "canceled"}


def activities(history: WorkflowHistory | Sequence[Event]) -> list[Activity]:
    """Every activity of a history, in the order they were scheduled."""
    events = history if isinstance(history, list) and all(isinstance(e, Event) for e in history) else read(history)
    found: dict[int, Activity] = {}
    for e in events:
        d = e.details
        if e.kind == "ActivityTaskScheduled":
            limit = d.schedule_to_close_timeout.ToTimedelta().total_seconds() \
                if d.HasField("schedule_to_close_timeout") else 0.0
            found[e.id] = Activity(d.activity_type.name, d.activity_id, e.id, list(d.input.payloads), limit or None)
        elif e.scheduled_id in found and e.kind == "ActivityTaskStarted":
            found[e.scheduled_id].attempt = d.attempt
            found[e.scheduled_id].last_failure = d.last_failure.message if d.HasField("last_failure") else ""
        elif e.scheduled_id in found and e.kind in ACTIVITY_OUTCOMES:
            found[e.scheduled_id].outcome = ACTIVITY_OUTCOMES[e.kind]
            if e.kind == "ActivityTaskCompleted":
                found[e.scheduled_id].result = list(d.result.payloads)
            elif e.kind == "ActivityTaskFailed":
                found[e.scheduled_id].retry_state = d.retry_state
    return list(found.values())


def decode(payloads: Sequence[Any], type_: type, converter: DataConverter | None = None) -> Any:
    """One value from a history's payloads (an activity's input or result, a workflow's input)."""
    converter = converter or DATA_CONVERTER
    return converter.payload_converter.from_payloads(list(payloads), [type_])[0]


# --- replay ------------------------------------------------------------------------------------------------

@dataclass
class ReplayReport:
    """Whether a workflow class can take over the chat a history records, and if not why, in plain words."""

    workflow: str
    ok: bool
    error_type: str | None = None
    temporal_says: str | None = None
    explanation: str = ""

    @property
    def error(self) -> str | None:
        return None if self.ok else f"{self.error_type}: {self.temporal_says}"

    def __str__(self) -> str:
        if self.ok:
            return f"{self.workflow}: replayed the recorded history cleanly. Running chats can take this code."
        return (f"{self.workflow}: replay FAILED ({self.error_type})\n  Temporal says: {self.temporal_says}\n"
                f"  In plain words: {self.explanation}")


_FIX = ("Replay re-runs the workflow code against the recorded events to rebuild a chat's state, so the code "
        "must make the same decisions in the same order. A running chat given this code would be stuck until "
        "the old code came back. Guard the change with workflow.patched(...), or ship it as a new workflow type.")


def explain_nondeterminism(message: str) -> str:
    """A learner-readable sentence for what Temporal reported during replay."""
    mismatch = re.search(r"type of scheduled event '(\w+)' does not match activity type of activity command '(\w+)'",
                         message)
    if mismatch:
        return (f"The history says the workflow scheduled the activity '{mismatch[1]}' at this point; the changed "
                f"code asks for '{mismatch[2]}' instead. " + _FIX)
    restricted = re.search(r"Cannot access ([\w.]+?)(?:\.__call__)? from inside a workflow", message)
    if restricted:
        return (f"The changed code calls {restricted[1]}(), which gives a different answer every time it runs, so "
                "a replay could take another path. The sandbox refuses it: use workflow.now() or workflow.random(), "
                "or do it in an activity.")
    return "The changed code does not produce the commands the history recorded. " + _FIX


async def replay(history: WorkflowHistory, workflow_class: type) -> ReplayReport:
    """Replay a recorded history against `workflow_class` (its @workflow.defn name must match the history's),
    quietly: the SDK's own warnings for a failing replay are not printed."""
    replayer = Replayer(workflows=[workflow_class], runtime=_quiet_runtime(), data_converter=DATA_CONVERTER)
    with silenced():
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    failure = result.replay_failure
    if failure is None:
        return ReplayReport(workflow_class.__name__, True)
    quoted = re.search(r'message: "((?:[^"\\]|\\.)*)"', str(failure))
    said = quoted[1] if quoted else str(failure)
    kind = type(failure).__name__
    if "Cannot access" in said:
        kind = "RestrictedWorkflowAccessError"
    said = " ".join(said.split(". If this is")[0].split())
    return ReplayReport(workflow_class.__name__, False, kind, said if len(said) <= 200 else said[:197] + "...",
                        explain_nondeterminism(said))


_runtime = None


def _quiet_runtime() -> Any:
    """A Temporal runtime whose core logs only errors: a failing replay's warnings would flood a notebook."""
    global _runtime
    if _runtime is None:
        from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

        _runtime = Runtime(telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))))
    return _runtime
