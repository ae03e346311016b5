"""How long each notebook and each exercise solution takes to run, as the test suite runs it (for docs/teaching.md).

    python -m durable_course.timings                       # every notebook in notebooks/ and solutions/
    python -m durable_course.timings solutions/ex1_new_tool.ipynb --json

Each notebook is run by nbval (`pytest --nbval PATH`, the project's own options, one process) in a fresh
pytest process, one after the other, and the wall time of that process is printed, with the machine's load
average before it started. This is the machine's share of a session (starting a kernel, a Temporal server,
every cell), not the learner's: reading and doing the tasks come on top (docs/teaching.md says how much).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def time_notebook(path: Path) -> dict[str, object]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", str(path)],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    return {"notebook": str(path.relative_to(ROOT)), "seconds": round(seconds, 1), "passed": done.returncode == 0,
            "load_before": round(load, 2) if load is not None else None, "pytest": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_course.timings", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.paths] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + sorted(
        (ROOT / "solutions").glob("ex*.ipynb"))
    rows = []
    for path in paths:
        print(f"running {path.relative_to(ROOT)} under nbval ...", file=sys.stderr, flush=True)
        rows.append(time_notebook(path))
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'notebook':<44} {'seconds':>7}  {'load':>5}  result")
        for row in rows:
            print(f"{row['notebook']:<44} {row['seconds']:>7}  {row['load_before']!s:>5}  "
                  f"{'passed' if row['passed'] else 'FAILED: ' + str(row['pytest'])}")
        print(f"{'total':<44} {sum(r['seconds'] for r in rows):>7.1f}")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
