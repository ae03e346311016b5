"""Check helpers for the exercises (`exercises/`, `solutions/`): each prints PASS or NOT YET with a hint.

A check runs the learner's code for real, against the lab's Temporal server, on a task queue of its own
(so it never mixes with the notebook's worker). It never ends in a bare traceback: whatever the learner's
code raises, or a workflow that never answers, becomes a "NOT YET" line that says what happened and what to
try. What a criterion proves, it reads from the event history the server recorded (which activities were
scheduled, with which input, on which attempt, after which signal), not from what the learner's code says
about itself; the numbers a check uses (turns, keywords, timeouts) are the checker's, never the module's.

An untouched exercise never shows PASS. A criterion that only guards what already worked before the
learner's change (exercise 4's teammate code already moderates new chats) says so: KEPT, not PASS. The lines
have one fixed shape, which `python -m durable_course.exercises check FOLDER` reads back:

    PASS     [ex1] convert_units refuses bad input with ToolInputError
    NOT YET  [ex1] the agent calls convert_units for 'Please convert 10 km to miles.'
             the agent answered without calling convert_units: "Sorry, I didn't understand that. ..."
             hint: give teach_offline_model a trigger whose named groups are value, from_unit and to_unit
    KEPT     [ex4] new chats still run the moderate step first (this worked before your change: keep it so)

Learner modules (workflow code must live in a module, not in a cell) are written with `%%writefile
my_code/NAME.py` after `prepare_workspace()`, and imported with `load_module("NAME")`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import re
import sys
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Awaitable, Callable

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ApplicationErrorCategory

with workflow.unsafe.imports_passed_through():
    from temporalio.api.enums.v1 import RetryState
    from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
    from temporalio.service import RPCError
    from temporalio.worker import Worker

    from durable_agent.activities import Plan, PlanInput, ToolCall, ToolInput, ToolResult
    from durable_agent.session import ChatSession
    from durable_agent.tools import TOOLS, ToolInputError
    from durable_agent.workflow import AgentReply, ChatInput, DurableAgentWorkflow

from .events import Activity, Event, count, decode
from .events import activities as recorded_activities
from .events import fetch as fetch_history
from .events import read as read_events
from .events import replay as replay_history

WORKSPACE = "my_code"
CHECK_TIMEOUT = 60.0  # seconds a check waits for one answer before reporting "not yet"
RESULT_LINE = re.compile(r"^(PASS|NOT YET|KEPT) +\[(ex\d+)\] (.*)$")
GUARD_NOTE = " (this worked before your change: keep it so)"


@dataclass
class CheckResult:
    exercise: str
    title: str
    passed: bool
    problem: str = ""
    hint: str = ""
    guard: bool = False  # the criterion was met before the learner's change; it checks nothing is broken

    @property
    def status(self) -> str:
        return "NOT YET" if not self.passed else "KEPT" if self.guard else "PASS"

    def report(self) -> str:
        title = self.title + (GUARD_NOTE if self.guard else "")
        if self.passed:
            return f"{self.status:<8} [{self.exercise}] {title}"
        lines = [f"NOT YET  [{self.exercise}] {title}", f"         {self.problem}"]
        if self.hint:
            lines.append(f"         hint: {self.hint}")
        return "\n".join(lines)


RESULTS: list[CheckResult] = []  # every check run in this process, in order


class NotYet(Exception):
    """Raised inside a check: the learner's code ran, and did not do what the exercise asks."""


async def criterion(exercise: str, title: str, hint: str, test: Callable[[], Awaitable[None]],
                    guard: bool = False) -> CheckResult:
    """Run one criterion: `test()` returns when it is met, or raises NotYet (or anything else) when not.
    `guard=True`: the criterion already held before the learner's change; met, it reports KEPT, not PASS."""
    try:
        await asyncio.wait_for(test(), CHECK_TIMEOUT)
        result = CheckResult(exercise, title, True, guard=guard)
    except NotYet as err:
        result = CheckResult(exercise, title, False, str(err), hint, guard)
    except asyncio.TimeoutError:
        result = CheckResult(exercise, title, False, f"no answer within {CHECK_TIMEOUT:.0f} s", hint, guard)
    except Exception as err:  # the learner's code raised: say what, in one line
        result = CheckResult(exercise, title, False, f"your code raised {describe_error(err)}", hint, guard)
    RESULTS.append(result)
    print(result.report(), flush=True)
    return result


def describe_error(err: BaseException) -> str:
    if isinstance(err, ApplicationError):
        return f"{err.type or type(err).__name__}: {err.message}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


# --- the learner's modules ---------------------------------------------------------------------------------


def prepare_workspace(folder: str = WORKSPACE) -> None:
    """Create the folder `%%writefile` writes learner modules into, and make its modules importable.

    Bytecode caching is switched off: a module rewritten within the same second must never be served stale.
    """
    path = Path(folder)
    path.mkdir(exist_ok=True)
    sys.dont_write_bytecode = True
    if str(path.resolve()) not in sys.path:
        sys.path.insert(0, str(path.resolve()))
    importlib.invalidate_caches()


def load_module(name: str) -> ModuleType:
    """Import (or re-import, after a `%%writefile`) a learner module from the workspace."""
    importlib.invalidate_caches()
    if name in sys.modules:
        return importlib.reload(sys.modules[name])
    return importlib.import_module(name)


# --- shared plumbing ----------------------------------------------------------------------------------------


def _queue() -> str:
    return f"check-{uuid.uuid4().hex[:8]}"


async def _with_worker(client: Client, workflows: list[type], body: Callable[[str], Awaitable[None]]) -> None:
    """Run `body(task_queue)` while a worker for `workflows` (and the agent's activities) polls that queue."""
    from durable_agent.worker import create_worker

    queue = _queue()
    worker = create_worker(client, task_queue=queue, workflows=workflows)
    async with worker:
        await body(queue)


async def _events(handle: WorkflowHandle) -> list[Event]:
    return read_events(await fetch_history(handle))


def _decode(client: Client, payloads: list[Any], type_: type) -> Any:
    return decode(payloads, type_, client.data_converter)


def _tool_calls(client: Client, events: list[Any]) -> list[tuple[Activity, ToolInput]]:
    """Every execute_tool activity the workflow scheduled, with the tool call it asked for."""
    return [(a, _decode(client, a.input, ToolInput)) for a in recorded_activities(events) if a.type == "execute_tool"]


def _model_ended_the_chat(client: Client, events: list[Any]) -> bool:
    """Whether any model call answered with end_chat (the model's goodbye rule), from the recorded results."""
    return any(_decode(client, a.result, Plan).end_chat for a in recorded_activities(events)
               if a.type == "plan_next_action" and a.outcome == "completed")


async def _task_failure(handle: WorkflowHandle) -> str | None:
    """The last workflow-task failure (a bug in workflow code makes the task fail and retry), if any."""
    message = None
    for event in await _events(handle):
        if event.kind == "WorkflowTaskFailed":
            message = event.details.failure.message
    return message.splitlines()[0] if message else None


