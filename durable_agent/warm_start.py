"""Warm start: a new worker process in a fraction of a second, forked from a parent that has already imported
the libraries a worker needs.

Primitive 2 (managed side effects), at its edge: how fast a crashed worker is replaced. A worker process
started from scratch spends its first seconds importing; LiteLLM alone costs 4-7 s of CPU here, and a
restarted worker's first model call waits for it. A *warm starter* pays that once. It imports the libraries
(`PRELOAD`), then waits on a Unix socket; for each request it forks, and the child runs `python -m MODULE ARGS`
with the requester's environment, folder and output files, as `subprocess.Popen` would have. The child imports
this project's own code (the agent, your tools) afresh, so the file you edited is the one that runs; only the
libraries come from the starter's memory (shared with it, page by page, until written).

    starter = WarmStarter.start()       # once: the import's seconds, in the starter's own process
    await starter.wait_ready()
    process = starter.launch([sys.executable, "-m", "durable_agent", "worker", ...], env=env, stdout=log)
    process.pid, process.poll(), process.kill()      # as with subprocess.Popen
    starter.close()

`launch(command, ..., warm=...)` is what code that starts worker processes calls (`worker.WorkerProcess.launch`,
`start_worker_process(..., warm=...)`): `warm` is a starter, False (start it cold), or True, the default: the
warm starter named by the environment variable `DURABLE_AGENT_WARM_START` (its socket; set by
`WarmStarter.start(export=True)`, and inherited by the processes started after it, kernels included). It falls
back to `subprocess.Popen` when there is none, when it is still importing, or when it cannot run the command
the way a new interpreter would:

- only `python -m MODULE ...` with the starter's own interpreter;
- libraries read some environment variables once, when they are imported (`LITELLM_*`, Python's own
  `PYTHON*` settings other than PYTHONPATH, PYTHONUNBUFFERED and PYTHONDONTWRITEBYTECODE, which the child
  applies): a request whose values differ from the starter's is started cold.

Durability gives nothing up: the child is an ordinary process (SIGKILL it, it dies; its exit status comes back
through the starter). When the starter exits, its children are sent SIGKILL (a worker never outlives the
notebook or test run that started it). `durable-agent bench --recovery` measures a restart both ways.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import runpy
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Sequence

from .server import parent_death_signal

ENV_VAR = "DURABLE_AGENT_WARM_START"
# What a worker imports that takes long and never changes while a course runs.
PRELOAD = ("litellm", "temporalio.client", "temporalio.worker", "temporalio.workflow")
# Set before LiteLLM is imported, as `llm.litellm_module` does: no network call for its price list.
LITELLM_OFFLINE = ("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Environment variables the child applies itself; any other PYTHON* or LITELLM_* must match the starter's.
APPLIED_IN_CHILD = frozenset({"PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})
READ_AT_IMPORT = ("PYTHON", "LITELLM_")
MESSAGE_BYTES = 1 << 20  # one request: a command line and an environment


def read_at_import(env: dict[str, str]) -> dict[str, str]:
    """The variables of `env` that the libraries read when imported (LiteLLM's price list: offline unless set)."""
    found = {name: value for name, value in env.items()
             if name.startswith(READ_AT_IMPORT) and name not in APPLIED_IN_CHILD}
    found.setdefault(*LITELLM_OFFLINE)
    return found


def module_of(command: Sequence[str]) -> str | None:
    """MODULE, when `command` is `python -m MODULE ...` with this interpreter; None otherwise."""
    if len(command) >= 3 and command[0] == sys.executable and command[1] == "-m" and command[2]:
        return command[2]
    return None


class WarmProcess:
    """A process a warm starter forked, with what `subprocess.Popen` offers for it: `pid`, `args`,
    `returncode`, `poll()`, `wait()`, `send_signal()`, `terminate()`, `kill()`. Its exit status comes from the
    starter (its parent) over the request's connection."""

    def __init__(self, pid: int, connection: socket.socket, args: Sequence[str]):
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None  # its files are the requester's own (no pipes)
        self._connection = connection

    def __repr__(self) -> str:
        return f"<WarmProcess pid {self.pid} returncode {self.returncode}>"

    def poll(self) -> int | None:
        if self.returncode is None:
            self._receive(timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._receive(timeout=left if left is None else min(left, 1.0))
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass  # it exited just now; the starter reports how

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _receive(self, timeout: float | None) -> None:
        self._connection.settimeout(timeout)
        try:
            data = self._connection.recv(MESSAGE_BYTES)
        except (BlockingIOError, socket.timeout):
            return
        except OSError:
            data = b""
        if data:
            self.returncode = int(json.loads(data)["exit"])
        elif not _exists(self.pid):
            # The starter is gone (its children get SIGKILL then): no one is left to say how it ended.
            self.returncode = -signal.SIGKILL
        elif timeout is None or timeout > 0:  # the starter is gone and the child not yet: wait a little (not in poll)
            time.sleep(0.05 if timeout is None else min(timeout, 0.05))
        if self.returncode is not None:
            self._connection.close()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class WarmStarter:
    """A running warm starter: its process and the Unix socket it answers on."""

    process: subprocess.Popen[bytes]
    socket_path: str
    log_path: Path
    exported: bool = False
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, preload: Sequence[str] = PRELOAD, *, export: bool = False) -> "WarmStarter":
        """Start a warm starter importing `preload`; it answers once they are imported (`wait_ready`). With
        `export`, processes started from now on (kernels, the CLI, worker processes) use it too."""
        folder = tempfile.mkdtemp(prefix="durable-agent-warm-")
        socket_path = os.path.join(folder, "socket")
        log_path = Path(folder) / "starter.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "durable_agent", "warm-start", "--socket", socket_path,
                 *(part for name in preload for part in ("--preload", name))],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=parent_death_signal() if sys.platform == "linux" else None)
        starter = cls(process, socket_path, log_path)
        if export:
            os.environ[ENV_VAR] = socket_path
            starter.exported = True
        return starter

    @property
    def ready(self) -> bool:
        return self.process.poll() is None and os.path.exists(self.socket_path)

    async def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until the libraries are imported; seconds since the start."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.process.poll() is not None:
                raise RuntimeError(f"the warm starter exited with code {self.process.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the warm starter was not ready after {timeout} s")
            await asyncio.sleep(0.05)
        return time.monotonic() - self.started

    def launch(self, command: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
               stdin: IO[Any] | int | None = None, stdout: IO[Any] | int | None = None,
               stderr: IO[Any] | int | None = None, start_new_session: bool = False) -> WarmProcess | None:
        """Fork `command` (`python -m MODULE ...`) from the starter; None when it cannot (see the module's
        docstring): the caller then starts it cold."""
        return request(self.socket_path, command, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
                       start_new_session=start_new_session)

    def close(self) -> None:
        """Stop the starter (and so any process it started that is still running)."""
        if self.exported and os.environ.get(ENV_VAR) == self.socket_path:
            del os.environ[ENV_VAR]
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(os.path.dirname(self.socket_path), ignore_errors=True)


