"""A worker for a framework's agent, in this process or in its own (so a lesson can SIGKILL it).

    python -m durable_course.frameworks worker openai-agents --address 127.0.0.1:7233     # task queue openai-agents
    python -m durable_course.frameworks worker openai-agents pydantic-ai --address ... --plugin durable_course.faults:fault_lab_plugin

A framework's Temporal plugin goes on the worker's *client*: each brings its own data converter (OpenAI's and
Pydantic AI's are different, so one worker serves one framework; one process can run a worker for each, and
imports LiteLLM once). Other plugins (the course's fault lab) go
on the worker, as for the course's own agent. The process prints `durable_agent.worker.READY_LINE` once it
polls, so `WorkerProcess.wait_ready()` works for it as for the course's worker process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import sys
from types import ModuleType
from typing import Any, Sequence

from temporalio.client import Client
from temporalio.worker import Plugin, Worker

from durable_agent import llm
from durable_agent.config import settings
from durable_agent.worker import READY_LINE, STICKY_TIMEOUT, WorkerProcess, build_id, load_plugin

FRAMEWORKS = {
    "openai-agents": "durable_course.frameworks.openai_agents",
    "pydantic-ai": "durable_course.frameworks.pydantic_ai_agent",
}


def framework(name: str) -> ModuleType:
    """The module of a framework's agent: it has `plugin()`, `prepare()`, `WORKFLOW` and `ACTIVITIES`."""
    if name not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; choose one of {', '.join(FRAMEWORKS)}")
    return importlib.import_module(FRAMEWORKS[name])


async def connect(name: str, address: str, namespace: str = "default") -> Client:
    """A client with the framework's plugin (its data converter): a worker for that framework needs it."""
    return await Client.connect(address, namespace=namespace, plugins=[framework(name).plugin()])


def create_worker(client: Client, name: str, task_queue: str, plugins: Sequence[Plugin] = (), **options: Any) -> Worker:
    module = framework(name)
    llm.preload()  # LiteLLM takes seconds to import: in a background thread, so the worker polls at once
    options.setdefault("sticky_queue_schedule_to_start_timeout", STICKY_TIMEOUT)
    options.setdefault("build_id", f"{build_id()}-{name}")
    return Worker(client, task_queue=task_queue, workflows=[module.WORKFLOW], activities=list(module.ACTIVITIES),
                  plugins=list(plugins), **options)


async def serve(names: Sequence[str], address: str, namespace: str = "default", queue_prefix: str = "",
                plugins: Sequence[str] = ()) -> None:
    """Run a worker for each framework named (one process, one import of LiteLLM), until SIGINT or SIGTERM.
    Each polls the task queue `queue_prefix + name`."""
    workers = []
    for name in names:
        client = await connect(name, address, namespace)
        await asyncio.to_thread(framework(name).prepare)  # ready means ready to answer, not to start importing
        workers.append(create_worker(client, name, queue_prefix + name, [load_plugin(p) for p in plugins]))
    if settings().offline:  # LiteLLM loads more of itself on its first call: make that call now, for free
        await llm.complete([{"role": "user", "content": "hello"}], [], llm.LLMConfig())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as running:
        for worker in workers:
            await running.enter_async_context(worker)
        print(f"{READY_LINE} ({', '.join(names)}, pid {os.getpid()})", flush=True)
        await stop.wait()
    print("framework workers stopped", flush=True)


async def start_worker_process(names: Sequence[str], address: str, *, namespace: str = "default",
                               queue_prefix: str = "", plugins: Sequence[str] = (),
                               env: dict[str, str] | None = None, ready_timeout: float = 60.0) -> WorkerProcess:
    """Start `python -m durable_course.frameworks worker NAME... ` and wait until it polls its task queues."""
    if isinstance(names, str) or not names:
        raise ValueError(f"give a list of framework names, e.g. ['pydantic-ai'], not {names!r}")
    unknown = [name for name in names if name not in FRAMEWORKS]
    if unknown:
        raise ValueError(f"unknown framework {unknown[0]!r}; choose one of {', '.join(FRAMEWORKS)}")
    command = [sys.executable, "-m", "durable_course.frameworks", "worker", *names, "--address", address,
               "--namespace", namespace, "--queue-prefix", queue_prefix]
    for plugin in plugins:
        command += ["--plugin", plugin]
    worker = WorkerProcess.launch(command, env, log_prefix="framework-worker-")
    try:
        await worker.wait_ready(ready_timeout)
    except BaseException:
        worker.kill()
        raise
    return worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_course.frameworks")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("worker", help="run a worker for each framework's agent, in this process")
    run.add_argument("framework", nargs="+", choices=sorted(FRAMEWORKS))
    run.add_argument("--address", required=True)
    run.add_argument("--namespace", default="default")
    run.add_argument("--queue-prefix", default="", help="each framework polls the task queue PREFIX + its name")
    run.add_argument("--plugin", action="append", default=[], help="a worker plugin, module:name (repeatable)")
    args = parser.parse_args(argv)
    from durable_agent.logs import quiet_logs

    quiet_logs()
    asyncio.run(serve(args.framework, args.address, args.namespace, args.queue_prefix, args.plugin))
    os._exit(0)  # a clean stop is done; avoid the SDK's crash at interpreter exit (NOTES: sdk-python#300)