STUCK_TOOL_FAILURES = 3  # a tool that failed this often is not waited out: Temporal retries it for minutes
STUCK_POLL_SECONDS = 0.5


async def _send(chat: ChatSession, text: str, seconds: float = 30.0) -> AgentReply:
    """Send a message; if no reply comes, say why, as the server recorded it: the activity that keeps failing,
    with its last error, or else a failing workflow task. Nothing goes to stderr meanwhile.

    A tool that raises is retried for ten minutes (the workflow's policy: time to fix it while the chat waits), so
    once a tool call has failed `STUCK_TOOL_FAILURES` times the check says so then, not after `seconds`. The
    model call is left to its own five attempts: a model outage ends in a reply."""
    task = asyncio.ensure_future(chat.send(text))
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        done, _ = await asyncio.wait({task}, timeout=min(STUCK_POLL_SECONDS, seconds))
        if done:
            return task.result()
        failing = [p for p in await chat.pending_activities() if p.last_error]
        stuck = any(p.activity_type != "plan_next_action" and p.failed_attempts >= STUCK_TOOL_FAILURES
                    for p in failing)
        if stuck or asyncio.get_running_loop().time() >= deadline:
            break
    task.cancel()
    if failing:
        activity_ = max(failing, key=lambda p: p.attempt)
        raise NotYet(f"no reply to {text!r}: {activity_.activity_type} failed {activity_.failed_attempts} "
                     f"times, last with {activity_.last_error}")
    failure = await _task_failure(chat.handle)
    raise NotYet(f"no reply to {text!r}" + (f": the workflow task fails with {failure}" if failure else ""))


async def _result(handle: WorkflowHandle, seconds: float = 20.0) -> Any:
    try:
        return await asyncio.wait_for(handle.result(), seconds)
    except asyncio.TimeoutError:
        raise NotYet("the workflow is still running") from None


async def replay(history: Any, workflow_class: type) -> str | None:
    """Replay a recorded history with `workflow_class`; None if it replays cleanly, else the error."""
    return (await replay_history(history, workflow_class)).error


async def show_replay(history: Any, workflow_class: type) -> None:
    """Print whether `workflow_class` can take over a chat recorded in `history`."""
    error = await replay(history, workflow_class)
    print("replay OK" if error is None else f"replay FAILED: {error}")


# --- exercise 1: a new tool ---------------------------------------------------------------------------------


def _number(text: str) -> float:
    match = re.search(r"-?\d+(\.\d+)?", text)
    if not match:
        raise NotYet(f"the result {text!r} contains no number")
    return float(match.group())


def _is_number(text: str | None, expected: float) -> bool:
    try:
        return float(text or "") == expected
    except ValueError:
        return False


async def check_new_tool(lab: Any, name: str = "convert_units") -> None:
    """Exercise 1: the tool converts correctly, refuses bad input clearly, and the agent calls it."""

    async def converts() -> None:
        if name not in TOOLS:
            raise NotYet(f"no tool named {name!r} is registered (tools: {', '.join(sorted(TOOLS))})")
        fn = TOOLS[name].fn
        for args, expected in ((("10", "km", "miles"), 6.2137), (("100", "celsius", "fahrenheit"), 212.0),
                               (("5", "kg", "lb"), 11.0231), (("2", "miles", "km"), 3.21869)):
            got = fn(*args)
            if not isinstance(got, str):
                raise NotYet(f"{name}{args} returned a {type(got).__name__}; a tool returns a str")
            if abs(_number(got) - expected) > 0.01:
                raise NotYet(f"{name}{args} returned {got!r}; expected about {expected:g}")

    async def refuses() -> None:
        fn = TOOLS[name].fn if name in TOOLS else None
        if fn is None:
            raise NotYet(f"no tool named {name!r} is registered")
        for args in (("ten", "km", "miles"), ("5", "parsecs", "km"), ("5", "km", "kg")):
            try:
                got = fn(*args)
            except ToolInputError:
                continue
            raise NotYet(f"{name}{args} returned {got!r} instead of raising ToolInputError")

    async def agent_uses_it() -> None:
        async def body(queue: str) -> None:
            handle = await lab.client.start_workflow("DurableAgentWorkflow", ChatInput(), id=f"check-{uuid.uuid4()}",
                                                     task_queue=queue)
            chat = ChatSession(handle)
            reply = await _send(chat, "Please convert 10 km to miles.")
            await chat.end()
            # What ran, from the history: an execute_tool activity for the tool, with the message's numbers.
            calls = [(a, t.call) for a, t in _tool_calls(lab.client, await _events(handle)) if t.call.name == name]
            if not calls:
                raise NotYet(f"the agent answered without calling {name}: {reply.text[:80]!r}")
            activity_, call = calls[0]
            arguments = {k: str(v).strip().lower() for k, v in call.arguments.items()}
            if not (_is_number(arguments.get("value"), 10.0) and arguments.get("from_unit") == "km"
                    and arguments.get("to_unit") in ("mile", "miles")):
                raise NotYet(f"{name} was called with {call.arguments}; expected value='10', from_unit='km', "
                             "to_unit='miles'")
            result = _decode(lab.client, activity_.result, ToolResult) if activity_.outcome == "completed" else None
            if result is None or not result.ok or "6.21" not in result.output:
                raise NotYet(f"the {name} activity did not return 6.21...: "
                             f"{result.output if result else activity_.outcome!r}")
            if "6.21" not in reply.text:
                raise NotYet(f"the agent called {name} but its answer does not say 6.21...: {reply.text!r}")

        await _with_worker(lab.client, [DurableAgentWorkflow], body)

    await criterion("ex1", f"{name} converts km/miles, kg/lb and celsius/fahrenheit",
                    "parse the value with float(), convert to a base unit, then to the target unit", converts)
    await criterion("ex1", f"{name} refuses bad input with ToolInputError",
                    "raise ToolInputError('...') for a value that is not a number or an unknown unit pair",
                    refuses)
    await criterion("ex1", f"the agent calls {name} for 'Please convert 10 km to miles.'",
                    "give teach_offline_model a trigger whose named groups are value, from_unit and to_unit",
                    agent_uses_it)


# --- exercise 2: a retry policy for a flaky model API ------------------------------------------------------

TIME_BUDGET = timedelta(seconds=5)


