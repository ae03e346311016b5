"""The agent's activities: the model call and the tool call.

Primitive 2 (managed side effects): everything that talks to the outside world runs here, never in the
workflow. Temporal records each activity's result in the event history, applies its timeouts, and retries
it on failure. An error that retrying cannot fix (a reply we cannot parse, a tool that does not exist, a
rejected API key) is raised as a *non-retryable* `ApplicationError`, so the workflow gets a clear answer at
once instead of an endless retry loop.
"""

# No `from __future__ import annotations` in this module, on purpose: Temporal's data converter reads the
# type hints of these dataclasses for every object it decodes (each message of the conversation, at each
# model call), and real annotations are about four times cheaper to read than strings. `durable-agent bench`
# measured a one-tool turn's worker CPU time down by a fifth to a third, more in longer chats (notebook 06).

import asyncio
import contextlib
import email.utils
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, AsyncIterator, Callable, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from . import llm, tools
from .config import redact_secrets, settings


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class ChatMessage:
    """One entry of the conversation, in the shape chat-completion APIs use."""

    role: str  # "user", "assistant" or "tool"
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # for role "tool": which call this answers

    def to_openai(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["content"] = self.content or None
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                for c in self.tool_calls
            ]
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        return message


@dataclass
class ToolSpec:
    """A tool offered to the model besides the built-in ones (an MCP server's tool, another agent), by the
    workflow's `model_tools()` extension point. The workflow runs it in its `run_tool`."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments
    offline_trigger: str = ""  # for the offline model, which cannot read a description (llm.teach_offline_model)

    def spec(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass
class PlanInput:
    messages: list[ChatMessage]
    tools: list[ToolSpec] = field(default_factory=list)  # offered on top of the built-in tools
    builtin_tools: bool = True  # False: only `tools` (a triage agent whose tools are other agents)
    stream: bool = False  # stream the reply's text to the workflow's stream as it comes (streaming.py)


@dataclass
class Plan:
    """What the model wants next: tool calls to run, or an answer for the user."""

    tool_calls: list[ToolCall] = field(default_factory=list)
    answer: str = ""
    end_chat: bool = False  # the model called the end_chat control tool
    model: str = ""


@dataclass
class ToolInput:
    call: ToolCall


@dataclass
class ToolResult:
    call_id: str
    name: str
    output: str
    ok: bool = True


# Error types the workflow's retry policies list as non-retryable (ApplicationError.type).
MODEL_REPLY_ERROR = "ModelReplyError"
MODEL_REQUEST_ERROR = "ModelRequestError"
UNKNOWN_TOOL = "UnknownTool"

# LiteLLM exceptions (by class name, so LiteLLM is imported lazily) that retrying cannot fix.
_PERMANENT_LLM_ERRORS = {
    "AuthenticationError", "PermissionDeniedError", "NotFoundError", "BadRequestError",
    "UnprocessableEntityError", "ContextWindowExceededError", "UnsupportedParamsError",
}


# A provider that answers HTTP 429 (or 503) with a `Retry-After` header says how long to wait. The activity
# passes that on as the next attempt's delay (ApplicationError.next_retry_delay), which replaces the retry
# policy's back-off for that one attempt; the attempt count and the other timeouts still apply. A wait
# longer than this is capped, so a provider cannot park a turn for an hour; `Retry-After: 0` leaves the
# policy's back-off (Temporal reads a zero delay as none given).
MAX_RETRY_AFTER_SECONDS = 120.0


def retry_after_seconds(err: BaseException) -> float | None:
    """The wait a provider asked for on this error (`Retry-After: 7`, `Retry-After: <HTTP date>` or OpenAI's
    `retry-after-ms`), in seconds, capped at MAX_RETRY_AFTER_SECONDS; None if it asked for nothing. Looks at
    the response headers LiteLLM keeps, then along the exception's chain (the offline model's error)."""
    seen: set[int] = set()
    error: BaseException | None = err
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        headers = getattr(error, "litellm_response_headers", None) or getattr(error, "headers", None) \
            or getattr(getattr(error, "response", None), "headers", None)
        if headers:
            lower = {str(k).lower(): str(v).strip() for k, v in dict(headers).items()}
            seconds = _parse_retry_after(lower.get("retry-after-ms"), 0.001) \
                if "retry-after-ms" in lower else _parse_retry_after(lower.get("retry-after"), 1.0)
            if seconds is not None:
                return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
        error = error.__cause__ or error.__context__
    return None


def _parse_retry_after(value: str | None, unit: float) -> float | None:
    if not value:
        return None
    try:
        return float(value) * unit
    except ValueError:
        pass
    try:  # an HTTP date: wait until then
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time() if when is not None else None


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat while a slow call runs, so a crashed worker is noticed after the activity's
    `heartbeat_timeout` instead of after its whole `start_to_close_timeout`.

    The interval is derived from the heartbeat timeout the workflow set (a third of it), so there is one
    number to keep, not two. The first beat comes after one interval, not at once: a call shorter than that
    (the offline model, a quick tool) costs no heartbeat at all, and a crash is still noticed as soon (the
    heartbeat timeout counts from the activity's start). A local activity has no heartbeats: there, and
    when no heartbeat timeout is set, this does nothing.
    """
    info = activity.info()
    if info.is_local or not info.heartbeat_timeout:
        yield
        return
    every = info.heartbeat_timeout.total_seconds() / 3

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking function in a thread of its own and wait for it without blocking the event loop.

    Tools are ordinary (synchronous) functions. Called directly inside an `async` activity, a slow one would
    freeze the whole worker: every other activity, every workflow task, every heartbeat. In a thread, the
    worker goes on serving everything else. If the activity is cancelled (its timeout passed, or the worker
    is shutting down), this stops waiting at once. Python cannot kill a thread: a tool that never returns
    keeps its thread, but it is a daemon thread, so it holds up neither the worker nor the process's exit
    (which `asyncio.to_thread`'s shared pool would).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile: nobody is waiting for this result any more
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as err:  # handed to the awaiting activity, which decides what it means
            result, error = None, err
        with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody to tell
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=f"tool-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    return await future


def parse_reply(message: dict[str, Any], model: str, extra_tools: tuple[str, ...] = (), builtins: bool = True) -> Plan:
    """Turn the model's assistant message into a Plan, or raise a non-retryable ModelReplyError.
    `extra_tools`: names of the tools offered besides the built-in ones (PlanInput.tools); `builtins`: whether
    the built-in tools were offered."""
    offered = [*(tools.TOOLS if builtins else ()), *extra_tools]
    calls = message.get("tool_calls") or []
    if not calls:
        answer = (message.get("content") or "").strip()
        if not answer:
            raise ApplicationError("the model replied with neither text nor a tool call",
                                   type=MODEL_REPLY_ERROR, non_retryable=True)
        return Plan(answer=answer, model=model)
    plan = Plan(model=model)
    for raw in calls:
        function = raw.get("function") or {}
        name = function.get("name") or ""
        try:
            arguments = json.loads(function.get("arguments") or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            raise ApplicationError(f"the model's call to {name!r} has arguments that are not a JSON object: {err}",
                                   type=MODEL_REPLY_ERROR, non_retryable=True) from None
        if name == "end_chat":
            plan.end_chat = True
            plan.answer = str(arguments.get("farewell") or message.get("content") or "Goodbye!")
        elif name in offered:
            plan.tool_calls.append(ToolCall(id=str(raw.get("id") or f"call_{len(plan.tool_calls)}"),
                                            name=name, arguments=arguments))
        else:
            raise ApplicationError(f"the model asked for a tool that does not exist: {name!r} "
                                   f"(available: {', '.join(sorted(offered))})",
                                   type=UNKNOWN_TOOL, non_retryable=True)
    if plan.end_chat:
        plan.tool_calls = []  # say goodbye; tools asked for in the same breath are not run
    return plan


class AgentActivities:
    """The activities, bound to one model configuration (the Temporal samples' class-based pattern)."""

    def __init__(self, config: llm.LLMConfig | None = None) -> None:
        if config is None:
            current = settings()
            config = llm.LLMConfig(current.llm_model, current.llm_api_base, current.llm_timeout_seconds)
        self.config = config

    @activity.defn
    async def plan_next_action(self, input: PlanInput) -> Plan:
        """One model call: the conversation (as `context.py` bounds it) in, the next step out."""
        messages = [{"role": "system", "content": llm.SYSTEM_PROMPT}] + [m.to_openai() for m in input.messages]
        builtin = tools.tool_specs() if input.builtin_tools else []
        specs = builtin + [t.spec() for t in input.tools] + [llm.END_CHAT_SPEC]
        triggers = {t.name: t.offline_trigger for t in input.tools if t.offline_trigger}
        try:
            async with heartbeating():
                with llm.offline_triggers(triggers, builtins=input.builtin_tools):
                    if input.stream:
                        from .streaming import ReplyPublisher

                        async with ReplyPublisher() as publish:
                            reply = await llm.complete_streaming(messages, specs, self.config, publish)
                    else:
                        reply = await llm.complete(messages, specs, self.config)
        except Exception as err:
            reason = redact_secrets(f"{type(err).__name__}: {err}")
            names = {cls.__name__ for cls in type(err).__mro__}
            if names & _PERMANENT_LLM_ERRORS:
                raise ApplicationError(f"the model request was refused: {reason}",
                                       type=MODEL_REQUEST_ERROR, non_retryable=True) from None
            # Outages, rate limits, timeouts: fail this attempt; Temporal retries with backoff, or after the
            # wait the provider asked for (Retry-After), if it did.
            wait = retry_after_seconds(err)
            raise ApplicationError(f"the model call failed: {reason}", type=type(err).__name__,
                                   next_retry_delay=timedelta(seconds=wait) if wait is not None else None) from None
        return parse_reply(reply, self.config.model, tuple(t.name for t in input.tools), input.builtin_tools)

    @activity.defn
    async def execute_tool(self, input: ToolInput) -> ToolResult:
        call = input.call
        try:
            async with heartbeating():
                output = await in_thread(tools.run_tool, call.name, call.arguments)
        except tools.UnknownToolError as err:
            raise ApplicationError(str(err), type=UNKNOWN_TOOL, non_retryable=True) from None
        except tools.ToolInputError as err:
            # Rejected input is an answer, not a failure: the model sees it and explains it to the user.
            return ToolResult(call.id, call.name, f"Error: {err}", ok=False)
        # Any other exception is a bug in the tool: it propagates, and Temporal retries until it is fixed.
        return ToolResult(call.id, call.name, output)

    def all(self) -> list[Any]:
        return [self.plan_next_action, self.execute_tool]
