"""No stray lines on stderr: every notebook run as JupyterLab shows it, late output included.

nbval drops what arrives for a cell after that cell finished; JupyterLab shows it under that cell. A worker
started in a cell keeps that cell's context, so its log lines (a failed activity attempt, a failing workflow
task) would land there, off-screen, long after; a worker started inside a check cell would print into the
check's output. `kernel_run.run_notebook` keeps every message of the kernel and attributes it to its cell, and
these tests fail on any stderr output that is not in ALLOWED, where each entry says why a learner sees it
and where the notebook explains it.

Each notebook runs once more here, in a fresh kernel (tens of seconds each on a busy 2-core machine: `slow`).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from kernel_run import CellRun, run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + sorted((ROOT / "solutions").glob("ex*.ipynb"))

# (notebook, a piece of the cell's source) -> (a regular expression every stderr line of that cell matches, why
# the learner sees it and where the notebook explains it). Empty: no notebook writes to stderr.
ALLOWED: dict[tuple[str, str], tuple[str, str]] = {}


def stray_stderr(name: str, runs: list[CellRun]) -> list[str]:
    """Each stderr line not explained by ALLOWED, with its cell and whether it arrived after the cell ended."""
    found = []
    for run in runs:
        allowed = [pattern for (notebook, piece), (pattern, _) in ALLOWED.items()
                   if notebook == name and piece in run.source]
        for output in run.outputs:
            if output.kind != "stderr":
                continue
            for line in output.text.splitlines():
                if line.strip() and not any(re.fullmatch(pattern, line) for pattern in allowed):
                    when = "after the cell had finished" if output.late else "while it ran"
                    found.append(f"cell {run.index} ({run.source.splitlines()[0][:60]!r}), {when}: {line}")
    return found


def unexpected_errors(runs: list[CellRun]) -> list[str]:
    return [f"cell {run.index}:\n{run.source}\n{run.text('error')}" for run in runs
            if run.failed and "raises-exception" not in run.tags]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_notebook_prints_nothing_on_stderr_that_it_does_not_explain(path):
    runs = run_notebook(path)
    assert unexpected_errors(runs) == []
    assert stray_stderr(path.name, runs) == []


def test_allowed_entries_name_cells_that_exist_and_give_a_reason():
    for (name, piece), (pattern, reason) in ALLOWED.items():
        sources = [cell.source for path in NOTEBOOKS if path.name == name
                   for cell in nbformat.read(path, as_version=4).cells]
        assert any(piece in source for source in sources), f"{name}: no cell contains {piece!r}"
        assert re.compile(pattern) and len(reason.split()) >= 5, f"{name}: say why {pattern!r} is shown"


def test_the_checker_sees_late_stderr_under_the_cell_that_started_the_task(tmp_path):
    """The premise of this file: a background task's output arrives for the cell that started it, after that
    cell finished, where nbval does not look. A logging handler on sys.stderr shows the same."""
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import asyncio, logging, sys\nlog = logging.getLogger('late')\n"
                                  "log.addHandler(logging.StreamHandler(sys.stderr))\n"
                                  "async def later():\n    await asyncio.sleep(0.5)\n    log.warning('a late line')\n"
                                  "task = asyncio.ensure_future(later())"),
        nbformat.v4.new_code_cell("await asyncio.sleep(1.5)\nprint('second cell')"),
    ])
    path = tmp_path / "late.ipynb"
    nbformat.write(notebook, path)
    first, second = run_notebook(path, drain=0.5)
    assert [(o.kind, o.text, o.late) for o in first.outputs] == [("stderr", "a late line\n", True)]
    assert second.text("stdout") == "second cell\n" and second.text("stderr") == ""
    assert stray_stderr("late.ipynb", [first, second]) == [
        "cell 0 ('import asyncio, logging, sys'), after the cell had finished: a late line"]


# --- exercise 1, with the learner's tool raising --------------------------------------------------------------

EX1 = ROOT / "exercises" / "ex1_new_tool.ipynb"
TEACH = 'teach_offline_model("convert_units", r"(?P<value>\\d+) (?P<from_unit>\\w+) to (?P<to_unit>\\w+)")'


def cell_index(path: Path, piece: str) -> int:
    cells = nbformat.read(path, as_version=4).cells
    return next(i for i, cell in enumerate(cells) if cell.cell_type == "code" and piece in cell.source)


@pytest.mark.slow
def test_exercise_1_with_a_raising_tool_says_why_where_the_learner_looks():
    """The learner taught the model but left the tool raising: the ask cell shows each failed attempt with the
    tool's error and gives up with it; the check says NOT YET with that error; nothing goes to stderr."""
    teach = cell_index(EX1, "teach_offline_model")
    ask = cell_index(EX1, "lab.ask(chat")
    check = cell_index(EX1, "checks.check_new_tool")
    source = nbformat.read(EX1, as_version=4).cells[ask].source
    assert "give_up_after" not in source  # the learner's cell; this test shortens only the wait
    runs = {run.index: run for run in run_notebook(EX1, sources={
        teach: f"from durable_agent.llm import teach_offline_model\n{TEACH}",
        ask: source.replace('miles.")', 'miles.", give_up_after=6)'),
    })}
    asked = runs[ask]
    progress = asked.text("stdout").splitlines()
    assert progress[0] == "You:   Please convert 10 km to miles."
    assert re.fullmatch(r"\[execute_tool attempt \d+ failed: NotImplementedError: exercise 1: convert the value, "
                        r"or raise ToolInputError; Temporal retries it\]", progress[1]), progress
    error = asked.text("error")
    assert "TurnStuck" in error and "no reply after" in error and "execute_tool failed" in error, error
    assert "NotImplementedError: exercise 1" in error
    assert error.startswith("TurnStuck: no reply after") and "Traceback" not in error, error  # no frames
    checked = runs[check].text("stdout")
    assert "NOT YET  [ex1] the agent calls convert_units" in checked
    assert "execute_tool failed" in checked and "NotImplementedError: exercise 1" in checked, checked
    assert stray_stderr(EX1.name, list(runs.values())) == []
    assert [run.index for run in runs.values() if run.failed] == [ask]
