"""Notebook kernels forked from the warm starter: a kernel that runs a worker does not import LiteLLM again.

The course starts many kernels: JupyterLab's, nbval's (one per notebook the test suite checks) and the
grader's (one per submission, `durable_course/grading.py`). Each one that runs a chat imports LiteLLM (4-7 s
of CPU here). When a warm starter is exported (`durable_agent/warm_start.py`, `DURABLE_AGENT_WARM_START`),
this Jupyter kernel provisioner forks the kernel from it instead, as it forks worker processes; otherwise, or
when the starter cannot run the kernel's command the way a new interpreter would, it is Jupyter's own local
provisioner, unchanged.

It is registered with Jupyter (the entry point `durable-warm` in `pyproject.toml`, group
`jupyter_client.kernel_provisioners`) and chosen for every kernel whose kernel spec names no provisioner by
the environment variable `JUPYTER_DEFAULT_PROVISIONER_NAME=durable-warm` (jupyter_client's own switch), which
`use_warm_kernels()` sets. The test suite does (conftest.py), and so do the grader for a class
(`python -m durable_course.exercises check`, through `warm_kernels_here()`), `python3 course.py lab` for its
JupyterLab, and Binder's Jupyter server (its configuration calls `start_for_this_server()`).

On Linux and macOS its kernels talk to Jupyter over Unix sockets (ZeroMQ's `ipc` transport) in a folder only
this user can open, not over TCP ports on 127.0.0.1. Jupyter chooses a TCP kernel's five ports by asking the
system for free ones and closing them; when many processes start at once (a class graded in parallel, the test
suite's workers, Temporal servers and their clients), another process can take one of them before the kernel
binds it, and the kernel dies before it answers ("Kernel died before replying to kernel_info"). A Unix socket's
name is this kernel's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import shutil
import subprocess
import tempfile
from importlib.metadata import entry_points
from typing import Any, Iterator

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import LocalProvisioner

from durable_agent import warm_start
from durable_agent.warm_start import WarmStarter

NAME = "durable-warm"
DEFAULT_PROVISIONER = "JUPYTER_DEFAULT_PROVISIONER_NAME"


class WarmKernelProvisioner(LocalProvisioner):  # type: ignore[misc]
    """Jupyter's local provisioner, forking the kernel from the warm starter when there is one, its channels on
    Unix sockets (on Linux and macOS)."""

    socket_folder: str | None = None  # where this kernel's Unix sockets are (removed when the kernel is)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        manager = self.parent
        if manager is not None and os.name == "posix" and self.socket_folder is None and (
                manager.transport == "tcp" or not os.path.isdir(os.path.dirname(manager.ip))):  # or ours, removed
            # Set before Jupyter writes the connection file. A short path: a Unix socket's is limited to ~100 bytes.
            self.socket_folder = tempfile.mkdtemp(prefix="kernel-")
            manager.transport = "ipc"
            manager.ip = os.path.join(self.socket_folder, "channel")
        return await super().pre_launch(**kwargs)

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart)
        if self.socket_folder and not restart:  # Jupyter has removed the sockets it made (cleanup_ipc_files)
            shutil.rmtree(self.socket_folder, ignore_errors=True)
            self.socket_folder = None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        env = dict(kwargs.get("env") or os.environ)
        if not kwargs.get("independent"):
            env["JPY_PARENT_PID"] = str(os.getpid())  # as jupyter_client's launcher tells a kernel
        process = warm_start.launch_warm(
            [os.path.expanduser(part) for part in cmd], env=env, cwd=kwargs.get("cwd"),
            stdin=subprocess.DEVNULL, stdout=kwargs.get("stdout"), stderr=kwargs.get("stderr"),
            start_new_session=True)  # its own process group, which an interrupt signals
        if process is None:
            return await super().launch_kernel(cmd, **kwargs)
        self.process = process
        self.pid = self.pgid = process.pid
        self.cwd = kwargs.get("cwd", pathlib.Path.cwd())
        return self.connection_info


def registered() -> bool:
    """Whether Jupyter can find this provisioner (the project is installed with its entry points)."""
    return any(point.name == NAME for point in entry_points(group="jupyter_client.kernel_provisioners"))


def use_warm_kernels() -> bool:
    """Make kernels started from now on, by this process and those it starts, use this provisioner (it is
    Jupyter's own local one while no warm starter is exported). False if Jupyter cannot find it."""
    if not registered():
        return False
    os.environ[DEFAULT_PROVISIONER] = NAME
    return True


def _own_starter_wanted() -> bool:
    """No starter exported (an empty DURABLE_AGENT_WARM_START turns them off), and Jupyter told to use this
    provisioner."""
    return warm_start.ENV_VAR not in os.environ and use_warm_kernels()


@contextlib.contextmanager
def warm_kernels_here(timeout: float = 120.0) -> Iterator[WarmStarter | None]:
    """For a command that starts many kernels (the grader): within it, they are forked from a warm starter,
    the one this process was given (`DURABLE_AGENT_WARM_START`; empty turns it off) or one started here and
    stopped at the end (yielded). Changes this process's environment: for a command's own process. When the
    starter cannot start, kernels start as usual."""
    if not _own_starter_wanted():
        yield None
        return
    starter = WarmStarter.start(export=True)
    try:
        asyncio.run(starter.wait_ready(timeout))
    except (RuntimeError, TimeoutError):
        starter.close()
        yield None
        return
    try:
        yield starter
    finally:
        starter.close()


_server_starter: list[WarmStarter] = []  # the Jupyter server's own (start_for_this_server), kept while it runs


def start_for_this_server() -> WarmStarter | None:
    """For a Jupyter server's configuration file (Binder's, written by binder/postBuild): start a warm starter
    that lives as long as this server process, and fork the server's kernels from it, as `python3 course.py
    lab` does for its JupyterLab. Kernels start as usual until it has imported the libraries (seconds), or if it
    cannot start. None, and nothing started, when a starter is exported already (an empty
    `DURABLE_AGENT_WARM_START` turns it off) or Jupyter cannot find the provisioner."""
    if not _own_starter_wanted():
        return None
    try:
        starter = WarmStarter.start(export=True)  # it dies with this process (parent death signal)
    except OSError:  # a speed-up only: the server must start without it
        return None
    _server_starter[:] = [starter]
    return starter