@dataclass
class RetrySpec:
    """An activity's timeouts and retry policy, in seconds, so it can travel as workflow input."""

    start_to_close: float | None
    schedule_to_close: float | None
    initial_interval: float
    backoff_coefficient: float
    maximum_interval: float | None
    maximum_attempts: int
    non_retryable_error_types: list[str] = field(default_factory=list)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "RetrySpec":
        allowed = {"start_to_close_timeout", "schedule_to_close_timeout", "retry_policy", "heartbeat_timeout"}
        unknown = set(options) - allowed
        if unknown:
            raise NotYet(f"unknown option(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(allowed))}")
        policy = options.get("retry_policy") or RetryPolicy()
        if not isinstance(policy, RetryPolicy):
            raise NotYet(f"retry_policy is a {type(policy).__name__}, not a temporalio.common.RetryPolicy")

        def seconds(value: Any) -> float | None:
            return value.total_seconds() if isinstance(value, timedelta) else None

        return cls(seconds(options.get("start_to_close_timeout")), seconds(options.get("schedule_to_close_timeout")),
                   policy.initial_interval.total_seconds(), policy.backoff_coefficient,
                   seconds(policy.maximum_interval), policy.maximum_attempts,
                   list(policy.non_retryable_error_types or []))

    def options(self) -> dict[str, Any]:
        def delta(value: float | None) -> timedelta | None:
            return timedelta(seconds=value) if value is not None else None

        return dict(
            start_to_close_timeout=delta(self.start_to_close),
            schedule_to_close_timeout=delta(self.schedule_to_close),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=self.initial_interval),
                backoff_coefficient=self.backoff_coefficient,
                maximum_interval=delta(self.maximum_interval),
                maximum_attempts=self.maximum_attempts,
                non_retryable_error_types=self.non_retryable_error_types,
            ),
        )


@dataclass
class FlakyCall:
    failures: int  # the first `failures` attempts fail
    error_type: str  # as a LiteLLM error would be named, e.g. "ServiceUnavailableError"
    spec: RetrySpec


@dataclass
class FlakyOutcome:
    answered: bool
    attempts: int
    error: str = ""


@activity.defn
async def flaky_model_call(call: FlakyCall) -> int:
    """A stand-in for the model API: fails its first `call.failures` attempts, then answers."""
    attempt = activity.info().attempt
    if attempt <= call.failures:
        raise ApplicationError(f"simulated {call.error_type} on attempt {attempt}", attempt, type=call.error_type,
                               category=ApplicationErrorCategory.BENIGN)  # expected: no warning in the log
    return attempt


@workflow.defn
class FlakyModelWorkflow:
    """Calls the flaky model with the learner's timeouts and retry policy, and reports what happened."""

    @workflow.run
    async def run(self, call: FlakyCall) -> FlakyOutcome:
        try:
            attempts = await workflow.execute_activity(flaky_model_call, call, **call.spec.options())
            return FlakyOutcome(True, attempts)
        except ActivityError as err:
            cause = err.cause
            attempts = int(cause.details[0]) if isinstance(cause, ApplicationError) and cause.details else 0
            return FlakyOutcome(False, attempts, describe_error(cause or err))


async def check_retry_policy(lab: Any, options: dict[str, Any], *, budget: float = TIME_BUDGET.total_seconds()) -> None:
    """Exercise 2: the options survive a flaky API within the time budget and give up on a rejected key.
    Each criterion runs the stand-in model call with the options and reads the activity's history.
    The budget is bound when this module is (re)loaded (a default argument), so code run later cannot move it."""

    async def run_flaky(failures: int, error_type: str) -> Activity:
        spec = RetrySpec.from_options(options)
        if spec.start_to_close is None and spec.schedule_to_close is None:
            raise NotYet("the options have no timeout at all; Temporal needs start_to_close_timeout")
        queue = _queue()
        async with Worker(lab.client, task_queue=queue, workflows=[FlakyModelWorkflow],
                          activities=[flaky_model_call]):
            handle = await lab.client.start_workflow(
                FlakyModelWorkflow.run, FlakyCall(failures, error_type, spec), id=f"check-{uuid.uuid4()}",
                task_queue=queue, execution_timeout=timedelta(seconds=20))
            try:
                await handle.result()
            except WorkflowFailureError:
                raise NotYet("the call was still being retried after 20 s") from None
            recorded = [a for a in recorded_activities(await _events(handle)) if a.type == "flaky_model_call"]
        if len(recorded) != 1:
            raise NotYet(f"expected one model call in the history, found {len(recorded)}")
        return recorded[0]

    async def has_budget() -> None:
        call = await run_flaky(0, "ServiceUnavailableError")
        if RetrySpec.from_options(options).schedule_to_close is None:
            raise NotYet("there is no schedule_to_close_timeout: with the API down for good, the turn would "
                         "retry for ever instead of telling the user")
        # What the server enforces, as it recorded it when the call was scheduled.
        if call.schedule_to_close is None or call.schedule_to_close > budget:
            limit = f"{call.schedule_to_close:g} s" if call.schedule_to_close else "no limit"
            raise NotYet(f"the server holds the call to {limit} in all (schedule_to_close_timeout); "
                         f"the budget is {budget:g} s")

    async def survives() -> None:
        call = await run_flaky(3, "ServiceUnavailableError")
        if call.outcome != "completed":
            raise NotYet(f"the call gave up ({call.outcome} on attempt {call.attempt}) before the API came back "
                         "on attempt 4")
        if call.attempt != 4:
            raise NotYet(f"the history says the call answered on attempt {call.attempt}, not 4")

    async def fails_fast() -> None:
        call = await run_flaky(1000, "AuthenticationError")
        if call.outcome != "failed":
            raise NotYet(f"the call with a rejected key ended {call.outcome}, not failed")
        if call.attempt != 1:
            raise NotYet(f"a rejected API key was tried {call.attempt} times; retrying cannot fix it")
        if call.retry_state != RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE:
            why = RetryState.Name(call.retry_state or 0).removeprefix("RETRY_STATE_").replace("_", " ").lower()
            raise NotYet(f"the server stopped after one attempt because of '{why}', not because the error is "
                         "non-retryable: a flaky API would get no retries either")

    await criterion("ex2", f"the call has a time budget of at most {budget:g} s",
                    "set schedule_to_close_timeout: the total time for all attempts", has_budget)
    await criterion("ex2", "a flaky API (3 failures, then an answer) is survived within the budget",
                    "retry soon and often enough: a smaller initial_interval, and no low maximum_attempts",
                    survives)
    await criterion("ex2", "a rejected API key (AuthenticationError) fails at once, not after retries",
                    "list it in RetryPolicy(non_retryable_error_types=[...])", fails_fast)


# --- exercise 3: ending the chat ---------------------------------------------------------------------------


async def _start_chat(lab: Any, workflow_class: type, queue: str, input: Any = None) -> ChatSession:
    handle = await lab.client.start_workflow(workflow_class.run, input if input is not None else ChatInput(),
                                             id=f"check-{uuid.uuid4()}", task_queue=queue)
    return ChatSession(handle)


MAX_TURNS, KEYWORD = 3, "stop"  # exercise 3, as the notebook states it: the checker's numbers, not the module's


