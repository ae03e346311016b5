"""The model, reached through LiteLLM, and the built-in deterministic offline model.

Primitive 2 (managed side effects): a model call is I/O, so only the `plan_next_action` activity calls
`complete()`. Every mode goes through `litellm.acompletion`: the offline model is a LiteLLM custom provider
(`offline/...`), so the code path is the one a real provider takes. Set `LLM_MODEL` (for example
`openai/gpt-4o-mini`) and the provider's key in `.env` to use a real model.

LiteLLM's own retries are switched off (`num_retries=0`, `max_retries=0`): Temporal retries the activity,
with backoff, and records every attempt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .config import OFFLINE_MODEL

SYSTEM_PROMPT = (
    "You are a helpful assistant running as a durable agent on Temporal. Use the calculator tool for any "
    "arithmetic and the weather tool for weather questions; never compute in your head. Answer briefly. "
    "When the user says goodbye, call the end_chat tool with a short farewell."
)

# A control tool: the workflow ends the chat when the model calls it; no activity runs for it.
END_CHAT_SPEC = {
    "type": "function",
    "function": {
        "name": "end_chat",
        "description": "End the conversation when the user says goodbye.",
        "parameters": {
            "type": "object",
            "properties": {"farewell": {"type": "string", "description": "a short goodbye message"}},
            "required": ["farewell"],
        },
    },
}


@dataclass(frozen=True)
class LLMConfig:
    model: str = OFFLINE_MODEL
    api_base: str | None = None
    timeout_seconds: float = 60.0
    latency_ms: float = 0.0  # added to every call, as a real model's time to answer (the benchmark uses it)

    @property
    def label(self) -> str:
        """The model's name, plus the latency added to it, if any: `offline/durable-agent+200ms`."""
        return f"{self.model}+{self.latency_ms:g}ms" if self.latency_ms else self.model


_litellm = None
_import_lock = threading.Lock()
_start_lock = threading.Lock()
_importing: concurrent.futures.Future[Any] | None = None  # the background import (_import_in_background)


def litellm_module() -> Any:
    """Import LiteLLM once, lazily (it takes seconds), with its offline model-cost map, and register the
    offline provider. Blocks the calling thread while it imports: call `preload()` early, and
    `await litellm_ready()` from async code."""
    global _litellm
    if _litellm is not None:
        return _litellm
    with _import_lock:
        if _litellm is not None:
            return _litellm
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        litellm.telemetry = False
        litellm.custom_provider_map = [
            item for item in litellm.custom_provider_map if item["provider"] != "offline"
        ] + [{"provider": "offline", "custom_handler": _offline_handler(litellm)}]
        # The offline model costs nothing. Said once, LiteLLM reads the price of each call from its map instead
        # of searching it for a model it does not know (0.8 ms a call here).
        litellm.register_model({OFFLINE_MODEL: {
            "litellm_provider": "offline", "mode": "chat", "input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
            "cache_creation_input_token_cost": 0.0, "cache_read_input_token_cost": 0.0}})
        # LiteLLM defers building its pydantic models until first used. The one for a call's options fails to
        # build there and tries again on every call (0.3 ms each); built here, once, it stays built.
        from litellm.types.router import LiteLLM_Params

        LiteLLM_Params.model_rebuild()
        _litellm = litellm
    return _litellm


def loaded() -> bool:
    """Whether LiteLLM has been imported (by `preload`, a model call, or anything else in this process)."""
    return _litellm is not None or "litellm" in sys.modules


def preload() -> None:
    """Start importing LiteLLM in a background thread, so a worker can poll at once and the first model
    call finds it (nearly) ready. Idempotent."""
    _import_in_background()


def _import_in_background() -> concurrent.futures.Future[Any]:
    """The import in a thread of its own (one at a time), as a future. Not a thread of asyncio's executor: a
    worker asked to stop while it imports exits at once, and does not wait for the import to finish."""
    global _importing
    with _start_lock:
        failed = _importing is not None and _importing.done() and _importing.exception() is not None
        if _importing is None or (failed and _litellm is None):
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.set_running_or_notify_cancel()  # one awaiter giving up (cancelled) does not cancel the import

            def run() -> None:
                try:
                    future.set_result(litellm_module())
                except BaseException as err:  # noqa: BLE001 - handed to whoever awaits the import
                    future.set_exception(err)

            threading.Thread(target=run, name="import-litellm", daemon=True).start()
            _importing = future
        return _importing


