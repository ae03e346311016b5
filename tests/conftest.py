"""Shared fixtures: one real embedded Temporal dev server for the whole test session.

Tests marked `ci_required` (the real browser, the Web UI through jupyter-server-proxy) skip with the reason
on a machine that lacks what they need; under CI (`CI=true`) such a skip fails the run instead, with the same
reason, so CI can never be green without them.
"""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from durable_agent.activities import AgentActivities  # noqa: E402
from durable_agent.approval import ApprovalChatWorkflow  # noqa: E402
from durable_agent.llm import LLMConfig  # noqa: E402
from durable_agent.long_chat import LongChatWorkflow  # noqa: E402
from durable_agent.server import Temporal, start_temporal  # noqa: E402
from durable_agent.session import start_chat  # noqa: E402
from durable_agent.worker import start_worker  # noqa: E402
from durable_agent.workflow import DurableAgentWorkflow  # noqa: E402
from durable_course.faults import fault_lab_plugin  # noqa: E402
from fake_openai import FAKE_API_KEY, FakeOpenAI  # noqa: E402


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ci_required: may skip on a developer's machine, never under CI=true")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    if report.skipped and under_ci() and item.get_closest_marker("ci_required") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} must run under CI (CI=true) but was skipped: {reason}"
    return report


@pytest.fixture(scope="session")
async def temporal() -> Temporal:
    server = await start_temporal(ui=False)
    yield server
    await server.shutdown()


@pytest.fixture
def task_queue() -> str:
    """A task queue of the test's own, so workers of different tests never take each other's work."""
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def worker(temporal, task_queue):
    """An in-process worker for every chat workflow of the course (plain, long, with approval), with the fault
    lab plugged in (it does nothing until a test switches a fault on)."""
    running = await start_worker(temporal.client, task_queue=task_queue, plugins=[fault_lab_plugin()],
                                 workflows=[DurableAgentWorkflow, LongChatWorkflow, ApprovalChatWorkflow])
    yield running
    await running.stop()


@pytest.fixture
async def chat(temporal, task_queue, worker):
    return await start_chat(temporal.client, task_queue=task_queue)


@pytest.fixture
def fake(monkeypatch):
    """A local server speaking the OpenAI protocol; tests script its replies. The key is a fake secret."""
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_API_KEY)
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture
async def provider_chat(temporal, task_queue, fake):
    """A chat whose worker calls `openai/fake-model` through LiteLLM at the fake server."""
    activities = AgentActivities(LLMConfig(model="openai/fake-model", api_base=fake.base_url, timeout_seconds=30))
    worker = await start_worker(temporal.client, task_queue=task_queue, activities=activities)
    yield await start_chat(temporal.client, task_queue=task_queue)
    await worker.stop()
