"""Tools from an MCP server: discovered in an activity, each call an activity.

Primitive 2 (managed side effects): an MCP server is the outside world. The workflow never talks to it:
`list_mcp_tools` (once per run, before the first turn) and `call_mcp_tool` (once per call the model asks
for) are activities, so the listing and every call are recorded in the event history, get timeouts and
retries, and a crashed worker or a killed server costs only a retried attempt. The tools' descriptions go
to the model through the workflow's `model_tools()` extension point; `run_tool` sends their calls here.

    from durable_agent.mcp_tools import McpServer, mcp_plugin, start_mcp_chat
    worker = await start_worker(client, plugins=[mcp_plugin()])        # registers the workflow and activities
    chat = await start_mcp_chat(client, McpServer("python", ["-m", "my_server"]))

At least once: a retried call runs again. A call whose server wrote something and then died before it
answered (or whose worker died) *is* retried, so a tool that is not idempotent (appending a note) can act
twice. The cure is an idempotency key that is the same for every attempt of one call and different for any
other call: `call_key()` derives it from the workflow's id, its run id and the activity's id. When a tool's
input schema has an `idempotency_key` argument, the agent fills it in (`McpChatInput.idempotency_keys`),
and the model never sees it.

One MCP server process per worker and server command, started on first use over stdio and reused; when it
dies, the call in flight fails (a retryable error) and the next attempt starts a fresh one. The server's
command, arguments and `env` are recorded in the event history: never put a secret there (the server
inherits the worker's environment, where keys belong).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, AsyncIterator

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.plugin import SimplePlugin

with workflow.unsafe.imports_passed_through():
    from .activities import ToolCall, ToolResult, ToolSpec, heartbeating
    from .config import redact_secrets, settings

from .workflow import AgentReply, ChatInput, DurableAgentWorkflow, Transcript

KEY_ARGUMENT = "idempotency_key"
MCP_START_FAILED = "McpServerDidNotStart"  # the command failed, or the server exited before the handshake
MCP_UNAVAILABLE = "McpServerUnavailable"  # the server died or stopped answering: retry, with a fresh server
MCP_SERVER_ERROR = "McpServerError"  # the server answered with a protocol error: retrying cannot fix it
MCP_BAD_TOOL = "McpBadTool"  # a tool the server lists cannot be offered to a model

# Starting a Python MCP server takes seconds on a busy machine, so an attempt may take up to 30 s; the
# heartbeat notices a dead worker within 2 s. Listing: three attempts, then the turn says the server is
# unavailable (the next message tries again); a server that does not start, or answers with an error, is
# reported at once. A call: retried, 1 s to 5 s apart, for up to two minutes (a server that dies mid-call
# is started again); a protocol error is reported to the model at once.
LIST_ACTIVITY = dict(
    start_to_close_timeout=timedelta(seconds=30),
    heartbeat_timeout=timedelta(seconds=2),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3,
                             non_retryable_error_types=[MCP_START_FAILED, MCP_SERVER_ERROR, MCP_BAD_TOOL]),
)
CALL_ACTIVITY = dict(
    start_to_close_timeout=timedelta(seconds=30),
    heartbeat_timeout=timedelta(seconds=2),
    schedule_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=5),
                             non_retryable_error_types=[MCP_SERVER_ERROR, MCP_BAD_TOOL]),
)
READ_TIMEOUT_SECONDS = 25.0  # one request to the server, once it has started


@dataclass
class McpServer:
    """How to start an MCP server over stdio (recorded in the event history: no secrets)."""

    command: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # added to the worker's environment

    def describe(self) -> str:
        """The command, with file names shortened to their last part (no machine's folders in messages)."""
        return " ".join(os.path.basename(part) if os.sep in part else part for part in [self.command, *self.args])


@dataclass
class McpTool:
    """A tool as the server lists it."""

    name: str
    description: str
    parameters: dict[str, Any]  # the tool's input schema
    idempotent: bool | None = None  # the server's `idempotentHint`, if it gave one
    offline_trigger: str = ""  # from the tool's `_meta`: what the offline model matches instead of reading

    @property
    def takes_key(self) -> bool:
        return KEY_ARGUMENT in (self.parameters.get("properties") or {})

    def spec(self) -> ToolSpec:
        """What the model is offered: the schema without the idempotency key (the agent fills that in)."""
        schema = dict(self.parameters)
        if self.takes_key:
            schema["properties"] = {k: v for k, v in schema["properties"].items() if k != KEY_ARGUMENT}
            schema["required"] = [r for r in schema.get("required", []) if r != KEY_ARGUMENT]
        return ToolSpec(self.name, self.description, schema, self.offline_trigger)


@dataclass
class McpListInput:
    server: McpServer


@dataclass
class McpListing:
    server: str
    tools: list[McpTool]


@dataclass
class McpCallInput:
    server: McpServer
    call: ToolCall
    arguments: list[str]  # the argument names the tool takes (the model may send more)
    add_key: bool = False  # fill in `idempotency_key` with `call_key()`


def call_key(info: activity.Info) -> str:
    """The idempotency key of one tool call: the same for each attempt of this activity (a retry after a
    crash), different for every other call, in this chat and in any other."""
    return f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"


class _Connection:
    """One running MCP server and the client session to it, owned by a task of its own (the MCP client is
    entered and left in one task); any activity of this worker may send requests through it."""

    def __init__(self, server: McpServer) -> None:
        self.server = server
        self.client: Any = None
        self.broken = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.errlog = tempfile.TemporaryFile("w+")  # the server's stderr, quoted when it fails to start

    async def open(self) -> None:
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=self.server.command, args=list(self.server.args),
                                       env={**os.environ, **self.server.env})
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def own() -> None:
            try:
                async with Client(stdio_client(params, errlog=self.errlog),
                                  read_timeout_seconds=READ_TIMEOUT_SECONDS) as client:
                    ready.set_result(client)
                    await self._stop.wait()
            except BaseException as err:  # noqa: BLE001 (handed to the activity waiting for it)
                self.broken = True
                if not ready.done():
                    ready.set_exception(err)

        self._task = asyncio.create_task(own())
        try:
            self.client = await ready
        except BaseException as err:
            said = self._stderr()
            self.errlog.close()
            raise ApplicationError(f"the MCP server `{self.server.describe()}` could not be started: "
                                   f"{_describe_error(err)}{said}", type=MCP_START_FAILED) from None

    def _stderr(self) -> str:
        with contextlib.suppress(Exception):
            self.errlog.seek(0)
            lines = [line for line in self.errlog.read().splitlines() if line.strip()]
            if lines:
                return f"; it said: {redact_secrets(lines[-1].strip())[:300]}"
        return ""

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._task), 10)
        self.errlog.close()


