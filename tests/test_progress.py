"""A turn stuck on a failing tool never hangs silently: `lab.ask` shows each failed attempt, read from the server,
and gives up after a stated time with that error; asking again once the tool is fixed answers the turn once.

The tool really raises, in a real worker, against the real embedded server (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re

import pytest

from durable_agent import tools
from durable_agent.llm import TAUGHT_TOOLS, teach_offline_model
from durable_agent.logs import quiet_logs
from durable_agent.session import PendingActivity, start_chat
from durable_course.progress import TurnStuck, send_watched

TOOL = "progress_test_echo"


@pytest.fixture
def broken_tool():
    """A tool `progress_test_echo(word)` that raises until `state["fixed"]` is set; the offline model calls it
    for "echo WORD". Counts its calls."""
    state = {"fixed": False, "calls": 0}

    @tools.tool("Echo a word back.", word="the word")
    def progress_test_echo(word: str) -> str:
        state["calls"] += 1
        if not state["fixed"]:
            raise RuntimeError(f"echo is broken for {word!r}")
        return word.upper()

    teach_offline_model(TOOL, r"echo (?P<word>\w+)")
    yield state
    TAUGHT_TOOLS.pop(TOOL, None)
    tools.TOOLS.pop(TOOL, None)


async def wait_for_failures(chat, at_least: int) -> PendingActivity:
    for _ in range(450):  # 90 s: the first model call of a process imports LiteLLM, slow on a busy machine
        failing = [p for p in await chat.pending_activities() if p.failed_attempts >= at_least]
        if failing:
            return failing[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no activity failed {at_least} times: {await chat.pending_activities()}")


async def test_pending_activities_show_the_failing_tool_with_its_attempt_and_error(temporal, task_queue, worker,
                                                                                 broken_tool):
    chat = await start_chat(temporal.client, task_queue=task_queue)
    assert await chat.pending_activities() == []  # between turns, nothing waits
    turn = asyncio.create_task(chat.send("Please echo hello"))
    try:
        pending = await wait_for_failures(chat, 2)
    finally:
        turn.cancel()
    assert pending.activity_type == "execute_tool"
    assert pending.attempt >= 3 and pending.failed_attempts == pending.attempt - 1
    assert pending.last_error == "RuntimeError: echo is broken for 'hello'"
    assert "progress_test_echo" in pending.last_error_detail  # the traceback, as the worker reported it
    assert pending.state in {"scheduled", "started"}


async def test_ask_shows_each_failed_attempt_then_gives_up_with_the_error(temporal, task_queue, worker,
                                                                        broken_tool):
    chat = await start_chat(temporal.client, task_queue=task_queue)
    lines: list[str] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TurnStuck) as stuck:
        await send_watched(chat, "Please echo hello", give_up_after=3.0, show=lines.append)
    waited = loop.time() - started
    assert 3.0 <= waited < 20, waited
    assert lines and re.fullmatch(r"\[execute_tool attempt \d+ failed: RuntimeError: echo is broken for 'hello'; "
                                  r"Temporal retries it\]", lines[0]), lines
    numbers = [int(line.split(" attempt ")[1].split()[0]) for line in lines]
    assert numbers == sorted(set(numbers)), lines  # one line per failed attempt seen, never twice
    message = str(stuck.value)
    assert message.startswith("no reply after ") and "execute_tool failed" in message
    assert "RuntimeError: echo is broken for 'hello'" in message and "ask again with the same text" in message
    assert stuck.value._render_traceback_() == [f"TurnStuck: {message}"]  # under a cell: no frames
    assert "progress_test_echo" in stuck.value.detail
    assert stuck.value.activity.failed_attempts >= max(numbers)

    # The turn went on in Temporal. Fixed, the next retry answers it, and asking again with the same text
    # returns that answer: the message keeps its id, so the turn is not run a second time.
    broken_tool["fixed"] = True
    calls_before_the_fix = broken_tool["calls"]
    reply = await send_watched(chat, "Please echo hello", give_up_after=30, show=lines.append)
    assert "HELLO" in reply.text and reply.tools_used == [TOOL]
    assert broken_tool["calls"] == calls_before_the_fix + 1  # the retry that works, and no second turn
    assert [m.content for m in await chat.history() if m.role == "user"] == ["Please echo hello"]


async def test_a_turn_that_works_prints_nothing_but_the_exchange(temporal, task_queue, worker, broken_tool):
    broken_tool["fixed"] = True
    chat = await start_chat(temporal.client, task_queue=task_queue)
    lines: list[str] = []
    reply = await send_watched(chat, "Please echo hi", show=lines.append)
    assert (lines, reply.tools_used) == ([], [TOOL])


async def test_an_activity_no_worker_takes_gets_one_line(temporal, task_queue, worker, monkeypatch):
    from durable_course import progress

    monkeypatch.setattr(progress, "NO_WORKER_NOTICE", 0.5)
    chat = await start_chat(temporal.client, task_queue=task_queue)
    await chat.send("What is 1 + 1?")  # the workflow is cached; now the worker goes
    await worker.stop()
    lines: list[str] = []
    turn = asyncio.create_task(send_watched(chat, "What is 2 + 2?", show=lines.append))
    for _ in range(100):
        if lines:
            break
        await asyncio.sleep(0.1)
    turn.cancel()
    await asyncio.gather(turn, return_exceptions=True)
    assert lines and "for a worker: is one running?" in lines[0], lines
    assert len(lines) == len(set(lines))


async def test_quiet_logs_without_console_prints_nothing_and_keeps_the_detail(temporal, task_queue, worker,
                                                                            broken_tool, tmp_path, capsys):
    log_file = tmp_path / "detail.log"
    quiet_logs(log_file=log_file, console=False)
    try:
        chat = await start_chat(temporal.client, task_queue=task_queue)
        with pytest.raises(TurnStuck):
            await send_watched(chat, "Please echo hello", give_up_after=1.5, show=lambda line: None)
        for handler in logging.getLogger("temporalio").handlers:
            handler.flush()
    finally:
        quiet_logs()
    assert capsys.readouterr().err == ""
    detail = log_file.read_text()
    assert "echo is broken for 'hello'" in detail and "Traceback" in detail


async def test_the_chat_box_shows_each_failed_attempt_and_then_the_error(temporal, task_queue, worker, broken_tool):
    from durable_course.chat import ChatBox

    chat = await start_chat(temporal.client, task_queue=task_queue)
    box = ChatBox(chat, give_up_after=3.0)
    reply = await box.send("Please echo hello")
    assert reply is None and box.entries[0] == ("user", "Please echo hello")
    failed = [text for kind, text in box.entries if kind == "info"]
    assert failed and re.match(r"execute_tool attempt \d+ failed: RuntimeError: echo is broken", failed[0]), box.entries
    kind, text = box.entries[-1]
    assert kind == "error" and text.startswith("no reply after") and "echo is broken for 'hello'" in text
    assert not box.text.disabled  # the user can send it again once the tool is fixed
    broken_tool["fixed"] = True
    box.give_up_after = 30  # the next retry may be up to 5 s away (the tool's back-off), and the old error shows
    reply = await box.send("Please echo hello")
    assert reply is not None and "HELLO" in reply.text, box.entries


async def test_a_failure_mended_by_the_next_attempt_is_not_shown(temporal, task_queue, worker, broken_tool,
                                                                 monkeypatch):
    """One failed attempt, then a working one (a missed heartbeat on a busy machine): the turn answers and
    nothing is printed, so a notebook's output does not depend on the machine's load."""
    from durable_course import progress

    monkeypatch.setattr(progress, "SHOW_AFTER", 5.0)  # the retry comes 1 s after the failure; room for a busy CI
    chat = await start_chat(temporal.client, task_queue=task_queue)
    lines: list[str] = []

    async def fix_after_the_first_failure() -> None:
        await wait_for_failures(chat, 1)
        broken_tool["fixed"] = True

    fixer = asyncio.create_task(fix_after_the_first_failure())
    reply = await send_watched(chat, "Please echo hi", show=lines.append)
    await fixer
    assert "HI" in reply.text and lines == []
