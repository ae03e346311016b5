"""One Temporal server for the whole course session, with its Web UI at one stable address.

- `python3 course.py lab` starts it beside JupyterLab (persisted to `.course/temporal.db`, so the chats of
  earlier notebooks are still there) and tells the notebooks' kernels where it is (`DURABLE_COURSE_SERVER`,
  `DURABLE_COURSE_UI`). Ctrl-C in that terminal stops JupyterLab and this server; nothing else stops it.
- On JupyterHub and Binder, jupyter-server-proxy runs it (`proxy_config()`, installed by binder/postBuild):
  the launcher's "Temporal UI" tile opens it, and the first `start_lab()` starts it if nobody has yet.
- `start_lab()` (lab.py) connects to it when it is there, and starts an embedded server for the notebook
  otherwise (nbval, a notebook opened in a plain `jupyter lab`). Each notebook polls a task queue of its own
  there (`course-<notebook>`), so a workflow changed in one notebook never reaches the chats of another.

    python -m durable_course.course_server --db .course/temporal.db --port 7233 --ui-port 8233
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Sequence

from temporalio.client import Client

from durable_agent.server import Temporal, connect as connect_client

ADDRESS_ENV = "DURABLE_COURSE_SERVER"  # host:port of the course server, for the kernels
UI_ENV = "DURABLE_COURSE_UI"  # its Web UI, as the browser reaches it
PORT_ENV = "DURABLE_COURSE_PORT"  # the port the proxied server listens on (JupyterHub/Binder)
PORT, UI_PORT = 7233, 8233
PROXY_NAME = "temporal"  # the jupyter-server-proxy route: <hub prefix>temporal/
CONNECT_SECONDS = 5.0
PROXY_START_SECONDS = 60.0


def notebook_task_queue(env: Mapping[str, str] | None = None) -> str | None:
    """`course-<notebook>` for a kernel that JupyterLab started for a notebook (it sets JPY_SESSION_NAME to
    the notebook's path), else None."""
    path = (os.environ if env is None else env).get("JPY_SESSION_NAME", "")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(path).stem).strip("-") if path else ""
    return f"course-{stem}" if stem else None


def _on_hub(env: Mapping[str, str]) -> str | None:
    return env.get("JUPYTERHUB_SERVICE_PREFIX")


def where(env: Mapping[str, str] | None = None) -> tuple[str, str | None] | None:
    """(address, UI address) of the course server this kernel should use, or None if there is none."""
    env = os.environ if env is None else env
    if env.get(ADDRESS_ENV):
        return env[ADDRESS_ENV], env.get(UI_ENV) or None
    prefix = _on_hub(env)
    if prefix:
        return f"127.0.0.1:{env.get(PORT_ENV) or PORT}", f"/{prefix.strip('/')}/{PROXY_NAME}/".replace("//", "/")
    return None


async def connect(env: Mapping[str, str] | None = None, plugins: Sequence[Any] = ()) -> Temporal | None:
    """A client for the course server, or None (with one line saying why) when there is none to reach.
    The returned `Temporal` has no server of its own: `shutdown()` leaves the course server running."""
    env = os.environ if env is None else env
    found = where(env)
    if found is None:
        return None
    address, ui_url = found
    client = await _try_connect(address, plugins=plugins)
    if client is None and _on_hub(env) and not env.get(ADDRESS_ENV):
        await asyncio.to_thread(_start_through_proxy, env)  # jupyter-server-proxy starts it on first request
        client = await _try_connect(address, PROXY_START_SECONDS, plugins)
    if client is None:
        print(f"[the course's Temporal server at {address} does not answer: this notebook starts a server of its "
              "own, which stops with it]", file=sys.stderr)
        return None
    return Temporal(client, address, client.namespace, ui_url)


async def _try_connect(address: str, seconds: float | None = None, plugins: Sequence[Any] = ()) -> Client | None:
    """A client for `address`, trying for `seconds` (CONNECT_SECONDS, read when called), or None."""
    deadline = asyncio.get_running_loop().time() + (CONNECT_SECONDS if seconds is None else seconds)
    while True:
        try:
            return await asyncio.wait_for(connect_client(address, plugins=list(plugins)), CONNECT_SECONDS)
        except (RuntimeError, asyncio.TimeoutError, OSError):
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(0.25)


def _start_through_proxy(env: Mapping[str, str]) -> None:
    """Ask jupyter-server-proxy for the server's page: it starts the process if it is not running."""
    base = env.get("JUPYTERHUB_SERVICE_URL", "").rstrip("/")
    token = env.get("JUPYTERHUB_API_TOKEN") or env.get("JPY_API_TOKEN") or ""
    if not base:
        return
    request = urllib.request.Request(f"{base}/{PROXY_NAME}/", headers={"Authorization": f"token {token}"})
    try:
        urllib.request.urlopen(request, timeout=PROXY_START_SECONDS).close()
    except Exception:  # noqa: BLE001 - the connection attempt after this says what is wrong, in one line
        pass


def proxy_config(db_file: str | None = None) -> dict[str, dict]:
    """The `c.ServerProxy.servers` entry that runs the course server under JupyterHub and Binder."""
    db_file = db_file or str(Path.home() / ".course" / "temporal.db")
    port = os.environ.get(PORT_ENV) or str(PORT)
    return {PROXY_NAME: {
        "command": [sys.executable, "-m", "durable_course.course_server", "--db", db_file, "--port", port,
                    "--ui-port", "{port}", "--ui-public-path", "{base_url}" + PROXY_NAME],
        "absolute_url": True,
        "timeout": PROXY_START_SECONDS,
        "launcher_entry": {"enabled": True, "title": "Temporal UI"},
        "new_browser_tab": True,
    }}


def main(argv: list[str] | None = None) -> int:
    """Run the course server until SIGTERM or Ctrl-C: `durable-agent server` with a file to persist to."""
    parser = argparse.ArgumentParser(prog="python -m durable_course.course_server", description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="the SQLite file that keeps every chat of the course")
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--ui-port", type=int, default=UI_PORT)
    parser.add_argument("--ui-public-path", default=None, help="the UI's path behind a proxy")
    args = parser.parse_args(argv)
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    from durable_agent import cli

    command = ["server", "--db", args.db, "--port", str(args.port), "--ui-port", str(args.ui_port)]
    if args.ui_public_path:
        command += ["--ui-public-path", args.ui_public_path.replace("//", "/")]
    return cli.main(command)


if __name__ == "__main__":
    sys.exit(main())
