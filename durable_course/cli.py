"""The `durable-agent` command (also `python -m durable_course`): the agent's commands and the course's.

    durable-agent chat      # one command, a working agent: embedded server + worker + terminal chat
    durable-agent server    # the embedded Temporal dev server with its Web UI, until Ctrl-C
    durable-agent worker    # a worker for a running server (--address, or TEMPORAL_ADDRESS)
    durable-agent bench     # what durability costs per chat turn, next to a plain loop (--json for machines)
    durable-agent load      # many chats at once, worker kills: turns answered, lost, run twice; latency
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Awaitable, Callable

from durable_agent import cli as agent_cli


def _progress(prefix: str):
    return lambda text: print(f"{prefix}: {text}", file=sys.stderr, flush=True)


async def _print_report(command: str, args: argparse.Namespace, measure: Callable[[], Awaitable[Any]],
                        errors: type[Exception] | tuple[type[Exception], ...] = ValueError) -> int:
    """Run one measuring command and print its report: a table, or JSON with --json. A bad option (one of
    `errors`) is one line on stderr and exit status 2."""
    try:
        report = await measure()
    except errors as err:
        print(f"durable-agent {command}: {err}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.table(), flush=True)
    return 0


async def cmd_recovery(args: argparse.Namespace) -> int:
    from .recovery import run_recovery

    return await _print_report("bench", args, lambda: run_recovery(
        starts=args.starts, crashes=args.crashes, standby=not args.no_standby, local=not args.no_standby,
        progress=_progress("measuring")))


def _server_config(items: list[str]) -> dict[str, object]:
    """`--server-config KEY=VALUE` options as dynamic-config settings (VALUE as JSON, else a string)."""
    from .bench import BenchError

    config: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--server-config takes KEY=VALUE (VALUE as JSON, e.g. 1000 or '\"10ms\"'), not {item!r}")
        try:
            config[key.strip()] = json.loads(value)
        except ValueError:
            config[key.strip()] = value  # a bare word: a string
    return config


async def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchError, models_to_measure, run_benchmark

    if args.recovery:
        return await cmd_recovery(args)
    if args.streaming:
        return await cmd_bench_streaming(args)

    async def measure() -> Any:
        if args.model_latency < 0:
            raise BenchError(f"--model-latency must be 0 or more milliseconds, not {args.model_latency:g}")
        loops = [name.strip() for name in args.loops.split(",") if name.strip()]
        return await run_benchmark(iterations=args.iterations, warmup=args.warmup, loops=loops,
                                   models=models_to_measure(latency_ms=args.model_latency),
                                   server_config=_server_config(args.server_config) or None,
                                   progress=_progress("measuring"))

    return await _print_report("bench", args, measure, BenchError)


async def cmd_bench_streaming(args: argparse.Namespace) -> int:
    from .bench import BenchError, run_streaming_benchmark

    return await _print_report("bench", args, lambda: run_streaming_benchmark(
        iterations=args.iterations, warmup=args.warmup), BenchError)


async def cmd_load(args: argparse.Namespace) -> int:
    from .load import run_load

    return await _print_report("load", args, lambda: run_load(
        args.chats, args.turns, args.kill_every, progress=_progress("load")))


async def cmd_class_load(args: argparse.Namespace) -> int:
    from .classroom import run_class_load

    return await _print_report("class-load", args, lambda: run_class_load(
        args.learners, args.turns, progress=_progress("class-load")))


async def cmd_namespaces(args: argparse.Namespace) -> int:
    from durable_agent.server import connect

    from .classroom import create_namespaces

    learners = [name.strip() for name in args.learners.split(",") if name.strip()]
    if not learners:
        print("durable-agent namespaces: give --learners ada,bob,...", file=sys.stderr)
        return 2
    for name in await create_namespaces(await connect(args.address), learners):
        print(f"namespace {name} ready")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, sub = agent_cli.parser(prog="durable-agent")

    bench = sub.add_parser("bench", help="measure what durability costs per chat turn (notebook 06 explains it)")
    bench.add_argument("--iterations", type=int, default=50, help="measured turns per series (default 50)")
    bench.add_argument("--warmup", type=int, default=5, help="turns sent first and not measured (default 5)")
    bench.add_argument("--loops", default="plain,durable,local-model",
                       help="comma-separated, among plain, durable, local-model, unsandboxed, default-converter, "
                            "no-eager, no-cache, default-server, all-cpus-server")
    bench.add_argument("--model-latency", type=float, default=200.0, metavar="MS",
                       help="also measure the offline model answering in MS milliseconds, as a real model takes its "
                            "time (default 200; 0: only the instant offline model)")
    bench.add_argument("--server-config", action="append", default=[], metavar="KEY=VALUE",
                       help="a dynamic-config setting for the benchmark's embedded server, added to the course's "
                            "(repeatable; VALUE as JSON)")
    bench.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    bench.add_argument("--recovery", action="store_true",
                       help="measure recovery instead: worker process start-up, and SIGKILL mid-turn -> reply")
    bench.add_argument("--starts", type=int, default=5, help="--recovery: worker starts measured (default 5)")
    bench.add_argument("--crashes", type=int, default=2,
                       help="--recovery: kills per activity type, each with and without a standby, and with and "
                            "without a supervisor (default 2)")
    bench.add_argument("--no-standby", action="store_true",
                       help="--recovery: skip the runs with a standby worker (and with the model as a local activity)")
    bench.add_argument("--streaming", action="store_true",
                       help="instead: what streaming a reply costs per turn, streamed or not (notebook 12)")

    load = sub.add_parser("load", help="many chats at once against one worker process: turns answered, lost, "
                                       "run twice, latency (optionally SIGKILLing the worker)")
    load.add_argument("--chats", type=int, default=50, help="concurrent chats (default 50)")
    load.add_argument("--turns", type=int, default=10, help="turns per chat (default 10)")
    load.add_argument("--kill-every", type=int, default=None, metavar="TURNS",
                      help="SIGKILL the worker each time TURNS more turns are answered, start a new one "
                           "(default: never)")
    load.add_argument("--json", action="store_true", help="print the report as JSON")

    class_load = sub.add_parser("class-load", help="a class on one shared server: N learners, each with a worker "
                                                   "process of their own, chatting at once (docs/teaching.md)")
    class_load.add_argument("--learners", type=int, default=30, help="learners (default 30)")
    class_load.add_argument("--turns", type=int, default=4, help="chat turns per learner (default 4)")
    class_load.add_argument("--json", action="store_true", help="print the report as JSON")

    namespaces = sub.add_parser("namespaces", help="the teacher's command: a Temporal namespace per learner")
    namespaces.add_argument("--address", required=True, help="the class's Temporal server, HOST:PORT")
    namespaces.add_argument("--learners", required=True, help="comma-separated learner names")

    return agent_cli.run(parser.parse_args(argv), {**agent_cli.COMMANDS, "bench": cmd_bench, "load": cmd_load,
                                                   "class-load": cmd_class_load, "namespaces": cmd_namespaces})