def launch(command: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
           stdin: IO[Any] | int | None = None, stdout: IO[Any] | int | None = None,
           stderr: IO[Any] | int | None = None, start_new_session: bool = False, warm: "WarmStarter | bool" = True
           ) -> subprocess.Popen[bytes] | WarmProcess:
    """Start `command` with `env` (the whole environment; default: this process's): forked from a warm starter
    if it can (`warm`: a starter, True for the one in `DURABLE_AGENT_WARM_START`, False for none), else with
    `subprocess.Popen`."""
    options = dict(env=dict(os.environ if env is None else env), cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
                   start_new_session=start_new_session)  # the same names as subprocess.Popen's
    return launch_warm(command, warm=warm, **options) or subprocess.Popen(list(command), **options)


def launch_warm(command: Sequence[str], *, warm: "WarmStarter | bool" = True, **options: Any) -> WarmProcess | None:
    """`command` forked from a warm starter (`warm`: a starter, True for the one in `DURABLE_AGENT_WARM_START`,
    False for none); None when there is none or it cannot run it (the caller starts it its own way). `options`
    as for `WarmStarter.launch`."""
    path = warm.socket_path if isinstance(warm, WarmStarter) else os.environ.get(ENV_VAR) if warm else None
    return request(path, command, **options) if path else None


