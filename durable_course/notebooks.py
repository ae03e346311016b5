"""Keep the committed notebooks clean: the outputs nbval compares, and nothing that changes by itself.

    python -m durable_course.notebooks refresh notebooks/04_chat.ipynb   # run it top to bottom, save, clean
    python -m durable_course.notebooks clean PATH...                     # clean only (no run)
    python -m durable_course.notebooks check                             # exit 1 if a committed one is not clean

What changes by itself on every run and is dropped: each cell's `metadata.execution` timestamps, the saved
widget state (`metadata.widgets`, tens of KB) and the widget views' model ids in outputs (a widget is shown
live by the kernel; nbval compares its text form, which stays). Kept: outputs, execution counts, cell tags and nbgrader metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("notebooks", "solutions", "exercises")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
KEPT_CELL_METADATA = ("tags", "nbgrader")  # nbgrader: the exercises' cell roles (durable_course/grading.py)


def committed() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).glob("*.ipynb"))


def problems(notebook: dict[str, Any]) -> list[str]:
    """What in a notebook changes by itself from run to run (empty: clean)."""
    found = []
    if "widgets" in notebook.get("metadata", {}):
        found.append("saved widget state (metadata.widgets)")
    for number, cell in enumerate(notebook.get("cells", []), 1):
        extra = sorted(set(cell.get("metadata", {})) - set(KEPT_CELL_METADATA))
        if extra:
            found.append(f"cell {number}: metadata {', '.join(extra)}")
        if any(WIDGET_VIEW in output.get("data", {}) for output in cell.get("outputs", [])):
            found.append(f"cell {number}: a widget view's model id in its output")
    return found


def clean(notebook: dict[str, Any]) -> dict[str, Any]:
    notebook.get("metadata", {}).pop("widgets", None)
    for cell in notebook.get("cells", []):
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in KEPT_CELL_METADATA}
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
    return notebook


def clean_file(path: Path) -> bool:
    """Clean one file in place; True if it changed."""
    before = path.read_text()
    after = json.dumps(clean(json.loads(before)), indent=1, ensure_ascii=False) + "\n"
    if after != before:
        path.write_text(after)
    return after != before


def refresh(path: Path, timeout: int = 300) -> None:
    """Run a notebook top to bottom in its own folder, as nbval will, then save it clean."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [cell for cell in notebook.cells if cell.cell_type == "code" and "raises-exception" not in
              cell.metadata.get("tags", []) and any(o.get("output_type") == "error" for o in cell.get("outputs", []))]
    if errors:
        raise SystemExit(f"{path}: a cell failed:\n{''.join(errors[0].source)}")
    path.write_text(json.dumps(clean(json.loads(nbformat.writes(notebook))), indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_course.notebooks", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("refresh", "clean"):
        sub.add_parser(name).add_argument("paths", nargs="+", type=Path)
    sub.add_parser("check")
    args = parser.parse_args(argv)
    if args.command == "check":
        dirty = {p: problems(json.loads(p.read_text())) for p in committed()}
        for path, found in dirty.items():
            for problem in found:
                print(f"{path.relative_to(ROOT)}: {problem}")
        return 1 if any(dirty.values()) else 0
    for path in args.paths:
        if args.command == "refresh":
            print(f"running {path} ...", file=sys.stderr, flush=True)
            refresh(path)
        elif clean_file(path):
            print(f"cleaned {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
