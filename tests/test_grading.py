"""The grader cannot be fooled by what a notebook prints or by what it does to the checker.

`python -m durable_course.exercises check FOLDER` rebuilds each submission from solutions/ (nbgrader's cell
metadata says which cells are the learner's), runs its own check cell, and reads results from a file it chose.
The slow tests grade one folder of real exercise notebooks, tampered with in each way a learner might try,
next to a real solution, an untouched exercise and broken submissions, in one run of the teachers' command.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from durable_course import grading, notebooks
from durable_course.grading import GUARD_NOTE

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
NAMES = sorted(p.stem for p in SOLUTIONS.glob("ex*.ipynb"))
TEACH, TOOL, CHECK = "a073249a", "98f635b7", "91dc6a7d"  # exercise 1's cells: teach the model, the tool, the check


def read(folder: Path, name: str):
    return nbformat.read(folder / f"{name}.ipynb", as_version=4)


def cell(notebook, cell_id: str):
    return next(c for c in notebook.cells if c.id == cell_id)


# --- nbgrader's conventions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_carries_nbgrader_metadata(name):
    solution, exercise = read(SOLUTIONS, name), read(EXERCISES, name)
    metas = [c.metadata["nbgrader"] for c in solution.cells]
    assert [c.metadata["nbgrader"] for c in exercise.cells] == metas  # the learner's copy says the same
    assert len({m["grade_id"] for m in metas}) == len(metas)  # unique, as nbgrader requires
    assert all(m["schema_version"] == 3 and m["grade_id"].startswith(name.split("_")[0] + "-") for m in metas)
    answers = [c for c in solution.cells if c.metadata["nbgrader"]["solution"]]
    assert answers and all("BEGIN SOLUTION" in c.source and not c.metadata["nbgrader"]["locked"] for c in answers)
    graded = [c for c in solution.cells if c.metadata["nbgrader"]["grade"]]
    assert len(graded) == 1 and "await checks.check_" in graded[0].source and graded[0].metadata["nbgrader"]["locked"]
    printed = "".join(o.get("text", "") for o in graded[0].outputs)
    # Points: the criteria that ask for work (a guard, KEPT, held before any work and is worth nothing).
    assert graded[0].metadata["nbgrader"]["points"] == printed.count("PASS ") >= 1
    assert graded[0].metadata["nbgrader"]["points"] == (1 if name.startswith(("ex4", "ex6")) else 3) or \
        int(name.split("_")[0][2:]) >= 7  # exercises 1-6 as the course states them
    assert all(c.metadata["nbgrader"]["locked"] for c in solution.cells if c not in answers)


def test_cleaning_a_notebook_keeps_nbgrader_metadata_and_drops_the_rest():
    cleaned = notebooks.clean({"cells": [{"metadata": {"nbgrader": {"grade": True}, "tags": ["x"], "execution": {}}}]})
    assert cleaned["cells"][0]["metadata"] == {"nbgrader": {"grade": True}, "tags": ["x"]}


# --- rebuilding a submission from the grader's copy ----------------------------------------------------------


@pytest.fixture(scope="module")
def known():
    return grading.load_exercises(SOLUTIONS, EXERCISES)


def test_the_check_cell_is_the_graders_and_added_cells_do_not_run(known):
    submission = read(EXERCISES, "ex1_new_tool")
    cell(submission, CHECK).source = 'print("PASS     [ex1] convert_units converts")'
    submission.cells.append(nbformat.v4.new_code_cell("checks.check_new_tool = print"))
    cell(submission, TOOL).source += "\n# my answer"
    built, notes, flags = grading.assemble(submission, known["ex1_new_tool"], "/somewhere/results.jsonl")
    sources = [c.source for c in built.cells]
    assert len(built.cells) == len(read(SOLUTIONS, "ex1_new_tool").cells)
    assert not any("checks.check_new_tool = print" in s or s.startswith('print("PASS') for s in sources)
    check = cell(built, CHECK).source
    assert "reload(_grader_checks)" in check and "'/somewhere/results.jsonl'" in check
    assert check.rstrip().endswith("await checks.check_new_tool(lab)")  # the solution's call, not the learner's
    assert cell(built, TOOL).source.endswith("# my answer")  # the learner's answer is what runs
    assert cell(built, "efc03a8f").source == cell(read(SOLUTIONS, "ex1_new_tool"), "efc03a8f").source
    assert notes == ["1 code cell(s) added by the learner were not run (only the answer cells are graded)"]
    assert flags == []


def test_answer_cells_are_found_by_grade_id_or_cell_id_and_a_missing_one_runs_its_starting_code(known):
    submission = read(SOLUTIONS, "ex1_new_tool")
    cell(submission, TOOL).id = "0a0a0a0a"  # a new id (another editor), but nbgrader's grade_id kept
    submission.cells = [c for c in submission.cells if c.id != TEACH]
    built, notes, _ = grading.assemble(submission, known["ex1_new_tool"], "r.jsonl")
    assert "return f\"{format_number(round(result, 4))}" in cell(built, TOOL).source
    assert cell(built, TEACH).source == cell(read(EXERCISES, "ex1_new_tool"), TEACH).source
    assert notes == [f"answer cell 6 (ex1-answer-{TEACH}) is missing: its starting code ran instead"]


def test_answers_that_reach_into_the_checker_are_flagged_and_solutions_are_not(known):
    for name in NAMES:
        assert grading.assemble(read(SOLUTIONS, name), known[name], "r")[2] == [], name
    submission = read(SOLUTIONS, "ex1_new_tool")
    cell(submission, TEACH).source += "\nimport sys\nsys.modules['durable_course.checks'].RESULTS.clear()"
    assert grading.assemble(submission, known["ex1_new_tool"], "r")[2] == [
        "answer cell 6 uses RESULTS, checks, durable_course, sys.modules: read it"]


def test_a_submission_is_identified_by_its_cells_or_its_file_name(known):
    renamed = read(EXERCISES, "ex3_end_of_chat")
    assert grading.identify(renamed, "my homework.ipynb", known) == "ex3_end_of_chat"
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    assert grading.identify(bare, "ex5_human_approval (1).ipynb", known) == "ex5_human_approval"
    assert grading.identify(bare, "notes.ipynb", known) is None


def test_a_class_is_graded_in_the_order_a_teacher_reads_it():
    found = [Path(p) for p in ["bob/ex10_testing.ipynb", "bob/ex2_b.ipynb", "alice/ex1_a.ipynb", "bob/ex1_a.ipynb"]]
    assert [str(p) for p in sorted(found, key=grading._in_class_order)] == [
        "alice/ex1_a.ipynb", "bob/ex1_a.ipynb", "bob/ex2_b.ipynb", "bob/ex10_testing.ipynb"]


# --- the teachers' command on a tampered class ------------------------------------------------------------------

NOOP_CHECK = '''
from durable_course import checks

async def pretend(lab, name="convert_units"):
    for title in ("converts", "refuses bad input", "is called"):
        print(f"PASS     [ex1] convert_units {title}")

checks.check_new_tool = pretend
'''
PRINTED_PASS = '\nfor title in ("converts", "refuses bad input", "is called"):\n    print(f"PASS     [ex1] {title}")\n'
# Exercise 3's limit lowered to 1 in the learner's module, and the checker's own constant moved to match it.
LOWERED_LIMIT = '''
with workflow.unsafe.imports_passed_through():
    import durable_course.checks as _checker
_checker.MAX_TURNS = 1
'''


def ex1(base: Path):
    return read(base, "ex1_new_tool")


def edit(notebook, cell_id: str, change) -> nbformat.NotebookNode:
    target = cell(notebook, cell_id)
    target.source = change(target.source)
    return notebook


# The grader's --timeout, which the "hangs" submission waits out. Each cell of the real submissions took under
# 1 s on a quiet 2-core machine and 4.5 s at most at load 5 (starting the lab); the check cell gets 5 times it.
CELL_SECONDS = 15


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("class")
    ex3 = read(SOLUTIONS, "ex3_end_of_chat")
    edit(ex3, "ef90f2b3", lambda s: s.replace("MAX_TURNS = 3", "MAX_TURNS = 1").replace(
        'KEYWORD = "stop"', 'KEYWORD = "stop"\n' + LOWERED_LIMIT))
    missing = ex1(SOLUTIONS)
    missing.cells = [c for c in missing.cells if c.id != TEACH]
    submissions = {
        "real": ex1(SOLUTIONS),
        "untouched": ex1(EXERCISES),
        "noop": edit(ex1(EXERCISES), TEACH, lambda s: s + NOOP_CHECK),
        "prints_pass": edit(ex1(EXERCISES), TEACH, lambda s: s + PRINTED_PASS),
        "edited_check": edit(ex1(EXERCISES), CHECK, lambda s: PRINTED_PASS.strip()),
        "constants": ex3,
        "missing_cell": missing,
        "dies": edit(ex1(SOLUTIONS), TOOL, lambda s: "import os\nos._exit(1)\n" + s),
        "hangs": edit(ex1(SOLUTIONS), TEACH, lambda s: "import time\ntime.sleep(3600)\n" + s),
    }
    for name, notebook in submissions.items():
        nbformat.write(notebook, folder / f"{name}.ipynb")
    (folder / "not_json.ipynb").write_text("{ this is not a notebook")
    (folder / "stranger.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("print('PASS     [ex1] everything')")])))
    results = folder.parent / "results.json"
    done = subprocess.run([sys.executable, "-m", "durable_course.exercises", "check", str(folder), "--json",
                           str(results), "--timeout", str(CELL_SECONDS), "--jobs", "2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert done.returncode == 1, done.stderr[-2000:]
    return done, {r["name"]: r for r in json.loads(results.read_text())}


def statuses(report) -> list[str]:
    return [status for _, _, status, _ in report["results"]]


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first one grades the whole class (the fixture): minutes
def test_a_real_solution_passes_and_an_untouched_exercise_does_not(graded):
    reports = graded[1]
    assert statuses(reports["real"]) == ["PASS"] * 3 and reports["real"]["complete"] and reports["real"]["points"] == 3
    assert reports["real"]["flags"] == [] and reports["real"]["notes"] == [] and reports["real"]["error"] == ""
    assert statuses(reports["untouched"]) == ["NOT YET"] * 3 and reports["untouched"]["points"] == 0


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first one grades the whole class (the fixture): minutes
@pytest.mark.parametrize("name", ["noop", "prints_pass", "edited_check"])
def test_a_pretended_pass_scores_what_the_code_does(graded, name):
    # The tool still raises NotImplementedError and the model was never taught: nothing may pass.
    report = graded[1][name]
    assert statuses(report) == ["NOT YET"] * 3, report["results"]
    assert "NotImplementedError" in report["results"][0][3]
    assert report["points"] == 0 and not report["complete"]


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first one grades the whole class (the fixture): minutes
def test_tampering_answers_are_flagged_for_a_person_to_read(graded):
    assert graded[1]["noop"]["flags"] == ["answer cell 6 uses PASS, checks, durable_course: read it"]
    assert graded[1]["prints_pass"]["flags"] == ["answer cell 6 uses PASS: read it"]
    assert graded[1]["edited_check"]["flags"] == []  # its edit was to a cell the grader replaces anyway


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first one grades the whole class (the fixture): minutes
def test_constants_moved_by_the_learner_do_not_move_the_check(graded):
    report = graded[1]["constants"]
    first = report["results"][0]
    assert first[1] == "the chat ends by itself after 3 turns", first
    assert first[2:] == ["NOT YET", "the chat ended after 1 turn(s), before 3"]
    assert report["points"] < 3
    assert report["flags"] == ["answer cell 4 uses checks, durable_course: read it"]


def test_a_bad_number_of_jobs_is_refused_before_anything_runs(tmp_path):
    nbformat.write(read(SOLUTIONS, "ex1_new_tool"), tmp_path / "ada.ipynb")
    for jobs in (0, -2, 1.5):
        with pytest.raises(ValueError, match="jobs must be a whole number of at least 1"):
            grading.grade_folder(tmp_path, jobs=jobs)
    done = subprocess.run([sys.executable, "-m", "durable_course.exercises", "check", str(tmp_path), "--jobs", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == "--jobs must be at least 1, not 0" and done.stdout == ""


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first one grades the whole class (the fixture): minutes
def test_bad_submissions_get_a_clear_line_and_the_class_is_still_graded(graded):
    reports = graded[1]
    assert reports["not_json"]["error"].startswith("not a readable notebook: JSONDecodeError")
    assert reports["stranger"]["error"].startswith("not one of the exercises")
    assert reports["dies"]["error"] == "the kernel died in cell 4 (an answer cell)" and reports["dies"]["points"] == 0
    # A missing answer cell runs as the starting code: the tool still earns its two criteria.
    assert statuses(reports["missing_cell"]) == ["PASS", "PASS", "NOT YET"]
    assert reports["missing_cell"]["notes"] == [f"answer cell 6 (ex1-answer-{TEACH}) is missing: its starting code ran instead"]
    # A hung cell is stopped; the cells after it, the check included, still run, on the notebook's own server:
    # the interrupt (SIGINT to the kernel's process group) does not reach it.
    assert reports["hangs"]["error"] == f"cell 6 (an answer cell) did not finish within {CELL_SECONDS} s and was stopped"
    assert statuses(reports["hangs"]) == ["PASS", "PASS", "NOT YET"]
    assert reports["hangs"]["results"][2][3].startswith("the agent answered without calling convert_units"), \
        reports["hangs"]["results"]  # the model was never taught (the hung cell was to teach it)
    assert len(reports) == 11


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first one grades the whole class (the fixture): minutes
def test_grading_prints_the_table_and_no_kernel_warning(graded):
    done = graded[0]
    assert [line for line in done.stderr.splitlines() if not line.startswith("grading ")] == []
    table = done.stdout.splitlines()
    assert table[0].split() == ["submission", "exercise", "passed", "first", "problem"]
    rows = {line.split()[0]: line for line in table[1:12]}
    assert re.match(r"real +ex1 +3/3 +-$", rows["real"]) and re.match(r"not_json +\? +0/0 +not a readable", rows["not_json"])
    assert "noop: flag: answer cell 6 uses PASS, checks, durable_course: read it" in table
    assert f"missing_cell: answer cell 6 (ex1-answer-{TEACH}) is missing: its starting code ran instead" in table
    assert GUARD_NOTE not in done.stdout