def request(socket_path: str, command: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
            stdin: IO[Any] | int | None = None, stdout: IO[Any] | int | None = None,
            stderr: IO[Any] | int | None = None, start_new_session: bool = False) -> WarmProcess | None:
    """Ask the starter at `socket_path` to fork `command`; None if it cannot or is not there."""
    if module_of(command) is None:
        return None
    message = json.dumps({"argv": list(command), "env": dict(os.environ if env is None else env),
                          "cwd": os.path.abspath(cwd or os.getcwd()), "new_session": start_new_session}).encode()
    if len(message) > MESSAGE_BYTES:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    opened: list[int] = []
    try:
        connection.settimeout(10)
        connection.connect(socket_path)
        fds = [_fd(stream, default, opened) for stream, default in ((stdin, 0), (stdout, 1), (stderr, 2))]
        if stderr == subprocess.STDOUT:
            fds[2] = fds[1]
        socket.send_fds(connection, [message], fds)
        answer = json.loads(connection.recv(MESSAGE_BYTES) or b"{}")
    except (OSError, ValueError):
        connection.close()
        return None  # not there (yet), or gone: start it cold
    finally:
        for fd in opened:
            os.close(fd)
    if "pid" not in answer:
        connection.close()
        return None  # the starter cannot run it the way a new interpreter would
    return WarmProcess(int(answer["pid"]), connection, command)


def _fd(stream: IO[Any] | int | None, default: int, opened: list[int]) -> int:
    """The file descriptor for a child's stdin/stdout/stderr given as Popen takes them."""
    if stream is None:
        return default
    if stream == subprocess.DEVNULL:
        opened.append(os.open(os.devnull, os.O_RDWR))
        return opened[-1]
    if stream == subprocess.STDOUT:
        return default  # replaced by stdout's (request)
    if isinstance(stream, int):
        return stream
    return stream.fileno()


# ---- the starter's own process ------------------------------------------------------------------------------


