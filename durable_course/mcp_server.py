"""A small, real MCP server for notebook 08: notes kept in a file, and a unit converter.

It is the *outside world* the agent reaches through the Model Context Protocol, so it lives in the course
layer, next to the fault lab: the agent (`durable_agent/mcp_tools.py`) never imports it; it only knows the
command that starts it, as it would for any MCP server someone else wrote. Run it over stdio:

    python -m durable_course.mcp_server --notes /tmp/notes.jsonl

Tools:
- `add_note(text, idempotency_key="")`: appends a note to the notes file. NOT idempotent: called twice, it
  writes two notes, unless both calls carry the same `idempotency_key` (then the second returns the first's
  answer and writes nothing). Its MCP annotations say so (`idempotentHint`).
- `list_notes()`: the notes, one per line.
- `convert_units(value, from_unit, to_unit)`: km/mi, kg/lb, C/F, m/ft. Pure.

Each tool carries, in its MCP `_meta`, an `offline_trigger`: a regular expression the course's offline
model uses in place of reading the description (a real model reads the description and ignores it).

For the break-it experiments, a *pause file* (`--pause-file`, default: the notes file + ".pause") makes
`add_note` stop right after it has written the note, before it answers, until the file is removed or the
process is killed; the server writes its pid to the notes file + ".pid" when a call pauses there, so a lab
can kill exactly that process. `--fail` starts a broken server (for the bad-input lessons):
`crash` exits at once, `bad-schema` lists a tool whose input schema is not an object, `tool-error`
makes `convert_units` raise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mcp.server import MCPServer
from mcp_types import ToolAnnotations

# unit -> (dimension, factor to the base unit); temperatures are handled apart
_UNITS: dict[str, tuple[str, float]] = {
    "km": ("length", 1000.0), "m": ("length", 1.0), "mi": ("length", 1609.344), "ft": ("length", 0.3048),
    "kg": ("mass", 1.0), "lb": ("mass", 0.45359237),
}
_TEMPERATURES = ("c", "f")
_ALIASES = {"kilometers": "km", "kilometres": "km", "miles": "mi", "mile": "mi", "meters": "m", "metres": "m",
            "feet": "ft", "foot": "ft", "kilograms": "kg", "kilos": "kg", "pounds": "lb", "lbs": "lb",
            "celsius": "c", "fahrenheit": "f", "°c": "c", "°f": "f"}


class ToolInputError(ValueError):
    """Bad input: the message goes back to the caller as the tool's (error) result."""


def _unit(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _UNITS and key not in _TEMPERATURES:
        known = ", ".join(sorted([*_UNITS, "C", "F"]))
        raise ToolInputError(f"unknown unit {name!r}; known units: {known}")
    return key


def convert(value: float, from_unit: str, to_unit: str) -> str:
    """The converter as a pure function (the tool below is a thin wrapper)."""
    a, b = _unit(from_unit), _unit(to_unit)
    if a in _TEMPERATURES or b in _TEMPERATURES:
        if not (a in _TEMPERATURES and b in _TEMPERATURES):
            raise ToolInputError(f"cannot convert {from_unit} to {to_unit}: a temperature and a "
                                 f"{_UNITS[b if a in _TEMPERATURES else a][0]}")
        result = value if a == b else (value * 9 / 5 + 32 if a == "c" else (value - 32) * 5 / 9)
    else:
        if _UNITS[a][0] != _UNITS[b][0]:
            raise ToolInputError(f"cannot convert {from_unit} ({_UNITS[a][0]}) to {to_unit} ({_UNITS[b][0]})")
        result = value * _UNITS[a][1] / _UNITS[b][1]
    shown = f"{result:.2f}".rstrip("0").rstrip(".")
    return f"{value:g} {from_unit} = {shown} {to_unit}"


class Notes:
    """Notes as JSON lines in a file: one `write` per note, so a killed process leaves whole lines."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def add(self, text: str, key: str = "") -> tuple[int, bool]:
        """Append a note; returns (its number, whether it was new). With a key seen before: nothing written."""
        text = " ".join(text.split())
        if not text:
            raise ToolInputError("the note is empty")
        if len(text) > 500:
            raise ToolInputError("the note is longer than 500 characters")
        notes = self.all()
        if key:
            for number, note in enumerate(notes, 1):
                if note.get("key") == key:
                    return number, False
        line = json.dumps({"text": text, "key": key}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return len(notes) + 1, True


def _pause(pause_file: Path, pid_file: Path) -> None:
    """Wait here (the note is written, the answer not yet sent) until the pause file goes, the parent dies,
    or someone kills this process."""
    pid_file.write_text(str(os.getpid()))
    parent = os.getppid()
    deadline = time.monotonic() + 60
    while pause_file.exists() and os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.05)


def build_server(notes_file: str, pause_file: str | None = None, fail: str = "") -> MCPServer:
    notes = Notes(notes_file)
    pause = Path(pause_file or f"{notes_file}.pause")
    pid_file = Path(f"{notes_file}.pid")
    server = MCPServer("course-notes")

    def add_note(text: str, idempotency_key: str = "") -> str:
        """Save a note for the user (appended to the notes file; a repeated idempotency_key is not saved twice)."""
        number, new = notes.add(text, idempotency_key)
        if pause.exists():
            _pause(pause, pid_file)
        return f"saved note #{number}: {text.strip()}" if new else f"note #{number} was already saved: {text.strip()}"

    def list_notes() -> str:
        """List the user's saved notes."""
        found = notes.all()
        return "\n".join(f"#{i} {n['text']}" for i, n in enumerate(found, 1)) or "no notes yet"

    def convert_units(value: float, from_unit: str, to_unit: str) -> str:
        """Convert a quantity between units: km, m, mi, ft (length), kg, lb (mass), C, F (temperature)."""
        if fail == "tool-error":
            raise RuntimeError("the converter's table is corrupt (a simulated bug in the MCP server)")
        return convert(float(value), from_unit, to_unit)

    # structured_output=False: plain text results, no output schema (the client would import jsonschema to
    # check results against one, which takes seconds).
    server.add_tool(add_note, annotations=ToolAnnotations(idempotent_hint=False, destructive_hint=False),
                    structured_output=False,
                    meta={"offline_trigger": r"\b(?:note|remember)(?: that)?:?\s+(?P<text>[^.?!]+)"})
    server.add_tool(list_notes, annotations=ToolAnnotations(read_only_hint=True), structured_output=False,
                    meta={"offline_trigger": r"\bmy notes\b"})
    server.add_tool(convert_units, annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
                    structured_output=False,
                    meta={"offline_trigger": r"\bconvert\s+(?P<value>-?\d+(?:\.\d+)?)\s*(?P<from_unit>[a-z°]+)"
                                             r"\s+(?:to|in|into)\s+(?P<to_unit>[a-z°]+)"})
    if fail == "bad-schema":
        def broken(x: str) -> str:
            """A tool whose input schema is not an object."""
            return x

        server.add_tool(broken)
        server._tool_manager.get_tool("broken").parameters = {"type": "string"}  # noqa: SLF001 (on purpose)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", required=True, help="the notes file (JSON lines)")
    parser.add_argument("--pause-file", default=None)
    parser.add_argument("--fail", choices=["", "crash", "bad-schema", "tool-error"], default="")
    args = parser.parse_args(argv)
    if args.fail == "crash":
        print("course-notes: cannot open the notes database (a simulated crash at start)", file=sys.stderr)
        raise SystemExit(3)
    build_server(args.notes, args.pause_file, args.fail).run("stdio")


if __name__ == "__main__":
    main()