async def _ended_by_the_workflow(lab: Any, handle: WorkflowHandle, turns: int) -> Any:
    """The history of a chat that the workflow itself ended after `turns` turns: completed, with exactly that
    many messages answered, no end_chat signal, and no model call that asked to end (the offline model's
    goodbye rule). Raises NotYet saying which is missing."""
    await _result(handle)
    history = await handle.fetch_history()
    events = read_events(history)
    answered = count(events, "WorkflowExecutionUpdateCompleted")
    if answered != turns:
        raise NotYet(f"the history shows {answered} messages answered before the chat ended, not {turns}")
    if count(events, "WorkflowExecutionSignaled"):
        raise NotYet("the chat was ended by a signal, not by your workflow")
    if _model_ended_the_chat(lab.client, events):
        raise NotYet("the model ended the chat (its goodbye rule), not your workflow")
    return history


async def check_chat_ending(lab: Any, workflow_class: type, *, max_turns: int = MAX_TURNS,
                            keyword: str = KEYWORD) -> None:
    """Exercise 3: the chat ends after `max_turns` turns or on the word `keyword`, and replays deterministically.
    Both are bound when this module is (re)loaded, so neither the learner's module nor code run later moves them."""
    histories: list[Any] = []

    async def after_turns() -> None:
        async def body(queue: str) -> None:
            chat = await _start_chat(lab, workflow_class, queue)
            for turn in range(1, max_turns + 1):
                reply = await _send(chat, f"What is {turn} + {turn}?")
                if reply.chat_ended and turn < max_turns:
                    raise NotYet(f"the chat ended after {turn} turn(s), before {max_turns}")
            if not reply.chat_ended:
                raise NotYet(f"after {max_turns} turns the reply's chat_ended is still False")
            histories.append(await _ended_by_the_workflow(lab, chat.handle, max_turns))

        await _with_worker(lab.client, [workflow_class], body)

    async def on_keyword() -> None:
        async def body(queue: str) -> None:
            chat = await _start_chat(lab, workflow_class, queue)
            first = await _send(chat, "What is 2 + 2?")
            if first.chat_ended:
                raise NotYet("the chat ended after 'What is 2 + 2?', which does not contain the word")
            reply = await _send(chat, f"Please {keyword} now")
            if not reply.chat_ended:
                raise NotYet(f"the reply to 'Please {keyword} now' did not end the chat")
            histories.append(await _ended_by_the_workflow(lab, chat.handle, 2))

        await _with_worker(lab.client, [workflow_class], body)

    async def replays() -> None:
        if not histories:
            raise NotYet("no finished chat to replay yet (the checks above must pass first)")
        for history in histories:
            error = await replay(history, workflow_class)
            if error:
                raise NotYet(f"replaying a finished chat fails: {error}")

    await criterion("ex3", f"the chat ends by itself after {max_turns} turns",
                    "in after_turn(text, reply), compare self.turns with MAX_TURNS and set "
                    "reply.chat_ended = True", after_turns)
    await criterion("ex3", f"a message containing the word {keyword!r} ends the chat",
                    "look at the message text, which is part of the history (never at the clock)", on_keyword)
    await criterion("ex3", "the ending is deterministic: finished chats replay cleanly",
                    "decide only from the workflow's own state (turns, messages); no time, random or I/O",
                    replays)


# --- exercise 4: a determinism bug -------------------------------------------------------------------------


async def check_safe_upgrade(lab: Any, old_history: Any, workflow_class: type, step: str = "moderate") -> None:
    """Exercise 4: chats recorded on the old code replay with the new code, and new chats get the new step.

    The teammate's code already gives new chats the step, and they replay: those two criteria are guards
    (KEPT when met), so an untouched notebook shows no PASS; the fix itself is the first criterion."""
    new_histories: list[Any] = []

    async def old_chats_replay() -> None:
        error = await replay(old_history, workflow_class)
        if error:
            raise NotYet(f"a chat recorded before the upgrade no longer replays: {error}")

    async def new_chats_get_step() -> None:
        async def body(queue: str) -> None:
            handle = await lab.client.start_workflow("DurableAgentWorkflow", ChatInput(),
                                                     id=f"check-{uuid.uuid4()}", task_queue=queue)
            chat = ChatSession(handle)
            await _send(chat, "What is 2 + 2?")
            await chat.end()
            new_histories.append(await handle.fetch_history())
            recorded = recorded_activities(new_histories[-1])
            first = recorded[0] if recorded else None
            tool = _decode(lab.client, first.input, ToolInput).call.name if first and first.type == "execute_tool" else ""
            if tool != step:
                raise NotYet(f"a new chat's first activity is {tool or (first.type if first else 'none')}, "
                             f"not the {step} step: keep the new step for new chats")

        await _with_worker(lab.client, [workflow_class], body)

    async def new_chats_replay() -> None:
        if not new_histories:
            raise NotYet("no new chat to replay yet (the check above must run first)")
        error = await replay(new_histories[0], workflow_class)
        if error:
            raise NotYet(f"a new chat does not replay: {error}")

    await criterion("ex4", "a chat recorded on the old code replays on the new code",
                    "guard the new step with workflow.patched('some-id'): old histories skip it", old_chats_replay)
    await criterion("ex4", f"new chats still run the {step} step first",
                    "do not delete the new step: wrap it in `if workflow.patched(...):`", new_chats_get_step,
                    guard=True)
    await criterion("ex4", "new chats still replay cleanly",
                    "the patch id must be the same string every time", new_chats_replay, guard=True)


# --- exercise 5: human approval ----------------------------------------------------------------------------


async def _first_task_done(handle: WorkflowHandle) -> list[Any]:
    """Wait until the workflow has finished its first workflow task (it has decided what to do first)."""
    while True:
        events = await _events(handle)
        if any(e.kind == "WorkflowTaskCompleted" for e in events):
            return events
        failure = await _task_failure(handle)
        if failure:
            raise NotYet(f"the workflow task fails: {failure}")
        await asyncio.sleep(0.05)


APPROVAL_WAIT_SECONDS = 1.0  # exercise 5's "nobody answers" request: the checker's timeout, not the module's