_import_lock = threading.Lock()
_imported = False


def _import_mcp() -> None:
    """Import the MCP client (it takes seconds): in a thread, never on the worker's event loop, and once
    (a lock: two threads importing the same modules at once can deadlock)."""
    global _imported
    with _import_lock:
        if not _imported:
            import mcp.client.stdio  # noqa: F401
            import mcp.shared.exceptions  # noqa: F401
            import mcp_types.jsonrpc  # noqa: F401
            _imported = True


async def _mcp_ready() -> None:
    if not _imported:
        await asyncio.to_thread(_import_mcp)


def _describe_error(err: BaseException) -> str:
    inner = getattr(err, "exceptions", None)  # an exception group (anyio): the first is the story
    if inner:
        return _describe_error(inner[0])
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class McpActivities:
    """The MCP activities of one worker, with the server connections they share."""

    def __init__(self) -> None:
        self._connections: dict[str, _Connection] = {}
        self._lock = asyncio.Lock()

    async def _connection(self, server: McpServer) -> _Connection:
        key = repr(dataclasses.astuple(server))
        async with self._lock:
            found = self._connections.get(key)
            if found is None or found.broken:
                if found is not None:
                    await found.close()
                found = _Connection(server)
                self._connections[key] = found
                try:
                    await found.open()
                except BaseException:
                    del self._connections[key]
                    raise
            return found

    async def _request(self, server: McpServer, send: Any) -> Any:
        """Send one request; a dead server fails this attempt (Temporal retries, with a fresh server)."""
        await _mcp_ready()
        from mcp.shared.exceptions import MCPError
        from mcp_types.jsonrpc import CONNECTION_CLOSED

        connection = await self._connection(server)
        try:
            return await send(connection.client)
        except MCPError as err:
            if err.code != CONNECTION_CLOSED:  # the server is up and said no: a bug there, not an outage
                raise ApplicationError(f"the MCP server `{server.describe()}` answered with an error: {err}",
                                       type=MCP_SERVER_ERROR, non_retryable=True) from None
            connection.broken = True
            raise ApplicationError(f"the MCP server `{server.describe()}` did not answer: the connection closed "
                                   "(the server process died?)", type=MCP_UNAVAILABLE) from None
        except Exception as err:
            connection.broken = True  # the next attempt starts the server again
            raise ApplicationError(f"the MCP server `{server.describe()}` did not answer: {_describe_error(err)}",
                                   type=MCP_UNAVAILABLE) from None

    @activity.defn
    async def list_mcp_tools(self, input: McpListInput) -> McpListing:
        """Ask the server for its tools (MCP `tools/list`)."""
        async with heartbeating():
            result = await self._request(input.server, lambda client: client.list_tools())
        found = []
        for tool in result.tools:
            schema = tool.input_schema if isinstance(tool.input_schema, dict) else tool.input_schema.model_dump(
                by_alias=True, exclude_none=True)
            if schema.get("type") != "object":
                raise ApplicationError(
                    f"the MCP server `{input.server.describe()}` lists a tool {tool.name!r} whose input schema is "
                    f"not a JSON object schema (type {schema.get('type')!r}); a model cannot call it. Fix the server.",
                    type=MCP_BAD_TOOL, non_retryable=True)
            trigger = (tool.meta or {}).get("offline_trigger", "")
            hint = tool.annotations.idempotent_hint if tool.annotations else None
            found.append(McpTool(tool.name, tool.description or "", schema, hint, str(trigger)))
        return McpListing(input.server.describe(), found)

    @activity.defn
    async def call_mcp_tool(self, input: McpCallInput) -> ToolResult:
        """Call one tool (MCP `tools/call`). The server's error result is an answer the model reads."""
        call = input.call
        arguments = {k: v for k, v in call.arguments.items() if k in input.arguments and k != KEY_ARGUMENT}
        if input.add_key:
            arguments[KEY_ARGUMENT] = call_key(activity.info())
        async with heartbeating():
            result = await self._request(input.server, lambda client: client.call_tool(call.name, arguments))
        text = "\n".join(getattr(block, "text", "") for block in result.content if getattr(block, "text", ""))
        if result.is_error:
            return ToolResult(call.id, call.name, f"Error: the MCP server reported: {text or 'the tool failed'}", ok=False)
        return ToolResult(call.id, call.name, text)

    def all(self) -> list[Any]:
        return [self.list_mcp_tools, self.call_mcp_tool]

    async def close(self) -> None:
        """Stop every server this worker started."""
        async with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            await connection.close()


