"""Exercises from one source: generate `exercises/` from `solutions/`, and check a folder of submissions.

    python -m durable_course.exercises generate            # solutions/ -> exercises/ (commit the result)
    python -m durable_course.exercises generate --check    # exit 1 if exercises/ is out of date
    python -m durable_course.exercises check FOLDER        # run every notebook in FOLDER, print a table
    python -m durable_course.exercises check FOLDER --json results.json   # ... and keep every result

The solution notebooks are the source of truth. In a code cell, the lines between `# BEGIN SOLUTION` and
`# END SOLUTION` are the learner's part: the exercise gets `# YOUR CODE HERE` instead, plus the block's
*stub*, its lines that start with `#: ` (comments in the solution, code in the exercise; `pass` when there
are none). In a markdown cell, `<!-- BEGIN SOLUTION -->` ... `<!-- END SOLUTION -->` is removed. Outputs and
execution counts are cleared, so a learner starts from a clean notebook.

`check` runs each notebook (a copy, in a temporary folder, so submissions never write next to each other)
with a fresh kernel, and reads the lines the check helpers print (`durable_course/checks.py`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from .checks import GUARD_NOTE, RESULT_LINE

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
    return nbformat.writes(to_exercise(solution, solution_path.name)) + "\n"


def generate(solutions: Path, exercises: Path, check_only: bool = False) -> list[str]:
    """Write (or, with `check_only`, compare) every exercise notebook; return the names that differ(ed)."""
    changed = []
    sources = sorted(solutions.glob("ex*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no ex*.ipynb notebooks in {solutions}")
    for path in sources:
        target = exercises / path.name
        text = exercise_text(path)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            changed.append(path.name)
            if not check_only:
                exercises.mkdir(exist_ok=True)
                target.write_text(text, encoding="utf-8")
    stale = sorted(p.name for p in exercises.glob("ex*.ipynb") if not (solutions / p.name).exists())
    changed.extend(f"{name} (no solution)" for name in stale)
    return changed


# --- checking submissions ---------------------------------------------------------------------------------


@dataclass
class NotebookReport:
    name: str
    # (exercise, title, status, why): status PASS, NOT YET, or KEPT (a guard: it held before the learner's change)
    results: list[tuple[str, str, str, str]] = field(default_factory=list)
    error: str = ""  # a cell that raised, or the notebook could not be run

    @property
    def exercise(self) -> str:
        return ",".join(sorted({r[0] for r in self.results})) or "?"

    @property
    def passed(self) -> int:
        """Criteria met by the learner's work (a kept guard is not counted: it held before any work)."""
        return sum(1 for r in self.results if r[2] == "PASS")

    @property
    def to_pass(self) -> int:
        """Criteria that ask for the learner's work: all but the guards."""
        return sum(1 for r in self.results if not r[1].endswith(GUARD_NOTE))

    @property
    def guards(self) -> tuple[int, int]:
        """(kept, all) of the guards: criteria that held before the learner's change (KEPT, or NOT YET if broken)."""
        guards = [r for r in self.results if r[1].endswith(GUARD_NOTE)]
        return sum(1 for r in guards if r[2] == "KEPT"), len(guards)

    @property
    def complete(self) -> bool:
        return bool(self.results) and not self.error and all(r[2] != "NOT YET" for r in self.results)

    @property
    def score(self) -> str:
        kept, guards = self.guards
        return f"{self.passed}/{self.to_pass}" + (f" +{kept}/{guards} kept" if guards else "")

    @property
    def first_problem(self) -> str:
        for exercise, title, status, why in self.results:
            if status == "NOT YET":
                return f"{title}: {why}" if why else title
        if self.error:
            return self.error
        return "" if self.results else "no check ran"


def read_results(notebook: nbformat.NotebookNode, name: str = "notebook") -> NotebookReport:
    """Collect the PASS / NOT YET lines (and the first cell error) from an executed notebook."""
    report = NotebookReport(name)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and not report.error:
                report.error = f"cell {index} raised {output.get('ename')}: {output.get('evalue', '')}".strip()
            if output.get("output_type") != "stream":
                continue
            lines = output.get("text", "").splitlines()
            for number, line in enumerate(lines):
                match = RESULT_LINE.match(line)
                if match:
                    detail = lines[number + 1].strip() if number + 1 < len(lines) and lines[number + 1].startswith(" ") else ""
                    report.results.append((match.group(2), match.group(3), match.group(1),
                                           detail if match.group(1) == "NOT YET" else ""))
    return report


def run_notebook(path: Path, timeout: int = 120) -> NotebookReport:
    """Execute a copy of `path` in a temporary folder with a fresh kernel and read its check results."""
    from nbclient import NotebookClient

    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as err:  # not JSON, not a notebook: report it, and go on with the class
        return NotebookReport(path.name, error=f"not a readable notebook: {type(err).__name__}: {err}"[:200])
    with tempfile.TemporaryDirectory(prefix="durable-agent-check-") as folder:
        shutil.copy(path, Path(folder) / path.name)
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": folder}})
        try:
            client.execute()
        except Exception as err:  # a dead kernel, a cell past its timeout
            report = read_results(notebook, path.name)
            report.error = report.error or f"the notebook did not finish: {type(err).__name__}: {err}".splitlines()[0]
            return report
    return read_results(notebook, path.name)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(reports: list[NotebookReport]) -> str:
    rows = [("submission", "exercise", "passed", "first problem")]
    for report in reports:
        rows.append((report.name, report.exercise, report.score,
                     _clip(report.first_problem, 100) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows)


def check_folder(folder: Path) -> list[NotebookReport]:
    paths = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not paths:
        raise FileNotFoundError(f"no notebooks (*.ipynb) in {folder}")
    reports = []
    for path in paths:
        print(f"checking {path.relative_to(folder)} ...", file=sys.stderr, flush=True)
        report = run_notebook(path)
        report.name = str(path.relative_to(folder).with_suffix(""))
        reports.append(report)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_course.exercises", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write exercises/ from solutions/")
    gen.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    gen.add_argument("--exercises", type=Path, default=ROOT / "exercises")
    gen.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    chk = sub.add_parser("check", help="run the checks of every notebook in a folder and print a table")
    chk.add_argument("folder", type=Path)
    chk.add_argument("--json", type=Path, help="also write every check result to this JSON file")
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
        reports = check_folder(args.folder)
        print(format_table(reports))
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in reports], indent=1), encoding="utf-8")
        return 0 if all(r.complete for r in reports) else 1
    except (SolutionMarkerError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