async def check_approval(lab: Any, module: ModuleType, tool_name: str = "delete_file", *,
                         approval_wait: float = APPROVAL_WAIT_SECONDS) -> None:
    """Exercise 5: the dangerous tool waits for an `approve` signal; yes runs it, no and silence do not.
    Whether the tool ran is read from the history (execute_tool activities), never from the outcome the
    learner's workflow returns."""

    async def start(queue: str, timeout_seconds: float = 60.0) -> WorkflowHandle:
        request = module.ToolRequest(tool_name, {"path": "/tmp/report.txt"}, timeout_seconds)
        return await lab.client.start_workflow(module.GuardedToolWorkflow.run, request, id=f"check-{uuid.uuid4()}",
                                               task_queue=queue)

    def tool_runs(events: list[Any]) -> list[Activity]:
        return [a for a, tool in _tool_calls(lab.client, events) if tool.call.name == tool_name]

    async def decide(handle: WorkflowHandle, approved: bool) -> None:
        try:
            await handle.signal("approve", module.Approval(approved, "teacher"))
        except RPCError:
            pass  # the workflow finished without waiting for anyone: its history below says what it did

    def signalled_at(events: list[Any]) -> int | None:
        return next((e.id for e in events if e.kind == "WorkflowExecutionSignaled"
                     and e.details.signal_name == "approve"), None)

    async def waits() -> None:
        async def body(queue: str) -> None:
            handle = await start(queue)
            if tool_runs(await _first_task_done(handle)):
                raise NotYet(f"{tool_name} was scheduled before anyone approved it")
            await decide(handle, True)
            await _result(handle)
            events = await _events(handle)
            runs, signal = tool_runs(events), signalled_at(events)
            if signal is None:
                raise NotYet("the approve signal never reached the workflow: it had finished already")
            if len(runs) != 1:
                raise NotYet(f"after approval the history shows {len(runs)} {tool_name} activities, not exactly one")
            if runs[0].scheduled_id < signal:
                raise NotYet(f"{tool_name} was scheduled before the approve signal arrived")
            result = _decode(lab.client, runs[0].result, ToolResult) if runs[0].outcome == "completed" else None
            if result is None or "deleted" not in result.output:
                raise NotYet(f"the {tool_name} activity did not complete: {runs[0].outcome}")

        await _with_worker(lab.client, [module.GuardedToolWorkflow], body)

    async def rejected() -> None:
        async def body(queue: str) -> None:
            handle = await start(queue)
            await _first_task_done(handle)
            await decide(handle, False)
            outcome = await _result(handle)
            events = await _events(handle)
            if tool_runs(events):
                raise NotYet("the tool ran although the reviewer said no")
            if signalled_at(events) is None:
                raise NotYet("the workflow finished without waiting for the reviewer's answer")
            if "teacher" not in str(getattr(outcome, "output", outcome)):
                raise NotYet(f"the outcome does not say who rejected it: {outcome!r}")

        await _with_worker(lab.client, [module.GuardedToolWorkflow], body)

    async def silence() -> None:
        async def body(queue: str) -> None:
            handle = await start(queue, timeout_seconds=approval_wait)
            await _result(handle, seconds=20)
            events = await _events(handle)
            if tool_runs(events):
                raise NotYet("the tool ran although nobody approved it")
            timers = [e.details.start_to_fire_timeout.ToTimedelta().total_seconds()
                      for e in events if e.kind == "TimerStarted"]
            fired = count(events, "TimerFired")
            if approval_wait not in timers or not fired:
                raise NotYet(f"the workflow did not wait out the request's {approval_wait:g} s: the history "
                             "has no timer of that length that fired")

        await _with_worker(lab.client, [module.GuardedToolWorkflow], body)

    await criterion("ex5", f"{tool_name} waits for approval, and runs once approved",
                    "before the activity: await workflow.wait_condition(lambda: self._decision is not None, ...)",
                    waits)
    await criterion("ex5", "a rejection stops the tool and names the reviewer",
                    "an @workflow.signal named approve stores the Approval; check .approved before running",
                    rejected)
    await criterion("ex5", "no answer within the request's timeout: the tool does not run",
                    "wait_condition(..., timeout=...) raises asyncio.TimeoutError when time is up", silence)


# --- exercise 6 (stretch): continue-as-new with a carried summary --------------------------------------------


TURNS_PER_RUN = 3  # exercise 6: the checker's number, not the module's


async def check_continue_as_new(lab: Any, workflow_class: type, *, turns_per_run: int = TURNS_PER_RUN) -> None:
    """Exercise 6: after `turns_per_run` turns the chat continues as new, carrying a summary, same chat id.
    Read from the histories: the first run ends in continue-as-new, and the new run's input is a summary."""

    async def continues() -> None:
        async def body(queue: str) -> None:
            chat = await _start_chat(lab, workflow_class, queue)
            first_run = chat.handle.result_run_id
            latest = lab.client.get_workflow_handle(chat.workflow_id)  # no run id: always the latest run
            session = ChatSession(latest)
            for turn in range(1, turns_per_run + 1):
                await _send(session, f"What is {turn} * 10?")
            if not await _new_run(latest, first_run):
                raise NotYet(f"after {turns_per_run} turns the chat is still on its first run")
            first_events = await _events(lab.client.get_workflow_handle(chat.workflow_id, run_id=first_run))
            if count(first_events, "WorkflowExecutionCompleted"):
                raise NotYet("the first run completed instead of continuing as new")
            answered = count(first_events, "WorkflowExecutionUpdateCompleted")
            if not count(first_events, "WorkflowExecutionContinuedAsNew"):
                raise NotYet("the first run ended without continuing as new")
            if answered != turns_per_run:
                raise NotYet(f"the first run answered {answered} messages before continuing as new, "
                             f"not {turns_per_run}")
            reply = await _send(session, "What is 4 * 10?")
            if "40" not in reply.text:
                raise NotYet(f"the new run did not answer the next message properly: {reply.text!r}")
            new_events = await _events(latest)
            started = new_events[0].details
            carried: ChatInput = _decode(lab.client, list(started.input.payloads), ChatInput)
            text = " ".join(m.content for m in carried.history)
            if "What is 1 * 10" in text:
                raise NotYet("the new run still carries every old message; carry a short summary instead")
            if "summary" not in text.lower() or "30" not in text:
                raise NotYet("the new run carries no summary of the earlier turns (e.g. 'Summary: ... 30 ...')")
            await session.end()

        await _with_worker(lab.client, [workflow_class], body)

    await criterion("ex6", f"after {turns_per_run} turns the chat continues as new, carrying a summary",
                    "run_is_full(): True once self.turns_this_run reaches TURNS_PER_RUN; next_run_input(carried): "
                    "ChatInput(carried.max_steps_per_turn, history=[summarize(self.messages)])", continues)