async def litellm_ready() -> Any:
    """LiteLLM, imported without blocking the event loop (the import runs in a thread of its own; this awaits it)."""
    if _litellm is not None:
        return _litellm
    return await asyncio.wrap_future(_import_in_background())


async def complete(messages: list[dict[str, Any]], tools: list[dict[str, Any]], config: LLMConfig) -> dict[str, Any]:
    """One chat-completion call; returns the assistant message as an OpenAI-style dict."""
    if config.latency_ms:  # a model that takes its time: the offline model made to answer like a real one
        await asyncio.sleep(config.latency_ms / 1000)
    response = await _acompletion(messages, tools, config)
    return response.choices[0].message.model_dump()


async def _acompletion(messages: list[dict[str, Any]], tools: list[dict[str, Any]], config: LLMConfig,
                       **options: Any) -> Any:
    """LiteLLM's `acompletion` as both calls make it: the configured model, and no retries of its own."""
    litellm = await litellm_ready()
    return await litellm.acompletion(
        model=config.model,
        messages=messages,
        tools=tools or None,
        api_base=config.api_base,
        timeout=config.timeout_seconds,
        num_retries=0,  # Temporal retries, not LiteLLM
        max_retries=0,  # nor the OpenAI client underneath
        **options,
    )


async def complete_streaming(messages: list[dict[str, Any]], tools: list[dict[str, Any]], config: LLMConfig,
                             on_text: Callable[[str], None]) -> dict[str, Any]:
    """`complete()`, streamed: the same call with `stream=True`. `on_text` gets each piece of the reply's text
    as the model produces it; the assembled assistant message (text and tool calls) is returned, as from
    `complete()`. The offline model streams too, word by word, through the same LiteLLM streaming API."""
    litellm = await litellm_ready()
    stream = await _acompletion(messages, tools, config, stream=True)
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            on_text(text)
    return litellm.stream_chunk_builder(chunks, messages=messages).choices[0].message.model_dump()


# How fast the offline model streams: a pause between words, so a reply arrives the way a real model's does
# (tens of words a second). Only when streaming; a plain call answers at once.
OFFLINE_SECONDS_PER_WORD = 0.03


# --- the offline model ------------------------------------------------------------------------------------

_WORDS = [
    (r"\bmultiplied by\b", "*"), (r"\btimes\b", "*"), (r"\bdivided by\b", "/"), (r"\bover\b", "/"),
    (r"\bplus\b", "+"), (r"\bminus\b", "-"), (r"\bto the power of\b", "**"), (r"\bsquared\b", "** 2"),
    (r"\bmod(ulo)?\b", "%"), (r"(?<=\d)\s*x\s*(?=\d)", " * "),
]
_ARITHMETIC_RUN = re.compile(r"[\d.\s()+\-*/%^×÷]+")
_OPERATOR = re.compile(r"\d\s*\)*\s*(\*\*|//|[+\-*/%^×÷])\s*\(*\s*-?\d")
_WEATHER = re.compile(
    r"\b(?:weather|temperature|forecast|raining|snowing|sunny)\b[^?.!]*?\b(?:in|for|at)\s+([^?.!;]+)", re.I
)
_NOT_A_CITY = re.compile(r"\d|^(what|how|is|and|calculate|compute|the|also|tell|whats)\b", re.I)
_GOODBYE = re.compile(r"\b(bye|goodbye|good bye|farewell|see you|ciao)\b", re.I)
_THANKS = re.compile(r"\b(thanks|thank you|thx|cheers)\b", re.I)
_GREETING = re.compile(r"^\s*(hi|hello|hey|howdy|greetings|good (morning|afternoon|evening))\b", re.I)

HELP = (
    "I'm the built-in offline model: I can do arithmetic (try 'What is 25 + 17?') and tell you the "
    "simulated weather (try 'What's the weather in Seattle?'). Set LLM_MODEL and a provider key in .env "
    "to talk to a real model."
)


