"""Exercises from one source: generate `exercises/` from `solutions/`, and grade a folder of submissions.

    python -m durable_course.exercises generate            # solutions/ -> exercises/ (commit the result)
    python -m durable_course.exercises generate --check    # exit 1 if exercises/ (or a solution's marks) is out of date
    python -m durable_course.exercises check FOLDER        # grade every notebook in FOLDER, print a table
    python -m durable_course.exercises check FOLDER --json results.json   # ... and keep every result

The solution notebooks are the source of truth. In a code cell, the lines between `# BEGIN SOLUTION` and
`# END SOLUTION` are the learner's part: the exercise gets `# YOUR CODE HERE` instead, plus the block's
*stub*, its lines that start with `#: ` (comments in the solution, code in the exercise; `pass` when there
are none). In a markdown cell, `<!-- BEGIN SOLUTION -->` ... `<!-- END SOLUTION -->` is removed. Outputs and
execution counts are cleared, so a learner starts from a clean notebook.

Every cell carries nbgrader's cell metadata (`metadata.nbgrader`, schema 3), written into the solutions by
`generate`: a cell with a solution block is an answer cell (`solution: true`), the cell that calls
`checks.check_*` is a grade cell (`grade: true, locked: true`, `points` = its criteria), every other cell is
read-only (`locked: true`); `grade_id` is `exN-answer|check|cell-<cell id>`. nbgrader reads the same
`BEGIN SOLUTION` / `END SOLUTION` markers, so a teacher who uses nbgrader can import `solutions/` as its source.

`check` is the grader (`durable_course/grading.py`): it rebuilds each submission from the solution notebook,
keeping only the learner's answer cells, runs its own check cell and reads results from a file it chose.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

from .grading import exercise_of, format_table, grade_folder, mark_for_nbgrader
from .warm_kernels import warm_kernels_here

BEGIN, END, STUB = "# BEGIN SOLUTION", "# END SOLUTION", "#: "
MD_SOLUTION = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->\n?", re.S)
ROOT = Path(__file__).resolve().parent.parent


class SolutionMarkerError(ValueError):
    """A solution notebook's markers do not pair up; the message names the notebook and the cell."""


def strip_code(source: str, where: str = "cell") -> str:
    """The exercise version of one code cell's source."""
    out: list[str] = []
    block: list[str] | None = None
    indent = ""
    for number, line in enumerate(source.split("\n"), 1):
        marker = line.strip()
        if marker == BEGIN:
            if block is not None:
                raise SolutionMarkerError(f"{where}, line {number}: {BEGIN} inside another solution block")
            block, indent = [], line[: len(line) - len(line.lstrip())]
        elif marker == END:
            if block is None:
                raise SolutionMarkerError(f"{where}, line {number}: {END} without {BEGIN}")
            out.append(f"{indent}# YOUR CODE HERE")
            out.extend(block or [f"{indent}pass"])
            block = None
        elif block is not None:
            if marker == STUB.strip() or marker.startswith(STUB):  # a stub line: code in the exercise
                block.append((line[: line.index(STUB.strip())] + marker[len(STUB):]).rstrip())
        else:
            out.append(line)
    if block is not None:
        raise SolutionMarkerError(f"{where}: {BEGIN} is never closed by {END}")
    return "\n".join(out)


def to_exercise(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A copy of a solution notebook with the solutions and all outputs removed."""
    exercise = nbformat.from_dict(solution)
    for index, cell in enumerate(exercise.cells):
        where = f"{name}, cell {index}"
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.source = strip_code(cell.source, where)
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source = MD_SOLUTION.sub("", cell.source)
            if "BEGIN SOLUTION" in cell.source or "END SOLUTION" in cell.source:
                raise SolutionMarkerError(f"{where}: unpaired <!-- BEGIN/END SOLUTION --> marker")
    return exercise


def exercise_text(solution_path: Path) -> str:
    solution = nbformat.read(solution_path, as_version=4)
    mark_for_nbgrader(solution, exercise_of(solution_path.stem))
    return nbformat.writes(to_exercise(solution, solution_path.name)) + "\n"


def generate(solutions: Path, exercises: Path, check_only: bool = False) -> list[str]:
    """Write (or, with `check_only`, compare) every exercise notebook, and the nbgrader marks of every solution;
    return the names that differ(ed)."""
    changed = []
    sources = sorted(solutions.glob("ex*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no ex*.ipynb notebooks in {solutions}")
    for path in sources:
        solution = nbformat.read(path, as_version=4)
        if mark_for_nbgrader(solution, exercise_of(path.stem)):
            changed.append(f"solutions/{path.name} (nbgrader marks)")
            if not check_only:
                path.write_text(nbformat.writes(solution) + "\n", encoding="utf-8")
        target = exercises / path.name
        text = nbformat.writes(to_exercise(solution, path.name)) + "\n"
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            changed.append(path.name)
            if not check_only:
                exercises.mkdir(exist_ok=True)
                target.write_text(text, encoding="utf-8")
    stale = sorted(p.name for p in exercises.glob("ex*.ipynb") if not (solutions / p.name).exists())
    changed.extend(f"{name} (no solution)" for name in stale)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_course.exercises", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write exercises/ from solutions/")
    gen.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    gen.add_argument("--exercises", type=Path, default=ROOT / "exercises")
    gen.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    chk = sub.add_parser("check", help="grade every notebook in a folder (the grader runs its own checks)")
    chk.add_argument("folder", type=Path)
    chk.add_argument("--json", type=Path, help="also write every check result to this JSON file")
    chk.add_argument("--timeout", type=int, default=60, help="seconds for each cell (the check cell gets 5 times it)")
    chk.add_argument("--jobs", type=int, default=None,
                     help="notebooks graded side by side (default: one more than the CPUs, at most 8)")
    chk.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    chk.add_argument("--exercises", type=Path, default=ROOT / "exercises")
    args = parser.parse_args(argv)

    try:
        if args.command == "generate":
            changed = generate(args.solutions, args.exercises, check_only=args.check)
            if args.check and changed:
                print(f"exercises/ is out of date for: {', '.join(changed)}. Run: python -m durable_course.exercises "
                      "generate", file=sys.stderr)
                return 1
            print(f"{'out of date' if args.check else 'written'}: {', '.join(changed) or 'nothing, all up to date'}")
            return 0
        if not args.folder.is_dir():
            print(f"{args.folder} is not a folder", file=sys.stderr)
            return 2
        if args.jobs is not None and args.jobs < 1:
            print(f"--jobs must be at least 1, not {args.jobs}", file=sys.stderr)
            return 2
        with warm_kernels_here():  # each submission's kernel forked with LiteLLM imported, not importing it again
            reports = grade_folder(args.folder, args.solutions, args.exercises, timeout=args.timeout, jobs=args.jobs)
        print(format_table(reports))
        if args.json:
            args.json.write_text(json.dumps([r.to_dict() for r in reports], indent=1), encoding="utf-8")
        return 0 if all(r.complete for r in reports) else 1
    except (SolutionMarkerError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