def serve(socket_path: str, preload: Sequence[str]) -> None:
    """Import `preload`, then fork a child for each request on `socket_path` until SIGTERM."""
    had_at_import = read_at_import(dict(os.environ))  # what the imports below read, compared with each request's
    os.environ.setdefault(*LITELLM_OFFLINE)
    started = time.monotonic()
    for name in preload:
        importlib.import_module(name)
    # This project's own modules are imported afresh by each child (an edited file is what runs).
    for name in [name for name in sys.modules if name.split(".")[0] in ("durable_agent", "durable_course")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    gc.collect()
    gc.freeze()  # the children share these objects' pages instead of copying them when the collector runs
    own_path = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    library_path = [entry for entry in sys.path[1:] if entry not in own_path]

    wakeup_read, wakeup_write = socket.socketpair()
    wakeup_write.setblocking(False)
    signal.set_wakeup_fd(wakeup_write.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Ctrl-C in a terminal reaches the whole process group: the supervisor that started this stops its workers
    # gracefully, then this starter (`close`); the starter must not die first, taking its children with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(socket_path + ".new")
    listener.listen(64)
    os.rename(socket_path + ".new", socket_path)  # answers from the moment the path exists
    print(f"durable-agent warm starter ready: {', '.join(preload)} imported in "
          f"{time.monotonic() - started:.1f} s (pid {os.getpid()})", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wakeup_read, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    me = os.getpid()
    try:
        while True:
            for key, _ in selector.select():
                if key.fileobj is listener:
                    connection, _ = listener.accept()
                    child = _fork_for(connection, had_at_import, library_path, own_sockets=(
                        listener, wakeup_read, wakeup_write, *children.values()))
                    if child > 0:
                        children[child] = connection
                        selector.register(connection, selectors.EVENT_READ)
                elif key.fileobj is wakeup_read:
                    wakeup_read.recv(4096)
                else:  # a requester closed its connection: its child runs on, unreported
                    selector.unregister(key.fileobj)
            _reap(children, selector)
    finally:
        if os.getpid() == me:
            for path in (socket_path, socket_path + ".new"):
                if os.path.exists(path):
                    os.unlink(path)


def _fork_for(connection: socket.socket, had_at_import: dict[str, str], library_path: list[str],
              own_sockets: Sequence[socket.socket]) -> int:
    """Fork for one request: the child's pid (-1 when refused). The child runs the command and exits (`sys.exit`
    unwinds out of `serve`, so atexit handlers and threads end as in any interpreter)."""
    connection.settimeout(10)
    try:
        message, fds, _, _ = socket.recv_fds(connection, MESSAGE_BYTES, 3)
        wanted = json.loads(message)
        argv, env, cwd = list(wanted["argv"]), dict(wanted["env"]), str(wanted["cwd"])
        new_session = bool(wanted.get("new_session"))
    except (OSError, ValueError, KeyError, TypeError) as error:
        _answer(connection, {"refused": f"unreadable request: {error}"})
        connection.close()
        return -1
    wanted_at_import = read_at_import(env)
    differ = sorted(name for name in {*wanted_at_import, *had_at_import}
                    if wanted_at_import.get(name) != had_at_import.get(name))
    refused = ("not `python -m MODULE` with this interpreter" if module_of(argv) is None or len(fds) != 3
               else f"imports read {', '.join(differ)} differently" if differ else None)
    if refused:
        for fd in fds:
            os.close(fd)
        print(f"refused {argv[:3]}: {refused}", flush=True)
        _answer(connection, {"refused": refused})
        connection.close()
        return -1
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        exit_code = _run_child(argv, env, cwd, fds, library_path, new_session,
                               own_sockets=(*own_sockets, connection))
        sys.exit(exit_code)
    for fd in fds:
        os.close(fd)
    print(f"forked pid {pid}: python -m {argv[2]}", flush=True)
    _answer(connection, {"pid": pid})
    connection.setblocking(False)
    return pid


def _run_child(argv: list[str], env: dict[str, str], cwd: str, fds: list[int], library_path: list[str],
               new_session: bool, own_sockets: Sequence[socket.socket]) -> int:
    """In the forked child: become `python -m MODULE ARGS` started in `cwd` with `env`, and run it."""
    if new_session:
        os.setsid()  # its own process group: a signal to the group (a kernel's interrupt) reaches only it
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt, as in any interpreter
    if sys.platform == "linux":
        parent_death_signal(signal.SIGKILL)()  # it dies with the starter
    for own in own_sockets:
        own.close()
    stdin, stdout, stderr = fds
    os.dup2(stdin, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # What the starter's libraries read from its environment once and kept: read again from the request's.
    tempfile.tempdir = None  # TMPDIR
    if hasattr(time, "tzset"):
        time.tzset()  # TZ
    own_path = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[:] = [cwd, *own_path, *library_path]
    importlib.invalidate_caches()
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    if env.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    module = argv[2]
    sys.argv = [argv[0], *argv[3:]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as ended:
        code = ended.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # as the interpreter does: the traceback, then death by SIGINT
        traceback.print_exc()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _answer(connection: socket.socket, answer: dict[str, Any]) -> None:
    try:
        connection.send(json.dumps(answer).encode())
    except OSError:
        pass  # the requester is gone


def _reap(children: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is not None:
            _answer(connection, {"exit": os.waitstatus_to_exitcode(status)})
            if _registered(selector, connection):
                selector.unregister(connection)
            connection.close()


def _registered(selector: selectors.BaseSelector, connection: socket.socket) -> bool:
    try:
        selector.get_key(connection)
    except (KeyError, ValueError):
        return False
    return True