def extract_tool_calls(text: str) -> list[tuple[str, dict[str, str]]]:
    """The tool calls a user message needs, in the order they appear: [(tool name, arguments), ...]."""
    original = text
    for pattern, symbol in _WORDS:  # "25 plus 17" -> "25 + 17"
        text = re.sub(pattern, f" {symbol} ", text, flags=re.I)
    found: list[tuple[int, str, dict[str, str]]] = []
    builtins = _BUILTINS.get()
    for match in _WEATHER.finditer(text) if builtins else ():
        start = match.start(1)
        for part in re.split(r",|\band\b|\bor\b", match.group(1)):
            city = part.strip(" '\"")
            if city and not _NOT_A_CITY.search(city) and len(city.split()) <= 4:
                found.append((start + match.group(1).find(part), "weather", {"city": city}))
    for match in _ARITHMETIC_RUN.finditer(text) if builtins else ():
        expression = " ".join(match.group().split()).strip(" .")
        if _OPERATOR.search(expression):
            expression = _balance(expression)
            found.append((match.start(), "calculator", {"expression": expression}))
    for name, trigger in {**TAUGHT_TOOLS, **_request_triggers()}.items():  # taught tools, this request's tools
        for match in trigger.finditer(original):
            found.append((match.start(), name, {k: v.strip() for k, v in match.groupdict().items() if v}))
    return [(name, args) for _, name, args in sorted(found, key=lambda item: item[0])]


# Teaching the offline model a new tool (exercise 1). A real model reads each tool's description and decides
# to call it; the offline model only knows calculator and weather, so a new tool also gives it a trigger: a
# regular expression whose named groups are the tool's arguments. Lives in this process only (a worker in
# another process must be taught there too).
TAUGHT_TOOLS: dict[str, re.Pattern[str]] = {}


def teach_offline_model(tool_name: str, trigger: str) -> None:
    """Make the offline model call `tool_name` for each match of `trigger` in a user message.

    >>> teach_offline_model("shout", r"shout (?P<word>\\w+)")   # "please shout hello" -> shout(word="hello")
    """
    pattern = re.compile(trigger, re.I)
    if not pattern.groupindex:
        raise ValueError(f"the trigger {trigger!r} has no named groups (?P<argument>...), so the tool would "
                         "get no arguments")
    TAUGHT_TOOLS[tool_name] = pattern


# Tools offered for one request only (an MCP server's, another agent: PlanInput.tools), each with its trigger.
# Set around one model call by the activity, read by the offline model in the same task: nothing global stays.
_TRIGGERS: contextvars.ContextVar[dict[str, re.Pattern[str]]] = contextvars.ContextVar("offline_triggers", default={})
_BUILTINS: contextvars.ContextVar[bool] = contextvars.ContextVar("offline_builtins", default=True)


@contextlib.contextmanager
def offline_triggers(triggers: dict[str, str], builtins: bool = True) -> Iterator[None]:
    """For the model call made inside this block, the offline model also calls these tools ({name: trigger});
    with `builtins=False` it does not call the built-in calculator and weather (they were not offered)."""
    token = _TRIGGERS.set({name: re.compile(trigger, re.I) for name, trigger in triggers.items()})
    builtins_token = _BUILTINS.set(builtins)
    try:
        yield
    finally:
        _TRIGGERS.reset(token)
        _BUILTINS.reset(builtins_token)


def _request_triggers() -> dict[str, re.Pattern[str]]:
    return _TRIGGERS.get()


def _balance(expression: str) -> str:
    """Drop unmatched parentheses picked up from the surrounding sentence."""
    while expression.startswith(")"):
        expression = expression[1:].strip()
    while expression.endswith("(") or expression.count(")") > expression.count("("):
        if not expression.endswith(")") and not expression.endswith("("):
            break
        expression = expression[:-1].strip()
    return expression