async def _new_run(handle: WorkflowHandle, first_run: str | None, seconds: float = 10.0) -> bool:
    """Wait (up to `seconds`) until the workflow id has a run other than `first_run`, ready for messages."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        description = await handle.describe()
        if description.run_id != first_run:
            return True
        await asyncio.sleep(0.05)
    return False


# --- exercise 9: a framework's tool as an activity ---------------------------------------------------------

FRAMEWORK_MODEL_ACTIVITY = "invoke_model_activity"


async def check_framework_tool(lab: Any, module: ModuleType, city: str = "Lisbon") -> None:
    """Exercise 9: the OpenAI Agents SDK agent's weather tool runs as an activity, with a timeout that notices a
    dead worker within 5 s, and the agent answers with the tool's report. Read from the event history of one
    turn, run on a worker of the check's own (with Temporal's OpenAIAgentsPlugin and the course's model)."""
    from durable_course.frameworks import tools as framework_tools
    from durable_course.frameworks import worker as frameworks

    question = f"What's the weather in {city}?"
    expected = framework_tools.weather(city)
    turn: dict[str, Any] = {}

    async def run_turn() -> dict[str, Any]:
        if not turn:
            workflow_class = getattr(module, "WeatherAgentWorkflow")
            client = await frameworks.connect("openai-agents", lab.temporal.address)
            await asyncio.to_thread(frameworks.framework("openai-agents").prepare)  # imports, before any heartbeat
            queue = _queue()
            worker = Worker(client, task_queue=queue, workflows=[workflow_class],
                            activities=list(getattr(module, "ACTIVITIES", [])), build_id="ex9-check")
            async with worker:
                handle = await lab.client.start_workflow(workflow_class.run, question, id=queue, task_queue=queue)
                turn["answer"] = await _result(handle, 45.0)
                turn["events"] = await _events(handle)
                turn["activities"] = recorded_activities(turn["events"])
        return turn

    def tool_activities() -> list[Activity]:
        return [a for a in turn["activities"] if a.type != FRAMEWORK_MODEL_ACTIVITY]

    async def runs_as_an_activity() -> None:
        await run_turn()
        found = tool_activities()
        if not found:
            kinds = ", ".join(a.type for a in turn["activities"]) or "none"
            raise NotYet(f"the history has no activity for the weather tool (activities: {kinds}): the tool ran "
                         "inside the workflow, where nothing records, times or retries it")
        values = [lab.client.data_converter.payload_converter.from_payloads(a.input) for a in found]
        if not any(city in str(value) for value in values):
            raise NotYet(f"no tool activity was asked about {city!r}: {values!r}")

    async def notices_a_dead_worker() -> None:
        await run_turn()
        found = tool_activities()
        if not found:
            raise NotYet("there is no activity for the weather tool yet, so nothing notices a dead worker")
        scheduled = next(e.details for e in turn["events"]
                         if e.id == found[0].scheduled_id)  # the options as the server enforces them
        limits = {name: getattr(scheduled, name).ToTimedelta().total_seconds()
                  for name in ("heartbeat_timeout", "start_to_close_timeout") if scheduled.HasField(name)}
        limits = {name: seconds for name, seconds in limits.items() if seconds > 0}
        if not limits or min(limits.values()) > 5:
            said = ", ".join(f"{name} = {seconds:g} s" for name, seconds in limits.items())
            raise NotYet(f"{said or 'no heartbeat or start-to-close timeout'}: a worker killed mid-call is noticed "
                         f"only after {f'{min(limits.values()):g} s' if limits else 'the schedule-to-close timeout'}")

    async def answers_with_the_report() -> None:
        await run_turn()
        if expected not in str(turn["answer"]):
            raise NotYet(f"the agent answered {str(turn['answer'])!r}; expected it to report {expected!r}")

    await criterion("ex9", "the weather tool runs as an activity, recorded in the history",
                    "wrap an @activity.defn function with activity_as_tool(...), and list it in ACTIVITIES",
                    runs_as_an_activity)
    await criterion("ex9", "a worker that dies mid-call is noticed within 5 s",
                    "give activity_as_tool a heartbeat_timeout (or a start_to_close_timeout) of at most 5 s",
                    notices_a_dead_worker)
    await criterion("ex9", f"the agent answers with the weather report for {city}",
                    "a sync @function_tool runs in a thread, which a workflow may not start: the SDK hands the "
                    "model an error instead; an activity runs on the worker, where threads are fine",
                    answers_with_the_report)
# --- exercise 10: testing a durable agent --------------------------------------------------------------------

DAY_SECONDS = 24 * 3600  # exercise 10's approval timeout: the checker's, not the module's
APPROVE_AFTER_HOURS = 23


def _served_name(function: Any) -> str | None:
    definition = getattr(function, "__temporal_activity_definition", None)
    return getattr(definition, "name", None)


async def check_testing(lab: Any, module: ModuleType) -> None:
    """Exercise 10: a fake tool served under the real activity's name; a day-long approval tested on the
    time-skipping server (read from the history's own clock); a history saved as JSON that replays. The check
    starts its own time-skipping server; what happened is read from the event history it recorded."""
    from durable_agent.approval import ApprovalChatInput, ApprovalChatWorkflow, ApprovalSession
    from durable_course.testing import FakeModel, start_time_skipping

    env = await start_time_skipping()
    handles: list[WorkflowHandle] = []

    async def approval_chat(queue: str, needs_approval: list[str]) -> ApprovalSession:
        input = ApprovalChatInput(needs_approval=needs_approval, approval_timeout_seconds=DAY_SECONDS)
        handle = await env.client.start_workflow(ApprovalChatWorkflow.run, input, id=f"check-{uuid.uuid4()}",
                                                 task_queue=queue)
        handles.append(handle)
        return ApprovalSession(handle)

    async def with_doubles(body: Callable[[str], Awaitable[None]]) -> None:
        name = _served_name(getattr(module, "fake_execute_tool", None))
        if name is None:
            raise NotYet("fake_execute_tool is not an activity (decorate it with @activity.defn(...))")
        queue = _queue()
        async with Worker(env.client, task_queue=queue, workflows=[ApprovalChatWorkflow],
                          activities=[FakeModel().activity(), module.fake_execute_tool]):
            await body(queue)

    def tool_runs(events: list[Any]) -> list[Activity]:
        return [a for a in recorded_activities(events) if a.type == "execute_tool"]

    async def fake_served() -> None:
        async def body(queue: str) -> None:
            chat = await approval_chat(queue, needs_approval=[])
            turn = asyncio.ensure_future(chat.send("What's the weather in Paris?"))
            done, _ = await asyncio.wait({turn}, timeout=5)
            events = await _events(chat.handle)
            runs = tool_runs(events)
            if not done:
                turn.cancel()
                name = _served_name(module.fake_execute_tool)
                if runs and runs[0].outcome == "pending":
                    raise NotYet(f"the workflow asked for the activity 'execute_tool', and nothing on the worker is "
                                 f"registered under that name (your function is registered as {name!r})")
                raise NotYet("no reply within 5 s")
            if len(runs) != 1 or runs[0].outcome != "completed":
                raise NotYet(f"the history shows {len(runs)} execute_tool activities, not one that completed")
            result = _decode(env.client, runs[0].result, ToolResult)
            if result.output not in turn.result().text:
                raise NotYet(f"the agent's reply does not carry the fake's output {result.output!r}")

        await with_doubles(body)

    async def a_day_in_a_second() -> None:
        async def body(queue: str) -> None:
            chat = await approval_chat(queue, needs_approval=["weather"])
            turn = asyncio.ensure_future(chat.send("What's the weather in Paris?"))
            try:
                await asyncio.wait_for(module.approve_after(env, chat, APPROVE_AFTER_HOURS), 20)
                await asyncio.wait({turn}, timeout=10)
            finally:
                turn.cancel()
            events = await _events(chat.handle)
            timer = next((e for e in events if e.kind == "TimerStarted"), None)
            decided = next((e for e in events if e.kind == "WorkflowExecutionUpdateAccepted"
                            and e.details.accepted_request.input.name == "decide"), None)
            if timer is None or decided is None:
                raise NotYet("the history shows no approval decision (the decide Update) while the agent waited")
            waited = decided.time - timer.time
            if waited < timedelta(hours=APPROVE_AFTER_HOURS):
                raise NotYet(f"the approval came {waited.total_seconds() / 3600:.1f} hours (server time) after the "
                             f"request, not {APPROVE_AFTER_HOURS}: the clock was not moved on")
            runs = [a for a in tool_runs(events) if a.scheduled_id > decided.id]
            if len(runs) != 1 or runs[0].outcome != "completed":
                raise NotYet("after the approval the history shows no completed execute_tool activity")

        await with_doubles(body)

    async def saved_history() -> None:
        if not handles:
            raise NotYet("no chat ran to save")
        path = Path(tempfile_folder()) / "saved.json"
        await module.save_history(handles[-1], path)
        if not path.is_file():
            raise NotYet("save_history wrote no file at the path it was given")
        from temporalio.client import WorkflowHistory

        try:
            history = WorkflowHistory.from_json(handles[-1].id, path.read_text())
        except Exception as err:
            raise NotYet(f"the file is not a history Temporal can read back: {describe_error(err)}") from None
        recorded = await handles[-1].fetch_history()
        if len(history.events) != len(recorded.events):
            raise NotYet(f"the file holds {len(history.events)} events; the server recorded {len(recorded.events)}")
        error = await replay(history, ApprovalChatWorkflow)
        if error:
            raise NotYet(f"the saved history does not replay: {error}")

    try:
        await criterion("ex10", "the fake tool is served as the agent's execute_tool activity",
                        'register it under the activity type the workflow asks for: @activity.defn(name="execute_tool")',
                        fake_served)
        await criterion("ex10", f"a {DAY_SECONDS // 3600}-hour approval, approved after {APPROVE_AFTER_HOURS} hours "
                        "of server time, runs the tool",
                        "await chat.wait_for_request(); await env.sleep(timedelta(hours=hours)); await chat.approve()",
                        a_day_in_a_second)
        await criterion("ex10", "a chat's history saved as JSON replays against the workflow",
                        "path.write_text((await handle.fetch_history()).to_json())", saved_history)
    finally:
        for handle in handles:
            with contextlib.suppress(Exception):
                await handle.terminate()
        await env.shutdown()


