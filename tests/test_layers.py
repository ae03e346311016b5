"""The two layers a learner sees with `ls`: `durable_agent/` (the agent) and `durable_course/` (the course).

The agent imports nothing from the course, and no module of either takes part in an import circle: read from
the source (every import statement, at any depth, including those inside functions), not from what happens
to be loaded."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("durable_agent", "durable_course")


def imports_of(path: Path) -> set[str]:
    """The modules of our two packages that a source file imports, as dotted names."""
    package = path.parent.name
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = f"{package}.{base}" if base else package
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] in PACKAGES and len(parts) > 1 and (ROOT / parts[0] / f"{parts[1]}.py").exists():
                found.add(".".join(parts[:2]))
    return found


def graph() -> dict[str, set[str]]:
    return {f"{package}.{path.stem}": imports_of(path) - {f"{package}.{path.stem}"}
            for package in PACKAGES for path in sorted((ROOT / package).glob("*.py"))}


def test_the_agent_imports_nothing_from_the_course():
    crossing = {module: sorted(i for i in imported if i.startswith("durable_course."))
                for module, imported in graph().items() if module.startswith("durable_agent.")}
    assert {m: i for m, i in crossing.items() if i} == {}


def test_there_is_no_import_circle():
    edges = graph()
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(edges.get(module, ())):
            if imported in path:
                circles.append(path[path.index(imported):] + [imported])
            elif imported not in done:
                visit(imported, path + [imported])
        done.add(module)

    done: set[str] = set()
    for module in sorted(edges):
        if module not in done:
            visit(module, [module])
    assert circles == []


def test_the_reader_of_the_import_graph_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "durable_agent" / "probe.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from . import workflow\n    from durable_course.faults import Faults\n")
    assert imports_of(source) == {"durable_agent.workflow", "durable_course.faults"}


def test_importing_the_agent_loads_no_course_module_and_no_litellm():
    code = ("import sys, durable_agent, durable_agent.worker, durable_agent.approval, durable_agent.long_chat, "
            "durable_agent.cli; print(sorted(m for m in sys.modules if m.startswith(('durable_course', 'litellm'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_one_module_reads_event_histories_and_replays_them():
    """durable_course/events.py is the course's one reader of event histories and its one replay helper: no
    other module of either layer decodes raw events or runs Temporal's Replayer."""
    raw = re.compile(r"_event_attributes|EventType\.|Replayer\(|WhichOneof\(")
    readers = sorted(f"{path.parent.name}/{path.name}" for package in PACKAGES
                     for path in (ROOT / package).glob("*.py") if raw.search(path.read_text()))
    assert readers == ["durable_course/events.py"]


def test_a_worker_started_without_the_fault_lab_runs_no_course_code():
    """The agent alone: an embedded server, a worker and a chat turn load nothing of durable_course."""
    code = """
import asyncio, sys
from durable_agent.server import start_temporal
from durable_agent.session import start_chat
from durable_agent.worker import start_worker

async def main():
    temporal = await start_temporal(ui=False)
    worker = await start_worker(temporal.client, task_queue="alone")
    chat = await start_chat(temporal.client, task_queue="alone")
    print((await chat.send("What is 2 + 3?")).text)
    await worker.stop()
    await temporal.shutdown()
    print(sorted(m for m in sys.modules if m.startswith("durable_course")))

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["2 + 3 = 5.", "[]"]


def test_the_exercises_change_the_agent_only_through_its_public_extension_points():
    """A learner's code (the solutions' answer cells, and the modules they write) never touches a private
    member of the agent's workflow: `self._x`, `super()._x`."""
    import json

    private = re.compile(r"\bself\._[a-z]\w*|super\(\)\._[a-z]\w*")
    found = {}
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        for number, cell in enumerate(json.loads(path.read_text())["cells"], 1):
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and "DurableAgentWorkflow" in source and private.search(source):
                found[f"{path.name} cell {number}"] = sorted(set(private.findall(source)))
    assert found == {}
