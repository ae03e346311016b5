"""A chat turn in a notebook never hangs silently: while it waits, say on what, as the server sees it.

`lab.ask` sends through `send_watched`. While the turn runs, it reads the chat's pending activities from the
Temporal server (`ChatSession.pending_activities()`, which describes the workflow) and prints one line
per failed attempt it sees once the turn has kept failing for `SHOW_AFTER` seconds, with the activity,
the attempt and the error:

    [execute_tool attempt 2 failed: NotImplementedError: exercise 1: ...; Temporal retries it]

A tool that raises is a bug, and Temporal retries it until it is fixed, so the turn could wait forever.
After `give_up_after` seconds of failed attempts, `send_watched` stops waiting and raises `TurnStuck`
with the last error the server recorded (and its traceback in `.detail`). The turn itself goes on in
Temporal: fix the code (a tool redefined in this kernel is used from the next retry on) and ask again with
the same text; the message keeps its id, so it is answered once.

A message or an activity that no worker takes (the worker is stopped) gets one line too, once it has waited
`NO_WORKER_NOTICE` seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from durable_agent.session import ChatError, ChatSession, PendingActivity
from durable_agent.workflow import AgentReply

GIVE_UP_SECONDS = 20.0  # how long a turn may be stuck on a failing activity before `lab.ask` stops waiting
NO_WORKER_NOTICE = 5.0  # an activity scheduled this long ago that no worker has started gets a line
SHOW_AFTER = 2.0  # a failing activity is shown once the turn has been failing this long (then each attempt)
POLL_SECONDS = 0.5


class TurnStuck(ChatError):
    """A turn kept failing on one activity for longer than the caller would wait. `str(err)` says which activity,
    how many attempts and the last error; `.detail` is that error's traceback as the worker reported it."""

    def __init__(self, text: str, activity: PendingActivity) -> None:
        super().__init__(text)
        self.activity = activity
        self.detail = activity.last_error_detail

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for it under a cell: the error and what to do, not the course's frames."""
        return [f"{type(self).__name__}: {self}"]


def failed_line(activity: PendingActivity) -> str:
    return (f"[{activity.activity_type} attempt {activity.failed_attempts} failed: {activity.last_error}; "
            "Temporal retries it]")


def stuck_message(activity: PendingActivity, waited: float) -> str:
    attempts = "once" if activity.failed_attempts == 1 else f"{activity.failed_attempts} times"
    return (f"no reply after {waited:.0f} s: {activity.activity_type} failed {attempts}, last with "
            f"{activity.last_error}\nTemporal keeps retrying it until the code is fixed. Fix it (a tool redefined "
            "in this notebook is used from its next attempt on), then ask again with the same text: the message "
            "keeps its id and is answered once.\nIts traceback: `err.detail` for this error `err`, or the worker's "
            "log file, `lab.log_file`.")


async def send_watched(chat: ChatSession, text: str, *, give_up_after: float = GIVE_UP_SECONDS,
                       show: Callable[[str], None] = print) -> AgentReply:
    """`chat.send(text)`, showing each failed attempt of the turn's activities as one line (`show`), and
    raising `TurnStuck` once they have kept failing for `give_up_after` seconds."""
    __tracebackhide__ = True  # IPython: a learner sees the error, not this module's frames
    turn = asyncio.ensure_future(chat.send(text))
    started = time.monotonic()
    shown: set[tuple[str, int]] = set()
    told_no_worker: set[str] = set()
    failing_since: float | None = None
    try:
        while True:
            done, _ = await asyncio.wait({turn}, timeout=POLL_SECONDS)
            if done:
                return turn.result()
            try:
                pending = await chat.pending_activities()
                no_worker = await chat.waiting_for_a_worker() if not pending else 0.0
            except ChatError:
                continue  # the server is restarting: `send` itself says so if it lasts
            failing = [p for p in pending if p.last_error]
            if not failing:
                failing_since = None
                waiting = [(p.activity_type, p.since_scheduled) for p in pending if p.state == "scheduled"]
                if not pending:
                    waiting = [("the message", no_worker)]
                for what, seconds in waiting:
                    if seconds >= NO_WORKER_NOTICE and what not in told_no_worker:
                        told_no_worker.add(what)
                        show(f"[{what} has waited {seconds:.0f} s for a worker: is one running? It waits in "
                             "Temporal until one is]")
                continue
            latest = max(failing, key=lambda p: p.attempt)
            now = time.monotonic()
            failing_since = failing_since or now
            # A failure that the next attempt mends at once (a heartbeat missed on a busy machine) is Temporal
            # doing its job: nothing to say, and nothing that would make a notebook's output vary.
            if now - failing_since >= SHOW_AFTER and (latest.activity_type, latest.failed_attempts) not in shown:
                shown.add((latest.activity_type, latest.failed_attempts))
                show(failed_line(latest))
            if now - failing_since >= give_up_after:
                raise TurnStuck(stuck_message(latest, now - started), latest)
    finally:
        if not turn.done():
            turn.cancel()  # stop waiting; the Update stays in Temporal and is answered once the code works
            await asyncio.gather(turn, return_exceptions=True)
