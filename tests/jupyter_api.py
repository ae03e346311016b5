"""A running Jupyter server, used the way JupyterLab uses it: its REST API, and a kernel's websocket."""

from __future__ import annotations

import json
import urllib.request


def call(base: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    """One REST call: `base` is the server's URL with its base path (`http://127.0.0.1:8888/user/ada`)."""
    request = urllib.request.Request(f"{base}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read() or b"{}")


def run_in_kernel(base: str, token: str, code: str) -> list[str]:
    """Start a kernel through the server, run `code` in it, and return the words of what it printed first;
    the kernel is shut down after."""
    from websocket import create_connection  # websocket-client, a JupyterLab dependency

    kernel = call(base, token, "POST", "/api/kernels", {"name": "python3"})
    try:
        ws = create_connection(f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel['id']}/channels?token={token}",
                               timeout=60)
        try:
            msg_id = "probe-1"
            ws.send(json.dumps({"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "",
                                           "session": "s", "version": "5.3"}, "parent_header": {}, "metadata": {},
                                "channel": "shell", "content": {"code": code, "silent": False}}))
            while True:
                message = json.loads(ws.recv())
                if message.get("parent_header", {}).get("msg_id") == msg_id and message["msg_type"] == "stream":
                    return message["content"]["text"].split()
        finally:
            ws.close()
    finally:
        call(base, token, "DELETE", f"/api/kernels/{kernel['id']}")