# --- the workflow ------------------------------------------------------------------------------------------

@dataclass
class McpChatInput:
    server: McpServer
    idempotency_keys: bool = True  # fill in `idempotency_key` for tools that take one
    chat: ChatInput | None = None  # the conversation so far, when a long chat continues as new


@workflow.defn
class McpAgentWorkflow(DurableAgentWorkflow):
    """The agent, with an MCP server's tools next to the built-in ones."""

    @workflow.init
    def __init__(self, input: McpChatInput) -> None:
        super().__init__(input.chat or ChatInput())
        self._input = input
        self._mcp_tools: dict[str, McpTool] | None = None  # None: not listed yet in this run

    @workflow.run
    async def run(self, input: McpChatInput) -> Transcript:
        return await super().run(input.chat or ChatInput())

    def next_run_input(self, carried: ChatInput) -> McpChatInput:
        return dataclasses.replace(self._input, chat=carried)

    @workflow.query
    def mcp_tools(self) -> list[McpTool]:
        return list((self._mcp_tools or {}).values())

    async def before_turn(self, text: str) -> AgentReply | None:
        if self._mcp_tools is None:  # once per run: the listing is in the history, a replay reads it there
            try:
                listing = await workflow.execute_activity_method(
                    McpActivities.list_mcp_tools, McpListInput(self._input.server), **LIST_ACTIVITY)
            except ActivityError as err:
                reason = f"I cannot use the MCP server's tools: {activity_error(err)}"
                return AgentReply(reason, error=reason)
            self._mcp_tools = {t.name: t for t in listing.tools}
        return None

    def model_tools(self) -> list[ToolSpec]:
        return [t.spec() for t in (self._mcp_tools or {}).values()]

    async def run_tool(self, call: ToolCall) -> ToolResult:
        tool = (self._mcp_tools or {}).get(call.name)
        if tool is None:
            return await super().run_tool(call)
        request = McpCallInput(self._input.server, call, list(tool.parameters.get("properties") or {}),
                               add_key=self._input.idempotency_keys and tool.takes_key)
        try:
            return await workflow.execute_activity_method(McpActivities.call_mcp_tool, request, **CALL_ACTIVITY)
        except ActivityError as err:
            return ToolResult(call.id, call.name, f"Error: {activity_error(err)}", ok=False)


