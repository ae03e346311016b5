"""The agent's commands: `python -m durable_agent chat | server | worker`.

    python -m durable_agent chat      # one command, a working agent: embedded server + worker + terminal chat
    python -m durable_agent server    # the embedded Temporal dev server with its Web UI, until Ctrl-C
    python -m durable_agent worker    # a worker for a running server (--address, or TEMPORAL_ADDRESS);
                                      # --processes 2: two worker processes under a supervisor (supervisor.py)
    python -m durable_agent warm-start --socket PATH   # a warm starter (warm_start.py) answering on PATH;
                                      # processes started with DURABLE_AGENT_WARM_START=PATH are forked from it

`worker` and `chat` take `--plugin MODULE:NAME` (repeatable): a Temporal worker plugin, or a function that
returns one, added to the worker from outside (the course's fault lab is one). The `durable-agent` command
(durable_course/cli.py) has these commands and the course's own (bench, load).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from .config import settings

QUIT_WORDS = {"quit", "exit", "/quit", "/exit"}


async def _connect(address: str | None, namespace: str | None):
    from .server import Temporal, connect, start_temporal

    if address:
        client = await connect(address, namespace or "default")
        return Temporal(client, address, namespace or "default", ui_url=None)
    return await start_temporal()


async def cmd_server(args: argparse.Namespace) -> int:
    from .server import start_temporal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    temporal = await start_temporal(db_file=args.db, port=args.port, ui_port=args.ui_port,
                                     ui_public_path=args.ui_public_path, cpus=None)  # others' workers share it
    print(f"Temporal dev server running at {temporal.address} (namespace {temporal.namespace})")
    print(f"Web UI: {temporal.ui_url}")
    print(f"Persisted to: {args.db}" if args.db else "In memory: everything is gone when it stops.")
    print(f"Start a worker with: durable-agent worker --address {temporal.address}")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        await stop.wait()
    finally:
        await temporal.shutdown()  # (if this process is killed outright, the server dies with it anyway)
    print("Temporal dev server stopped", flush=True)
    return 0


async def cmd_worker(args: argparse.Namespace) -> int:
    from .server import connect, start_temporal
    from .worker import serve

    if args.processes < 0:
        print(f"durable-agent worker: --processes must be 0 (this process) or more, not {args.processes}",
              file=sys.stderr)
        return 2
    if args.address:
        client = await connect(args.address, args.namespace or "default")
    elif settings().temporal_address:
        client = (await start_temporal()).client
    else:
        print("durable-agent worker: give --address HOST:PORT (see `durable-agent server`) or set "
              "TEMPORAL_ADDRESS", file=sys.stderr)
        return 2
    if args.processes:
        from .supervisor import supervise

        await supervise(client, args.address or settings().temporal_address, processes=args.processes,
                        namespace=args.namespace or "default", task_queue=args.task_queue, plugins=args.plugin)
        return 0
    await serve(client, args.task_queue, plugins=args.plugin)
    return 0


async def cmd_chat(args: argparse.Namespace) -> int:
    from .logs import quiet_logs
    from .session import ChatError, format_transcript, start_chat
    from .worker import load_plugin, start_worker

    log_file = quiet_logs()  # a failed attempt is one line here; its traceback goes to the log file
    temporal = await _connect(args.address, args.namespace)
    worker = None if args.no_worker else await start_worker(temporal.client,
                                                             plugins=[load_plugin(p) for p in args.plugin])
    try:
        chat = await start_chat(temporal.client)
        print(f"Chat workflow {chat.workflow_id} on {temporal.address} (model: {settings().llm_model})")
        if temporal.ui_url:
            print(f"Watch it in the Temporal UI: {temporal.workflow_url(chat.workflow_id)}")
        print(f"Type a message; 'quit' or 'exit' ends the chat. (Details of failed attempts: {log_file})\n",
              flush=True)
        loop = asyncio.get_running_loop()
        while True:
            try:
                text = await loop.run_in_executor(None, input, "You: ")
            except EOFError:
                print()
                break
            if not text.strip():
                continue
            if text.strip().lower() in QUIT_WORDS:
                break
            try:
                reply = await chat.send(text)
            except ChatError as err:
                print(f"[{err}]", flush=True)
                continue
            print(f"Agent: {reply.text}", flush=True)
            if reply.chat_ended:
                break
        transcript = await chat.end()
        print(f"\n--- Transcript ({transcript.turns} turns) ---\n{format_transcript(transcript.messages)}", flush=True)
    finally:
        if worker:
            await worker.stop()
        await temporal.shutdown()
    return 0


COMMANDS = {"server": cmd_server, "worker": cmd_worker, "chat": cmd_chat}


def parser(prog: str = "python -m durable_agent") -> tuple[argparse.ArgumentParser, Any]:
    """The agent's command line; the course's `durable-agent` command adds its own commands to it."""
    parser = argparse.ArgumentParser(prog=prog, description="A durable AI agent on Temporal.")
    sub = parser.add_subparsers(dest="command", required=True)

    server = sub.add_parser("server", help="run the embedded Temporal dev server and its Web UI")
    server.add_argument("--db", help="persist to this SQLite file (default: in memory)")
    server.add_argument("--port", type=int, default=7233)
    server.add_argument("--ui-port", type=int, default=8233)
    server.add_argument("--ui-public-path", default=None, help="the path the Web UI is served under behind a proxy")

    for name, text in (("worker", "run a worker"), ("chat", "chat with the agent in the terminal")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--address", help="Temporal server HOST:PORT (default: TEMPORAL_ADDRESS, else embedded)")
        p.add_argument("--namespace", default=None)
        p.add_argument("--plugin", action="append", default=[], metavar="MODULE:NAME",
                       help="add this Temporal worker plugin to the worker (repeatable)")
        if name == "worker":
            p.add_argument("--task-queue", default=None)
            p.add_argument("--processes", type=int, default=0, metavar="N",
                           help="run N worker processes under a supervisor that releases a dead one's work and "
                                "starts another (default: this process is the worker)")
        else:
            p.add_argument("--no-worker", action="store_true", help="do not run a worker in this process")

    warm = sub.add_parser("warm-start", help="import the libraries once, then fork worker processes and kernels "
                                             "asked for on a Unix socket (warm_start.py)")
    warm.add_argument("--socket", required=True, help="the Unix socket to answer on (it must not exist yet)")
    warm.add_argument("--preload", action="append", default=[], metavar="MODULE",
                      help="a module to import first (repeatable; default: LiteLLM and temporalio)")
    return parser, sub


def run(args: argparse.Namespace, commands: dict) -> int:
    """Run the chosen command, then leave at once (see below)."""
    if args.command == "warm-start":  # not under asyncio: each child it forks runs an event loop of its own
        from .warm_start import PRELOAD, serve

        if os.path.exists(args.socket):
            print(f"durable-agent warm-start: {args.socket} already exists", file=sys.stderr)
            sys.exit(2)
        serve(args.socket, args.preload or PRELOAD)
        sys.exit(0)
    try:
        code = asyncio.run(commands[args.command](args))
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    # A clean exit after a worker has run can crash in interpreter teardown (temporalio/sdk-python#300);
    # everything has been shut down and flushed, so leave at once.
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    return run(parser()[0].parse_args(argv), COMMANDS)