def tempfile_folder() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="ex10-")


# --- exercise 11: a streamed reply shown once ------------------------------------------------------------------


@dataclass
class _StreamScript:
    """What the streaming model double does on each call: (text to stream, tool call or None, fail attempt 1?)."""

    steps: list[tuple[str, Any, bool]]
    calls: int = 0


def _streaming_model(script: _StreamScript) -> Callable[..., Any]:
    """A model double under the real activity name that streams through the agent's own ReplyPublisher: the same
    stream, pieces and attempts a real model call produces. A step marked to fail streams half its text on
    attempt 1 and then fails, as a worker dying mid-stream would leave it."""
    from durable_agent.streaming import ReplyPublisher

    @activity.defn(name="plan_next_action")
    async def streaming_model(input: PlanInput) -> Plan:
        step = sum(1 for m in input.messages if m.role == "tool")  # model calls so far in this turn
        text, tool, fail_first = script.steps[min(step, len(script.steps) - 1)]
        words = re.findall(r"\S+\s*", text)
        cut = fail_first and activity.info().attempt == 1
        async with ReplyPublisher() as publish:
            for word in words[:len(words) // 2] if cut else words:
                publish(word)
        if cut:
            raise ApplicationError("the worker died mid-stream (simulated)")
        calls = [ToolCall(f"call_{step}", tool[0], tool[1])] if tool else []
        return Plan(tool_calls=calls, answer=text.strip(), model="streaming-double")

    return streaming_model


async def check_streaming(lab: Any, module: ModuleType) -> None:
    """Exercise 11: the learner's reader, fed the real pieces of a real stream (read back from the chat's workflow
    stream, in order), must end on the reply Temporal recorded, shown once."""
    from durable_agent.activities import AgentActivities
    from durable_agent.streaming import stream_reply
    from durable_course.streaming_lab import read_pieces
    from temporalio.contrib.workflow_streams import WorkflowStreamClient

    async def run(script: _StreamScript, question: str) -> tuple[str, str]:
        queue = _queue()
        async with Worker(lab.client, task_queue=queue, workflows=[DurableAgentWorkflow],
                          activities=[_streaming_model(script), AgentActivities().execute_tool]):
            handle = await lab.client.start_workflow(DurableAgentWorkflow.run, ChatInput(stream_replies=True),
                                                     id=f"check-{uuid.uuid4()}", task_queue=queue)
            chat = ChatSession(handle)
            start = await WorkflowStreamClient(handle).get_offset()
            reply = await _send(chat, question)
            pieces = await read_pieces(handle, start)
            await chat.end()
        reader = module.Reader()
        shown = ""
        for piece in pieces:
            shown = reader.add(piece)
        return shown, reply.text

    def once(shown: str, reply: str) -> None:
        if shown == reply:
            return
        first = reply.split()[0]
        if shown.count(first) > reply.count(first):
            raise NotYet(f"your reader shows {first!r} {shown.count(first)} times: {_short_text(shown)}")
        raise NotYet(f"your reader ends on {_short_text(shown)}, not on the recorded reply {_short_text(reply)}")

    async def retried() -> None:
        once(*await run(_StreamScript([("Paris is sunny today, says the streaming double.", None, True)]),
                        "Is it sunny in Paris?"))

    async def after_a_tool() -> None:
        script = _StreamScript([("Let me look that up. ", ("weather", {"city": "Paris"}), False),
                                ("Paris is as the weather tool says.", None, False)])
        once(*await run(script, "What's the weather in Paris?"))

    await criterion("ex11", "a model call retried mid-stream: your reader shows the reply once",
                    "start the text afresh when a piece comes from another (activity_id, attempt) than the last one",
                    retried)
    await criterion("ex11", "text streamed before a tool call gives way to the answer, as the recorded reply does",
                    "the answer comes from another model call (another activity_id): start afresh there too",
                    after_a_tool)


def _short_text(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
# --- exercise 7: an MCP tool that is safe to retry ---------------------------------------------------------

def _lose_first_reply() -> Any:
    """A worker interceptor for the check: the first attempt of each MCP tool call runs for real, then its
    reply is dropped, as if the worker had died just after the server acted. Temporal retries the call."""
    from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

    class Drop(ActivityInboundInterceptor):
        async def execute_activity(self, input: ExecuteActivityInput) -> Any:
            result = await self.next.execute_activity(input)
            info = activity.info()
            if info.activity_type == "call_mcp_tool" and info.attempt == 1:
                raise ApplicationError("the check dropped this reply (a simulated crash after the server acted)")
            return result

    class LoseFirstReply(Interceptor):
        def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
            return Drop(next)

    return LoseFirstReply()


def _items(path: Path, text: str) -> int:
    import json

    if not path.exists():
        return 0
    count_ = 0
    for line in path.read_text().splitlines():
        try:
            count_ += json.loads(line).get("text") == text
        except (ValueError, AttributeError):
            continue
    return count_


async def check_idempotent_mcp_tool(lab: Any, server_file: str, tool: str = "add_todo") -> None:
    """Exercise 7: the learner's MCP server's `add_todo` is called by the agent, takes an idempotency key, and
    a retried call (first reply lost, the call run again by Temporal) adds the item once. What was added is
    read from the server's own file, what ran from the event history."""
    import tempfile

    from durable_agent.logs import silenced
    from durable_agent.mcp_tools import McpAgentWorkflow, McpServer, mcp_plugin, start_mcp_chat
    from durable_agent.worker import create_worker

    script = Path(server_file).resolve()
    folder = Path(tempfile.mkdtemp(prefix="check-ex7-"))

    async def chat_with_server(body: Callable[[ChatSession, Path], Awaitable[None]], lose_reply: bool) -> None:
        queue, store = _queue(), folder / f"{uuid.uuid4().hex[:6]}.jsonl"
        interceptors = [_lose_first_reply()] if lose_reply else []
        worker = create_worker(lab.client, task_queue=queue, plugins=[mcp_plugin()], interceptors=interceptors)
        with silenced():  # the dropped reply is on purpose: no line about it
            async with worker:
                chat = await start_mcp_chat(lab.client, McpServer(sys.executable, [str(script), "--file", str(store)]),
                                            task_queue=queue)
                await body(chat, store)

    def calls(events: list[Event]) -> list[Activity]:
        return [a for a in recorded_activities(events) if a.type == "call_mcp_tool"]

    async def agent_calls_it() -> None:
        async def body(chat: ChatSession, store: Path) -> None:
            reply = await _send(chat, "Todo: water the plants", 45)
            if not calls(await _events(chat.handle)):
                raise NotYet(f"the agent answered without calling {tool} through the MCP server: {reply.text[:90]!r}")
            if _items(store, "water the plants") != 1:
                raise NotYet(f"the server's file holds {_items(store, 'water the plants')} items "
                             "'water the plants', not 1")

        await chat_with_server(body, lose_reply=False)

    async def takes_a_key() -> None:
        async def body(chat: ChatSession, store: Path) -> None:
            await _send(chat, "Hello", 45)
            listed = {t.name: t for t in await chat.handle.query(McpAgentWorkflow.mcp_tools)}
            if tool not in listed:
                raise NotYet(f"the server lists no tool {tool!r} (it lists: {', '.join(listed) or 'nothing'})")
            if not listed[tool].takes_key:
                raise NotYet(f"{tool} has no idempotency_key argument, so the agent cannot send a key "
                             f"(its arguments: {', '.join(listed[tool].parameters.get('properties') or {})})")

        await chat_with_server(body, lose_reply=False)

    async def retry_adds_once() -> None:
        async def body(chat: ChatSession, store: Path) -> None:
            await _send(chat, "Todo: pay the rent", 60)
            runs = calls(await _events(chat.handle))
            if not runs or runs[0].attempt < 2:
                raise NotYet(f"the call was not retried ({len(runs)} call_mcp_tool activities): "
                             "the check could not test a retry")
            added = _items(store, "pay the rent")
            if added != 1:
                raise NotYet(f"the call ran twice (its first reply was lost) and 'pay the rent' was added {added} "
                             "times")

        await chat_with_server(body, lose_reply=True)

    await criterion("ex7", f"the agent calls {tool} through your MCP server", "keep the tool's offline_trigger "
                    "and its name; run the server file on its own to see its errors", agent_calls_it, guard=True)
    await criterion("ex7", f"{tool} takes an idempotency_key argument", "add a parameter "
                    "`idempotency_key: str = \"\"` to the tool function", takes_a_key)
    await criterion("ex7", "a retried call adds the item once", "before appending, look for an item with the "
                    "same non-empty key in the file; if there is one, answer without writing", retry_adds_once)


# --- exercise 8: two specialists at once -------------------------------------------------------------------

async def check_parallel_specialists(lab: Any, module: ModuleType) -> None:
    """Exercise 8: the learner's workflow asks the math and the weather specialists (child workflows) and
    returns both answers; the two children run at the same time. Read from the parent's event history: both
    children started before either had answered."""
    from durable_agent.agents import SpecialistWorkflow

    found: dict[str, Any] = {}

    async def run_once() -> tuple[list[Event], Any]:
        if "events" not in found:
            async def body(queue: str) -> None:
                handle = await lab.client.start_workflow(
                    module.BothSpecialistsWorkflow.run, module.TwoQuestions("What is 25 + 17?", "What's the weather in Paris?"),
                    id=f"check-{uuid.uuid4().hex[:8]}", task_queue=queue)
                found["result"] = await _result(handle, 45)
                found["events"] = await _events(handle)

            await _with_worker(lab.client, [module.BothSpecialistsWorkflow, SpecialistWorkflow], body)
        return found["events"], found["result"]

    async def both_answer() -> None:
        events_, result = await run_once()
        started = [e for e in events_ if e.kind == "StartChildWorkflowExecutionInitiated"]
        if len(started) != 2:
            raise NotYet(f"the workflow started {len(started)} child workflows, not 2 (one per specialist)")
        text = " ".join(map(str, result)) if isinstance(result, (list, tuple)) else str(result)
        if "42" not in text or "Paris" not in text:
            raise NotYet(f"the result does not hold both answers (25 + 17 = 42, the weather in Paris): {text[:120]!r}")

    async def at_once() -> None:
        events_, _ = await run_once()
        started = [e.id for e in events_ if e.kind == "StartChildWorkflowExecutionInitiated"]
        answered = [e.id for e in events_ if e.kind == "ChildWorkflowExecutionCompleted"]
        if len(started) < 2 or not answered:
            raise NotYet("two specialists did not both answer: see the criterion above")
        if started[1] > answered[0]:
            raise NotYet("the second specialist started only after the first had answered: they ran one after "
                         "the other")

    await criterion("ex8", "both specialists answer, each a child workflow", "keep the two "
                    "execute_child_workflow calls and return both answers' text", both_answer, guard=True)
    await criterion("ex8", "the two specialists work at the same time", "start both children first, then "
                    "wait for both: asyncio.gather(workflow.execute_child_workflow(...), ...)", at_once)