def activity_error(err: ActivityError) -> str:
    """The reason an activity failed, in one sentence (its ApplicationError's message, or the timeout)."""
    cause = err.cause
    while cause is not None and not isinstance(cause, ApplicationError) and cause.__cause__ is not None:
        cause = cause.__cause__
    return str(cause.message if isinstance(cause, ApplicationError) else (cause or err))


def demo_server(notes_file: str, *extra: str) -> McpServer:
    """The course's demo server (durable_course/mcp_server.py), started with this Python."""
    import sys

    return McpServer(sys.executable, ["-m", "durable_course.mcp_server", "--notes", str(notes_file), *extra])


def mcp_plugin() -> SimplePlugin:
    """A Temporal worker plugin that adds `McpAgentWorkflow` and the MCP activities to a worker, and stops
    the MCP servers it started when the worker stops. For a worker process: "durable_agent.mcp_tools:mcp_plugin"."""
    activities = McpActivities()
    threading.Thread(target=_import_mcp, name="import-mcp", daemon=True).start()  # ready by the first call

    @contextlib.asynccontextmanager
    async def servers() -> AsyncIterator[None]:
        try:
            yield
        finally:
            await activities.close()

    return SimplePlugin("durable-agent.mcp", workflows=[McpAgentWorkflow], activities=activities.all(),
                        run_context=servers)


PLUGIN = "durable_agent.mcp_tools:mcp_plugin"


async def start_mcp_chat(client: Any, server: McpServer, *, workflow_id: str | None = None,
                         task_queue: str | None = None, idempotency_keys: bool = True) -> Any:
    """Start a chat whose agent also has `server`'s tools (the worker needs `mcp_plugin()`)."""
    from .session import ChatSession, new_chat_id

    handle = await client.start_workflow(McpAgentWorkflow.run, McpChatInput(server, idempotency_keys),
                                         id=workflow_id or new_chat_id(), task_queue=task_queue or settings().task_queue)
    return ChatSession(handle)
