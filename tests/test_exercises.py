"""Exercises from one source: the generator, the unsolved notebooks' checks, and the bulk checker.

The solution notebooks themselves run under nbval (`solutions` is in pytest's testpaths). Here the exercise
notebooks, as generated, are executed for real (a fresh kernel, a real Temporal server each) and each check
must report "not yet" for the expected reason: the checks can fail, and say why. No untouched exercise shows
PASS; a guard (a criterion that held before the learner's change) shows KEPT. Learner code that only claims
success (an outcome that says the tool ran) or lets the model end the chat is caught from the event history.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from durable_course import checks, exercises, grading
from durable_course.checks import GUARD_NOTE, NotYet
from durable_course.exercises import SolutionMarkerError, strip_code
from durable_agent.llm import TAUGHT_TOOLS, extract_tool_calls, teach_offline_model

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
NAMES = sorted(p.stem for p in SOLUTIONS.glob("ex*.ipynb"))

# What each criterion of an untouched exercise reports: a phrase of its "not yet" reason, or KEPT for a guard
# that the given code already meets (exercise 4's teammate code does moderate and replay new chats).
KEPT = "KEPT"
UNSOLVED = {
    "ex1_new_tool": ["raised NotImplementedError: exercise 1", "raised NotImplementedError: exercise 1",
                     "answered without calling convert_units"],
    "ex2_retry_policy": ["there is no schedule_to_close_timeout", "gave up", "tried 2 times"],
    "ex3_end_of_chat": ["chat_ended is still False", "did not end the chat", "no finished chat to replay"],
    "ex4_determinism_bug": ["no longer replays: NondeterminismError", KEPT, KEPT],
    "ex5_human_approval": ["scheduled before anyone approved it", "ran although the reviewer said no",
                           "ran although nobody approved it"],
    "ex6_long_sessions": ["still on its first run"],
    "ex9_framework_tool": ["no activity for the weather tool", "no activity for the weather tool yet",
                           "An error occurred while running the tool"],
    "ex10_testing": ["nothing on the worker is registered under that name", "raised NotImplementedError: exercise 10",
                     "raised NotImplementedError: exercise 10"],
    "ex11_streaming": ["your reader shows 'Paris' 2 times", "your reader ends on 'Let me look that up."],
    "ex7_idempotent_mcp_tool": [KEPT, "has no idempotency_key argument", "was added 2 times"],
    "ex8_several_agents": [KEPT, "started only after the first had answered"],
}


def test_there_are_at_least_five_exercises_and_a_stretch():
    assert len(NAMES) >= 6 and set(UNSOLVED) == set(NAMES)


# --- the generator ------------------------------------------------------------------------------------------


def test_committed_exercises_match_the_generator():
    drift = exercises.generate(SOLUTIONS, EXERCISES, check_only=True)
    assert drift == [], f"exercises/ is out of date ({drift}): run python -m durable_course.exercises generate"


def test_drift_is_detected(tmp_path):
    copy = tmp_path / "exercises"
    shutil.copytree(EXERCISES, copy)
    notebook = nbformat.read(copy / f"{NAMES[0]}.ipynb", as_version=4)
    notebook.cells[0].source += "\nedited by hand"
    nbformat.write(notebook, copy / f"{NAMES[0]}.ipynb")
    (copy / "ex99_orphan.ipynb").write_text("{}")
    assert exercises.generate(SOLUTIONS, copy, check_only=True) == [f"{NAMES[0]}.ipynb", "ex99_orphan.ipynb (no solution)"]


def test_generate_check_command_exits_1_on_drift(tmp_path):
    command = [sys.executable, "-m", "durable_course.exercises", "generate", "--check", "--exercises", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "out of date" in done.stderr and NAMES[0] in done.stderr


@pytest.mark.parametrize("name", NAMES)
def test_exercises_have_no_solutions_and_no_outputs(name):
    solution = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
    exercise = nbformat.read(EXERCISES / f"{name}.ipynb", as_version=4)
    assert "# BEGIN SOLUTION" in "".join(c.source for c in solution.cells)
    assert len(solution.cells) == len(exercise.cells)
    for cell in exercise.cells:
        assert "SOLUTION" not in cell.source
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert "# YOUR CODE HERE" in "".join(c.source for c in exercise.cells)
    assert any("await checks.check_" in c.source for c in exercise.cells)


def test_strip_code_uses_the_stub_lines_and_keeps_the_indentation():
    source = ("def f(x):\n    # BEGIN SOLUTION\n    #: raise NotImplementedError('write f')\n    return x * 2\n"
              "    # END SOLUTION\n# BEGIN SOLUTION\nanswer = 42\n# END SOLUTION\nprint(f)")
    assert strip_code(source) == ("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError('write f')\n"
                                  "# YOUR CODE HERE\npass\nprint(f)")


@pytest.mark.parametrize("source, problem", [
    ("x = 1\n# BEGIN SOLUTION\nx = 2", "is never closed"),
    ("# END SOLUTION", "without # BEGIN SOLUTION"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside another solution block"),
])
def test_unpaired_markers_are_a_clear_error(source, problem):
    with pytest.raises(SolutionMarkerError, match=problem) as info:
        strip_code(source, "ex9.ipynb, cell 4")
    assert "ex9.ipynb, cell 4" in str(info.value)


# --- reading check results ------------------------------------------------------------------------------------


def test_a_report_counts_passes_and_guards_apart():
    report = grading.NotebookReport("someone", results=[
        ("ex7", "it works", "PASS", ""), ("ex7", "it is fast", "NOT YET", "it took ages"),
        ("ex7", f"it still starts{GUARD_NOTE}", "KEPT", ""), ("ex7", f"it still stops{GUARD_NOTE}", "NOT YET", "it hangs")])
    assert (report.exercise, report.passed, report.first_problem) == ("ex7", 1, "it is fast: it took ages")
    assert (report.score, report.complete) == ("1/2 +1/2 kept", False)  # a kept guard is not a pass
    assert report.points == 0  # a broken guard: what worked before the change no longer does
    report.results = report.results[:3]
    assert report.points == 1


def test_the_offline_model_calls_a_taught_tool_and_refuses_a_trigger_without_arguments():
    name = "exercise_test_shout"
    try:
        teach_offline_model(name, r"shout (?P<word>\w+)")
        assert extract_tool_calls("What is 2 + 3? Then shout hello") == [
            ("calculator", {"expression": "2 + 3"}), (name, {"word": "hello"})]
    finally:
        TAUGHT_TOOLS.pop(name, None)  # the offline model of this test process forgets it again
    with pytest.raises(ValueError, match="no named groups"):
        teach_offline_model(name, r"shout \w+")
    assert name not in TAUGHT_TOOLS


def test_an_unreadable_submission_is_reported_not_fatal(tmp_path):
    broken = tmp_path / "carol.ipynb"
    broken.write_text("{ this is not a notebook")
    report = grading.grade_notebook(broken, grading.load_exercises(SOLUTIONS, EXERCISES))
    assert report.results == [] and report.error.startswith("not a readable notebook")
    assert grading.format_table([report]).splitlines()[1].startswith("carol.ipynb  ?         0/0     not a readable")


def test_check_command_refuses_a_folder_without_notebooks(tmp_path, capsys):
    assert exercises.main(["check", str(tmp_path)]) == 2
    assert "no notebooks" in capsys.readouterr().err
    assert exercises.main(["check", str(tmp_path / "missing")]) == 2


# --- the exercises, run for real ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def class_check(tmp_path_factory):
    """A class's submissions, checked with the teachers' command: alice solved exercise 1; bob handed in every
    exercise untouched. Returns the printed table and the reports (the command's --json file)."""
    folder = tmp_path_factory.mktemp("submissions")
    (folder / "alice").mkdir()
    (folder / "bob").mkdir()
    shutil.copy(SOLUTIONS / "ex1_new_tool.ipynb", folder / "alice")
    for name in NAMES:
        shutil.copy(EXERCISES / f"{name}.ipynb", folder / "bob")
    results = folder / "results.json"
    done = subprocess.run([sys.executable, "-m", "durable_course.exercises", "check", str(folder), "--json",
                           str(results), "--jobs", "3"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 1, done.stderr[-2000:]  # not everyone passed
    return done.stdout, {r["name"]: r for r in json.loads(results.read_text())}


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first one runs the whole class (the fixture): eleven notebooks, minutes
@pytest.mark.parametrize("name", NAMES)
def test_an_unsolved_exercise_runs_to_its_checks_and_says_not_yet(class_check, name):
    report = class_check[1][f"bob/{name}"]
    assert report["error"] == "", f"a cell raised before the checks: {report['error']}"
    expected = UNSOLVED[name]
    assert len(report["results"]) == len(expected), report["results"]
    assert "PASS" not in [status for _, _, status, _ in report["results"]], "PASS for work not done"
    for (exercise, title, status, why), phrase in zip(report["results"], expected):
        assert exercise == name.split("_")[0]
        if phrase is KEPT:
            assert status == KEPT and title.endswith(GUARD_NOTE), f"{title}: {status} {why}"
        else:
            assert status == "NOT YET" and phrase in why, f"{title}: expected {phrase!r}, got {status} {why!r}"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_bulk_check_prints_a_table_of_the_class(class_check):
    # Columns are as wide as their longest entry (the names of the exercises): compare them, not the padding.
    table = [re.sub(r" {2,}", "  ", line) for line in class_check[0].splitlines()]
    assert table[:2] == ["submission  exercise  passed  first problem", "alice/ex1_new_tool  ex1  3/3  -"]
    assert table[2].startswith("bob/ex1_new_tool  ex1  0/3  convert_units converts km/miles, kg/lb and "
                               "celsius/fahrenheit: your code raised NotImplementedErr")
    assert table[4] == ("bob/ex3_end_of_chat  ex3  0/3  the chat ends by itself after 3 turns: "
                        "after 3 turns the reply's chat_ended is still False")
    # Exercise 4 untouched: the fix not done, and two guards that held before any change (not counted as passes).
    assert table[5].startswith("bob/ex4_determinism_bug  ex4  0/1 +2/2 kept  a chat recorded on the old code")
    assert len(table) == 1 + 1 + len(NAMES)


# --- checks against learner code that only looks right -----------------------------------------------------


@pytest.fixture
def learner_module(tmp_path, monkeypatch):
    """Write a learner's module (workflow code must be importable from a file) and import it."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str):
        name = f"learner_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source)
        return importlib.import_module(name)

    return write


def last_results(count: int) -> list[tuple[str, str]]:
    return [(r.status, r.problem) for r in checks.RESULTS[-count:]]


async def test_a_chat_the_model_ended_is_not_the_workflows_doing(temporal, task_queue, worker, chat):
    # The goodbye loophole: the offline model ends a chat on "bye" (the course's own workflow obeys it). An
    # exercise 3 check must not count that as the learner's ending: the history says who ended it.
    await chat.send("What is 2 + 2?")
    assert (await chat.send("OK, bye!")).chat_ended
    with pytest.raises(NotYet, match="the model ended the chat"):
        await checks._ended_by_the_workflow(SimpleNamespace(client=temporal.client), chat.handle, 2)


GUARDED_TOOL = '''
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent.activities import AgentActivities, ToolCall, ToolInput


@dataclass
class ToolRequest:
    tool: str
    arguments: dict[str, Any]
    approval_timeout_seconds: float = 600.0


@dataclass
class Approval:
    approved: bool
    reviewer: str


@dataclass
class ToolOutcome:
    ran: bool
    output: str


@workflow.defn
class GuardedToolWorkflow:
    def __init__(self) -> None:
        self._decision = None

    @workflow.run
    async def run(self, request: ToolRequest) -> ToolOutcome:
        await workflow.wait_condition(lambda: self._decision is not None,
                                      timeout=timedelta(seconds=request.approval_timeout_seconds))
        RUN_THE_TOOL

    @workflow.signal
    def approve(self, decision: Approval) -> None:
        self._decision = decision
'''
ONE_CALL = """call = ToolCall("guarded", request.tool, request.arguments)
        await workflow.execute_activity_method(AgentActivities.execute_tool, ToolInput(call),
                                               start_to_close_timeout=timedelta(seconds=5))"""


@pytest.fixture
def delete_file():
    from durable_agent.tools import TOOLS, tool

    @tool("Delete a file (simulated: nothing is deleted).", path="the file to delete")
    def delete_file(path: str) -> str:
        return f"deleted {path} (simulated)"

    yield
    TOOLS.pop("delete_file", None)


@pytest.mark.parametrize("run_the_tool, problem", [
    # Claims the tool ran without scheduling it: the outcome alone used to pass.
    ('return ToolOutcome(True, f"deleted {request.arguments[\'path\']} (simulated)")',
     "after approval the history shows 0 delete_file activities, not exactly one"),
    (f"{ONE_CALL}\n        {ONE_CALL}\n        return ToolOutcome(True, \'deleted twice\')",
     "after approval the history shows 2 delete_file activities, not exactly one"),
], ids=["claims-it-ran", "runs-it-twice"])
async def test_runs_once_approved_is_read_from_the_history(temporal, learner_module, delete_file, run_the_tool,
                                                           problem):
    module = learner_module(GUARDED_TOOL.replace("RUN_THE_TOOL", run_the_tool))
    await checks.check_approval(SimpleNamespace(client=temporal.client), module)
    assert last_results(3)[0] == ("NOT YET", problem)