def offline_reply(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The deterministic offline model: the next assistant message for a conversation.

    It reads the last user message, works out which tool calls it needs, asks for the first one not yet
    answered (one tool call per step, so a two-tool question takes three steps), and answers from the tool
    results once all are in.
    """
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        return {"role": "assistant", "content": HELP}
    text = str(messages[last_user].get("content") or "")
    turn = sum(1 for m in messages if m.get("role") == "user")
    needed = extract_tool_calls(text)
    results = [m for m in messages[last_user + 1 :] if m.get("role") == "tool"]
    if len(results) < len(needed):
        name, args = needed[len(results)]
        call = {"id": f"call_{turn}_{len(results) + 1}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if needed:
        parts = [_describe(name, args, str(result.get("content"))) for (name, args), result in zip(needed, results)]
        return {"role": "assistant", "content": " ".join(parts)}
    if _GOODBYE.search(text):
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{turn}_1", "type": "function",
            "function": {"name": "end_chat", "arguments": '{"farewell": "Goodbye! Thanks for chatting."}'}}]}
    if _THANKS.search(text):
        return {"role": "assistant", "content": "You're welcome! Ask me another question any time."}
    if _GREETING.search(text):
        return {"role": "assistant", "content": "Hello! " + HELP}
    return {"role": "assistant", "content": "Sorry, I didn't understand that. " + HELP}


def _describe(name: str, args: dict[str, str], result: str) -> str:
    failed = result.startswith("Error:")
    if name == "calculator":
        if failed:
            return f"I could not calculate {args['expression']}: {result.removeprefix('Error:').strip()}."
        return f"{args['expression']} = {result}."
    if name in TAUGHT_TOOLS or name in _request_triggers():
        return f"{name}: {result.rstrip('.')}."
    if failed:
        return f"I could not get the weather for {args['city']}: {result.removeprefix('Error:').strip()}."
    return f"The weather in {result}."


# An extension point for fault injection (the course's fault lab sets it, notebook 05): a function called
# before each reply of the offline model that returns an HTTP status to fail with (503, 429...) or None, or
# (status, response headers), e.g. (429, {"Retry-After": "3"}) for a provider that says when to come back.
# The failure takes LiteLLM's own exception path, as a provider's would. Unset, the model never fails.
OfflineOutage = Callable[[], "int | tuple[int, dict[str, str]] | None"]
_offline_outage: OfflineOutage | None = None


def set_offline_outage(hook: OfflineOutage | None) -> OfflineOutage | None:
    """Install `hook` (None removes it); returns the one it replaces."""
    global _offline_outage
    previous, _offline_outage = _offline_outage, hook
    return previous


def _offline_handler(litellm: Any) -> Any:
    """Wrap `offline_reply` as a LiteLLM custom provider, so `litellm.acompletion` serves it."""

    class OfflineModel(litellm.CustomLLM):
        def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
            return self._respond(model, messages)

        async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
            return self._respond(model, messages)

        async def astreaming(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
            """The same reply as `acompletion`, as a stream: the text word by word, a tool call in one piece."""
            message = self._respond(model, messages).choices[0].message
            if message.tool_calls:
                for index, call in enumerate(message.tool_calls):
                    yield {"text": "", "is_finished": False, "finish_reason": "", "usage": None, "index": 0,
                           "tool_use": {"id": call.id, "type": "function", "index": index,
                                        "function": {"name": call.function.name,
                                                     "arguments": call.function.arguments}}}
                yield {"text": "", "is_finished": True, "finish_reason": "tool_calls", "usage": None, "index": 0}
                return
            words = re.findall(r"\S+\s*", message.content or "")
            for word in words:
                await asyncio.sleep(OFFLINE_SECONDS_PER_WORD)
                yield {"text": word, "is_finished": False, "finish_reason": "", "usage": None, "index": 0}
            yield {"text": "", "is_finished": True, "finish_reason": "stop", "usage": None, "index": 0}

        def _respond(self, model: str, messages: list) -> Any:
            outage = _offline_outage() if _offline_outage else None
            status, headers = outage if isinstance(outage, tuple) else (outage, {})
            if status:
                from litellm.llms.custom_llm import CustomLLMError

                error = CustomLLMError(status_code=status, message=f"the offline model is down (simulated HTTP {status})")
                error.headers = dict(headers)  # read back by activities.retry_after_seconds
                raise error
            message = offline_reply(messages)
            finish = "tool_calls" if message.get("tool_calls") else "stop"
            return litellm.ModelResponse(
                model=f"offline/{model}", created=int(time.time()),
                choices=[{"index": 0, "finish_reason": finish, "message": message}],
            )

    return OfflineModel()
