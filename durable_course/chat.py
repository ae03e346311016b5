"""The chat box: an ipywidgets chat bound to one chat workflow.

Primitive 3 (event-sourced state): the box keeps no conversation of its own. Each message is sent as an
Update; while the agent works, the box polls the workflow's `status` query ("thinking", "running tool
calculator"); after each reply it shows what the `history` query says the turn did. Open a box for an
existing workflow id and it rebuilds the whole conversation from Temporal.

    from durable_course.chat import chat_box
    box = await chat_box(chat, lab.temporal)            # a ChatSession, a workflow handle ...
    box = await chat_box("chat-1a2b3c4d", lab.temporal)  # ... or the id of an existing chat
    box                                                  # display it; type a message and press Enter

Before the first message the box says what the agent can do: each tool in the agent's registry
(`durable_agent.tools.TOOLS`, so a tool you register shows up too) with its description, and the example
questions the tools were registered with, as buttons that send the question.

The notebook never freezes: a message is sent by a task on the kernel's event loop, so the cell returns at
once and the in-kernel worker (on the same loop) keeps answering. Errors (busy agent, chat ended, server
gone) appear in the chat as messages, never as a traceback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
from typing import Any, Coroutine

import ipywidgets as widgets
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from durable_agent import tools as agent_tools
from durable_agent.activities import ChatMessage
from durable_agent.server import Temporal
from durable_agent.session import ChatError, ChatSession, open_chat
from durable_agent.streaming import StreamedText, stream_reply
from durable_agent.workflow import AgentReply, ChatStatus

from .progress import GIVE_UP_SECONDS, send_watched

# How each kind of entry looks: (CSS of the bubble, which side it sits on).
STYLES = {
    "user": ("background:#1f6feb;color:#fff;border-radius:14px 14px 3px 14px", "flex-end"),
    "agent": ("background:#eef1f5;color:#111;border-radius:14px 14px 14px 3px", "flex-start"),
    "tool": ("color:#57606a;font-family:monospace;font-size:12px;padding:0 10px", "flex-start"),
    "error": ("background:#fde8e8;color:#8b1a1a;border-radius:8px", "flex-start"),
    "info": ("color:#57606a;font-style:italic;font-size:12px", "center"),
}
ICONS = {"error": "⚠ "}
POLL_SECONDS = 0.2


class ChatBox:
    """The widgets of one chat (`box.widget`), and the logic that binds them to the workflow."""

    def __init__(self, session: ChatSession, *, workflow_url: str | None = None,
                 poll_seconds: float = POLL_SECONDS, stream: bool = False,
                 give_up_after: float = GIVE_UP_SECONDS) -> None:
        self.session = session
        self.poll_seconds = poll_seconds
        self.give_up_after = give_up_after
        # stream=True: the reply appears word by word while the model writes it, read from the chat's workflow
        # stream (durable_agent/streaming.py; the chat must be started with ChatInput(stream_replies=True)).
        self.stream = stream
        self.streamed: StreamedText | None = None  # the last turn's streamed text, as shown
        self.entries: list[tuple[str, str]] = []  # (kind, text) of every bubble shown, for tests and print
        self._tasks: set[concurrent.futures.Future[Any]] = set()
        self._loop = asyncio.get_running_loop()  # the kernel's loop: sending runs there, in the background

        link = (f' · <a href="{html.escape(workflow_url)}" target="_blank" rel="noopener" '
                f'style="color:#1f6feb;text-decoration:underline">open in the Temporal UI</a>' if workflow_url else "")
        self.header = widgets.HTML(f"<b>Durable agent</b> · workflow <code>{html.escape(session.workflow_id)}</code>{link}")
        self.messages = widgets.VBox(layout=widgets.Layout(padding="6px", border="1px solid #d0d7de"))
        self.intro = self._intro(agent_tools.TOOLS.values())
        self.status = widgets.HTML()
        self.text = widgets.Text(placeholder="Type a message and press Enter", continuous_update=False,
                                 layout=widgets.Layout(flex="1"))
        self.send_button = widgets.Button(description="Send", button_style="primary", tooltip="Send the message")
        self.end_button = widgets.Button(description="End chat", tooltip="Signal end_chat: the workflow completes")
        self.widget = widgets.VBox([self.header, self.intro, self.messages, self.status,
                                    widgets.HBox([self.text, self.send_button, self.end_button])],
                                   layout=widgets.Layout(width="100%", max_width="720px"))
        for widget, name in [(self.widget, "durable-chat"), (self.messages, "durable-chat-messages"),
                             (self.status, "durable-chat-status"), (self.text, "durable-chat-input"),
                             (self.send_button, "durable-chat-send"), (self.end_button, "durable-chat-end"),
                             (self.intro, "durable-chat-intro")]:
            widget.add_class(name)  # stable names for the browser test (and your own CSS)

        # The text reaches the kernel when you press Enter (or leave the box): it is sent then. Not
        # `on_submit`: its event can overtake the keystrokes still on their way, and the browser test
        # caught it sending "W" for "What is 25 + 17?".
        self.text.observe(lambda change: self._on_send() if change["new"].strip() else None, names="value")
        self.send_button.on_click(self._on_send)
        self.end_button.on_click(lambda _button: self._in_background(self.end()))
        self._show_status(ChatStatus("idle"))

    @property
    def workflow_id(self) -> str:
        return self.session.workflow_id

    # --- what the buttons do ------------------------------------------------------------------------------

    def _on_send(self, _widget: Any = None) -> None:
        text, self.text.value = self.text.value, ""
        if text.strip():
            self._in_background(self.send(text))

    def _in_background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine as a task on the kernel's event loop; the click handler returns at once.

        `run_coroutine_threadsafe` rather than `ensure_future`, because it also wakes the loop up: in
        JupyterLab with ipykernel 7 (tests/test_browser.py), a task made with `ensure_future` in a widget
        callback showed nothing until the browser sent another message; this one answers at once."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Wait until every message sent from the box has its answer (for a cell or a test)."""
        while self._tasks:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in list(self._tasks)), return_exceptions=True)

    async def send(self, text: str) -> AgentReply | None:
        """Send one message, as if typed into the box; show the reply (or the error) in the chat."""
        self._add("user", text)
        shown_before = self.status.value
        self._show_status(ChatStatus("waiting for the agent"))  # until the status query says more
        poller = asyncio.ensure_future(self._poll_status())
        try:
            # A failed attempt of the turn's activities shows as a line in the chat; a turn that keeps failing
            # ends, after GIVE_UP_SECONDS, in an error that says which activity and why (progress.py).
            reply = await (self._send_streaming(text) if self.stream else send_watched(
                self.session, text, give_up_after=self.give_up_after, show=lambda line: self._add("info", line.strip("[]"))))
        except ChatError as err:  # busy agent, chat ended, server gone, a turn stuck: a sentence to show
            self._add("error", str(err))
            self.status.value = shown_before  # the message was refused: the agent is where it was
            if str(err).startswith("the chat has ended") and not self.text.disabled:
                self._show_status(ChatStatus("ended"))
                self._ended("This chat has ended. Its history stays in Temporal.")
            return None
        except Exception as err:  # anything else must not become a traceback in the notebook either
            self._add("error", f"the message could not be sent ({type(err).__name__}: {err})")
            self.status.value = shown_before
            return None
        finally:
            poller.cancel()
        await self._show_turn(reply)
        self._show_status(ChatStatus("ended" if reply.chat_ended else "idle"))
        if reply.chat_ended:
            self._ended("The agent ended the chat.")
        return reply

    async def _send_streaming(self, text: str) -> AgentReply:
        """Send, and show the reply as it streams in a bubble of its own; when the turn is answered, that bubble
        gives way to the turn as Temporal recorded it (so the reply is shown once, whole)."""
        live = widgets.HTML(layout=widgets.Layout(width="100%", height="auto", margin="2px 0"))
        live.add_class("durable-chat-streaming")
        self.messages.children = (*self.messages.children, live)
        self.streamed = StreamedText()

        def show(text_so_far: str) -> None:
            live.value = self._bubble_html("agent", text_so_far + " ▌")

        try:
            return await stream_reply(self.session, text, show, self.streamed)
        finally:
            self.messages.children = tuple(c for c in self.messages.children if c is not live)

    async def end(self) -> None:
        """The End chat button: signal `end_chat`; the workflow completes with the transcript."""
        try:
            transcript = await self.session.end()
        except Exception as err:
            self._add("error", f"the chat could not be ended ({type(err).__name__}: {err})")
            return
        self._show_status(ChatStatus("ended", turns=transcript.turns))
        self._ended(f"Chat ended after {transcript.turns} turn(s). Its history stays in Temporal.")

    # --- reading the workflow -----------------------------------------------------------------------------

    async def load_history(self) -> None:
        """Show the conversation so far, from the workflow's `history` query."""
        try:
            history = await self.session.history()
        except ChatError as err:
            self._add("error", str(err))
            return
        except Exception as err:
            self._add("error", f"could not read the chat's history ({type(err).__name__}: {err})")
            return
        for message in history:
            self._add_message(message)
        await self.refresh_status()

    async def refresh_status(self) -> None:
        """Show the workflow's status; close the input if the workflow is no longer running."""
        try:
            status = await self.session.status()
            running = (await self.session.handle.describe()).status == WorkflowExecutionStatus.RUNNING
        except Exception:
            return  # the server or the worker is away; the chat already says why
        self._show_status(status if running else ChatStatus("ended", turns=status.turns))
        if not running and not self.text.disabled:
            self._ended("This chat has ended. Its history stays in Temporal.")

    async def _poll_status(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                status = await self.session.status()
            except Exception:
                continue  # a query can fail while a worker restarts; try again
            if status.state != "idle":  # a late "idle" from the previous turn would hide "thinking"
                self._show_status(status)

    async def _show_turn(self, reply: AgentReply) -> None:
        """Show what the turn did, as Temporal recorded it: tool calls, tool results, the answer."""
        try:
            history = await self.session.history()
            last_user = max(i for i, m in enumerate(history) if m.role == "user")
        except Exception:  # the history cannot be read: the reply alone still says enough
            self._add("error" if reply.error else "agent", reply.text)
            return
        for message in history[last_user + 1:]:
            if reply.error and message.role == "assistant" and message.content == reply.error:
                self._add("error", message.content)  # the turn failed (e.g. the model is down): say so
            else:
                self._add_message(message)

    # --- drawing ------------------------------------------------------------------------------------------

    def _intro(self, registered: Any) -> widgets.VBox:
        """What the agent can do, from its tools registry: shown until the chat has its first message."""
        registered = list(registered)
        self.examples = [example for t in registered for example in t.examples]
        rows = "".join(f"<li><code>{html.escape(t.name)}</code>: {html.escape(t.description)}</li>" for t in registered)
        tools = f"{len(registered)} tool{'s' if len(registered) > 1 else ''}"
        text = (f"<div style='color:#57606a;font-size:13px'>This agent can use {tools}:"
                f"<ul style='margin:2px 0'>{rows}</ul>Say goodbye (or click <b>End chat</b>) to end the chat. "
                "Try one of these questions, or type your own:</div>"
                if registered else "<div style='color:#57606a;font-size:13px'>This agent has no tools: it can only "
                "talk. Register one with <code>@tool</code> (durable_agent/tools.py).</div>")
        buttons = []
        for example in self.examples:
            button = widgets.Button(description=example, tooltip=f"Send: {example}",
                                    layout=widgets.Layout(width="auto"))
            button.add_class("durable-chat-example")
            button.on_click(lambda _button, question=example: self._in_background(self.send(question)))
            buttons.append(button)
        self.example_buttons = buttons
        return widgets.VBox([widgets.HTML(text), widgets.HBox(buttons, layout=widgets.Layout(flex_flow="row wrap"))],
                            layout=widgets.Layout(padding="0 6px 6px 6px"))

    def _add_message(self, message: ChatMessage) -> None:
        if message.role == "system":  # a long chat continued as new: its older turns, summarised
            self._add("info", message.content)
        elif message.role == "user":
            self._add("user", message.content)
        elif message.role == "assistant" and message.tool_calls:
            for call in message.tool_calls:
                arguments = ", ".join(f"{k}={v!r}" for k, v in call.arguments.items())
                self._add("tool", f"→ {call.name}({arguments})")
        elif message.role == "assistant":
            self._add("agent", message.content)
        elif message.role == "tool":
            self._add("tool", f"← {message.content}")

    def _add(self, kind: str, text: str) -> None:
        self.entries.append((kind, text))
        self.intro.layout.display = "none"  # the chat has begun: the conversation says the rest
        style, side = STYLES[kind]
        bubble = widgets.HTML(
            f'<div style="display:flex;justify-content:{side}"><div style="{style};padding:6px 12px;'
            f'max-width:80%;white-space:pre-wrap;line-height:1.4">{ICONS.get(kind, "")}{html.escape(text)}</div></div>',
            layout=widgets.Layout(width="100%", height="auto", margin="2px 0"))
        bubble.add_class(f"durable-chat-{kind}")
        self.messages.children = (*self.messages.children, bubble)

    @staticmethod
    def _bubble_html(kind: str, text: str) -> str:
        style, side = STYLES[kind]
        return (f'<div style="display:flex;justify-content:{side}"><div style="{style};padding:6px 12px;'
                f'max-width:80%;white-space:pre-wrap;line-height:1.4">{ICONS.get(kind, "")}{html.escape(text)}</div></div>')

    def _show_status(self, status: ChatStatus) -> None:
        busy = status.state not in ("idle", "ended")
        text = f"{status.describe()}…" if busy else status.describe()
        colour = "#9a6700" if busy else "#57606a"
        self.status.value = f'<span style="color:{colour};font-size:12px">Agent status: <b>{html.escape(text)}</b></span>'

    def _ended(self, note: str) -> None:
        self._add("info", note)
        for widget in (self.text, self.send_button, self.end_button, *self.example_buttons):
            widget.disabled = True

    # --- display ------------------------------------------------------------------------------------------

    def transcript(self) -> str:
        """The chat as the box shows it, one line per bubble (what a notebook cell can print)."""
        names = {"user": "You:  ", "agent": "Agent:", "tool": "      ", "error": "Error:", "info": "      "}
        return "\n".join(f"{names[kind]} {text}" for kind, text in self.entries)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        return f"ChatBox(workflow {self.workflow_id})"


async def chat_box(chat: ChatSession | WorkflowHandle | str, temporal: Temporal | None = None,
                   **options: Any) -> ChatBox:
    """A chat box for a chat: a `ChatSession`, a workflow handle, or the workflow id of an existing chat
    (then `temporal`, e.g. `lab.temporal`, says which server). Shows the chat's history so far; pass
    `temporal` to get a link to the workflow in the Temporal UI."""
    if isinstance(chat, str):
        if not chat.strip():
            raise ValueError("the workflow id is empty: give a chat's id, e.g. chat.workflow_id")
        if temporal is None:
            raise ValueError("to open a chat by its workflow id, also give the Temporal server: "
                             "chat_box(workflow_id, lab.temporal)")
        session = open_chat(temporal.client, chat.strip())
    elif isinstance(chat, WorkflowHandle):
        session = ChatSession(chat)
    elif isinstance(chat, ChatSession):
        session = chat
    else:
        raise TypeError(f"chat_box() needs a ChatSession, a workflow handle or a workflow id, not {type(chat).__name__}")
    box = ChatBox(session, workflow_url=temporal.workflow_url(session.workflow_id) if temporal else None, **options)
    await box.load_history()
    return box
