"""durable_agent: an LLM agent loop that survives crashes, outages and bugs, because it runs on Temporal.

The three primitives, one module each:

1. Deterministic orchestrator: `workflow.py` (the agent loop; no I/O).
2. Managed side effects: `activities.py` (the model call in `llm.py`, the tools in `tools.py`).
3. Event-sourced state: Temporal's event history; `server.py` starts the server that keeps it.

`worker.py` runs the code, `session.py` talks to a chat, `cli.py` is `python -m durable_agent` (chat, server,
worker). The workflow's public extension points (a step before each turn, the tool step, the end-of-turn
decision, continue-as-new) are listed in `workflow.py`'s docstring; worker plugins add behaviour from outside.
`context.py` bounds what the model sees (so chats can be any length); `logs.py` keeps failures to one line.
Recovery in seconds: `supervisor.py` (a dead worker's work released at once) and `warm_start.py` (a new worker
process forked from one that has already imported the libraries). Beyond the basics (notebook 07): `long_chat.py` (continue-as-new with a carried summary) and `approval.py`
(a tool that waits for a human's approval).
Importing this package is fast: LiteLLM is imported only by a worker, in a background thread (a worker
process starts the import once it polls).

This is the agent, and only the agent. The course around it (the lab, the chat box, the history views, the
fault lab, the checks, the benchmark) is the package `durable_course/`, which this one never imports.
"""

from .activities import AgentActivities, ChatMessage, Plan, ToolCall, ToolResult
from .config import OFFLINE_MODEL, Settings, settings
from .server import Temporal, start_temporal
from .session import ChatError, ChatSession, format_transcript, open_chat, start_chat
from .tools import TOOLS, tool
from .worker import start_worker, start_worker_process
from .workflow import AgentReply, ChatInput, ChatStatus, DurableAgentWorkflow, Transcript, UserMessage

__all__ = [
    "AgentActivities", "AgentReply", "ChatError", "ChatInput", "ChatMessage", "ChatSession", "ChatStatus",
    "DurableAgentWorkflow", "OFFLINE_MODEL", "Plan", "Settings", "TOOLS", "Temporal", "ToolCall", "ToolResult",
    "Transcript", "UserMessage", "format_transcript", "open_chat", "settings", "start_chat", "start_temporal",
    "start_worker", "start_worker_process", "tool",
]
