"""A local HTTP server that speaks the OpenAI chat-completions protocol, for tests without internet.

Each request to POST /v1/chat/completions takes the next scripted `Reply` (status, JSON body). A reply made
with `held()` is not sent until the test calls `.release()`: a model call that stays in flight exactly as
long as the test needs, never for a guessed number of seconds. Requests are recorded (path, headers, JSON
body) so tests can check what the client really sent.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


FAKE_API_KEY = "sk-test-SECRET-0123456789abcdef"  # looks like a key: tests check it never leaks


HOLD_LIMIT = 120.0  # a held reply is sent anyway after this, so a failing test cannot leave a thread behind


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | None = None
    gate: threading.Event | None = None  # set: the reply is sent; unset: the request waits
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers, e.g. Retry-After

    def held(self) -> "Reply":
        """This reply, sent only once `release()` is called."""
        self.gate = threading.Event()
        return self

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()


def completion(content: str | None = None, tool_calls: list[dict[str, Any]] | None = None) -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return Reply(200, {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1700000000, "model": "fake-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    })


def tool_call(name: str, arguments: str, call_id: str = "call_1") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def error(status: int, message: str = "error", headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": "server_error", "code": status}},
                 headers=dict(headers or {}))


@dataclass
class FakeOpenAI:
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    held: list[Reply] = field(default_factory=list)  # held replies whose request has arrived

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                reply = fake.replies.pop(0) if fake.replies else error(500, "no scripted reply left")
                if reply.gate is not None:
                    fake.held.append(reply)
                    reply.gate.wait(HOLD_LIMIT)
                data = json.dumps(reply.body or {}).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        for reply in self.held:
            reply.release()
        self.server.shutdown()
        self.server.server_close()
