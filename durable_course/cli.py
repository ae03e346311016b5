"""The `durable-agent` command (also `python -m durable_course`): the agent's commands and the course's.

    durable-agent chat      # one command, a working agent: embedded server + worker + terminal chat
    durable-agent server    # the embedded Temporal dev server with its Web UI, until Ctrl-C
    durable-agent worker    # a worker for a running server (--address, or TEMPORAL_ADDRESS)
    durable-agent bench     # what durability costs per chat turn, next to a plain loop (--json for machines)
    durable-agent load      # many chats at once, worker kills: turns answered, lost, run twice; latency
"""

from __future__ import annotations

import argparse
import sys

from durable_agent import cli as agent_cli


async def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchError, run_benchmark

    if args.streaming:
        return await cmd_bench_streaming(args)
    loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    try:
        report = await run_benchmark(iterations=args.iterations, warmup=args.warmup, loops=loops,
                                     progress=lambda text: print(f"measuring: {text}", file=sys.stderr, flush=True))
    except BenchError as err:
        print(f"durable-agent bench: {err}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.table(), flush=True)
    return 0


async def cmd_bench_streaming(args: argparse.Namespace) -> int:
    from .bench import BenchError, run_streaming_benchmark

    try:
        report = await run_streaming_benchmark(iterations=args.iterations, warmup=args.warmup)
    except BenchError as err:
        print(f"durable-agent bench: {err}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.table(), flush=True)
    return 0


async def cmd_load(args: argparse.Namespace) -> int:
    from .load import run_load

    try:
        report = await run_load(args.chats, args.turns, args.kill_every,
                                progress=lambda text: print(f"load: {text}", file=sys.stderr, flush=True))
    except ValueError as err:
        print(f"durable-agent load: {err}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.table(), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, sub = agent_cli.parser(prog="durable-agent")

    bench = sub.add_parser("bench", help="measure what durability costs per chat turn (notebook 06 explains it)")
    bench.add_argument("--iterations", type=int, default=50, help="measured turns per series (default 50)")
    bench.add_argument("--warmup", type=int, default=5, help="turns sent first and not measured (default 5)")
    bench.add_argument("--loops", default="plain,durable,local-model",
                       help="comma-separated, among plain, durable, local-model, unsandboxed, pydantic, no-eager, "
                            "no-cache")
    bench.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
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

    return agent_cli.run(parser.parse_args(argv), {**agent_cli.COMMANDS, "bench": cmd_bench, "load": cmd_load})
