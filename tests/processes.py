"""Processes as the tests see them, read from Linux /proc: a process's children and descendants, its command line
and environment, and whether it is gone."""

from __future__ import annotations

import time
from pathlib import Path


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return True
    return state == "Z"  # a zombie has exited; only its exit status waits to be collected


def wait_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, by its process id, with its command name (those that exit meanwhile left out)."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        try:
            below = children(todo.pop())
        except OSError:  # it exited
            continue
        for child in below:
            try:
                found[child] = Path(f"/proc/{child}/comm").read_text().strip()
            except OSError:
                continue
            todo.append(child)
    return found


def command_line(pid: int) -> list[str]:
    """Its argv ([] once it has exited)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def environment(pid: int) -> dict[str, str]:
    """Its environment variables, as it was started with them."""
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)
