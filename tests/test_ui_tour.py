"""The Temporal Web UI as notebook 00's tour shows it, in a real browser (Debian's Chromium, Playwright).

Notebook 00 runs top to bottom (Run All, its last cell included) against the course's server, as in
`python3 course.py lab`; afterwards the UI link it printed still works and the UI shows its chat. Then the
tour's screenshots are taken from the real UI: the list of workflows, a chat's timeline, its event history
with a retried model call, and a tool call that keeps failing, pending between two attempts. They are saved in test-artifacts/; with
DURABLE_COURSE_SCREENSHOTS=1 also in notebooks/images/, the copies notebook 00 shows (commit them).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_server_process import CourseServer
from durable_agent import llm, tools
from durable_agent.session import start_chat
from durable_agent.tools import tool
from durable_agent.worker import start_worker
from durable_course.faults import Faults, fault_lab_plugin
from durable_course.lab import start_lab

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "00_welcome.ipynb"
IMAGES = ROOT / "notebooks" / "images"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
TOUR = ("ui-workflows.png", "ui-timeline.png", "ui-history.png", "ui-pending.png")
UI_SECONDS = 120_000  # ms: the UI renders a page in 1-15 s on a loaded 2-core machine


def broken_weather():
    """A `weather` tool with a bug: registered, it replaces the built-in one until the test puts that back."""
    def weather(city: str) -> str:
        raise RuntimeError("the weather service is down")

    return weather


def test_notebook_00_shows_every_picture_of_the_tour():
    markdown = "".join("".join(c.source) for c in nbformat.read(NOTEBOOK, as_version=4).cells
                       if c.cell_type == "markdown")
    shown = re.findall(r"!\[[^\]]*\]\((images/[^)]+)\)", markdown)
    assert [Path(p).name for p in shown if Path(p).name.startswith("ui-")] == list(TOUR)
    for picture in TOUR:
        assert (IMAGES / picture).stat().st_size > 10_000, picture


@pytest.fixture
def browser_ready():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does it)")
    try:
        import playwright  # noqa: F401
    except ImportError as err:
        pytest.skip(f"the playwright package is not installed ({err}); it is in requirements.lock")


@pytest.fixture
def course(tmp_path, monkeypatch):
    server = CourseServer(tmp_path / "course.db")
    server.start()
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    yield server
    server.stop()


async def _open(page, url: str, text: str, screenshot: bool = True) -> str:
    await page.goto(url)
    await page.get_by_text(text).first.wait_for(timeout=UI_SECONDS)
    if screenshot:
        await asyncio.sleep(1.0)  # let the page finish drawing
    return " ".join((await page.inner_text("body")).split())


@pytest.mark.slow
@pytest.mark.ci_required
@pytest.mark.timeout(600)
async def test_run_all_on_00_leaves_the_ui_link_working_and_the_tour_is_the_real_ui(browser_ready, course, tmp_path,
                                                                                    monkeypatch):
    from playwright.async_api import async_playwright

    llm.preload()  # the worker this test runs in its own process (step 2) calls the model: import it meanwhile
    # 1. Run All on notebook 00, last cell (`await lab.stop()`) included, as a kernel of `course.py lab` would.
    # JupyterLab leaves the kernel running after Run All; here it is killed at the end (a graceful shutdown of a
    # kernel that ran a lab takes 2 s): the link may depend on neither.
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/00_welcome.ipynb")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    await NotebookClient(notebook, timeout=120, kernel_name="python3", shutdown_kernel="immediate",
                         resources={"metadata": {"path": str(tmp_path)}}).async_execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    link = re.search(rf"http://127\.0\.0\.1:{course.ui_port}/namespaces/default/workflows/(chat-[0-9a-f]+)", printed)
    assert link, printed[-2000:]

    # 2. The tour's states, on a task queue of the test's own: a turn whose model call was retried, and a tool
    # call held pending.
    lab = await start_lab(worker=False)
    faults = Faults.create()
    builtin = dict(tools.TOOLS)
    worker = await start_worker(lab.client, task_queue="ui-tour", plugins=[fault_lab_plugin()])
    try:
        retried = await start_chat(lab.client, task_queue="ui-tour")
        faults.model_outage(times=2)
        assert (await retried.send("What is 25 + 17?")).text == "25 + 17 = 42."
        held = await start_chat(lab.client, task_queue="ui-tour")
        tool("Get the current weather for a city.", city="the city name")(broken_weather())
        pending = asyncio.ensure_future(held.send("What's the weather in Paris?"))
        await faults.wait_for(lambda ex: sum(e.event == "failed" and e.workflow_id == held.workflow_id
                                             for e in ex) >= 2)

        ARTIFACTS.mkdir(exist_ok=True)
        shots = tmp_path / "shots"
        shots.mkdir()
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                       args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            try:
                # First the failing tool call, pending between two attempts.
                ui = f"http://127.0.0.1:{course.ui_port}/namespaces/default/workflows"
                await page.goto(f"{ui}/{held.workflow_id}")
                await page.wait_for_url(re.compile(rf"/workflows/{held.workflow_id}/[0-9a-f-]{{36}}/"),
                                        timeout=UI_SECONDS)
                text = await _open(page, page.url.rsplit("/", 1)[0] + "/pending-activities", "execute_tool")
                assert "weather service is down" in text and ("Attempt" in text or "attempt" in text), text[:2000]
                # (cut above the stack trace: it names this machine's folders)
                await page.screenshot(path=str(shots / "ui-pending.png"), clip={"x": 0, "y": 0, "width": 1280,
                                                                                "height": 575})
                tools.TOOLS.update(builtin)  # the fix: the pending call's next attempt answers (awaited below)

                # The link notebook 00 printed, after its Run All: the course server still serves it.
                text = await _open(page, link.group(0), link.group(1), screenshot=False)
                assert "DurableAgentWorkflow" in text and "course-00_welcome" in text, text[:1500]

                text = await _open(page, ui, held.workflow_id)
                assert retried.workflow_id in text and link.group(1) in text
                await page.screenshot(path=str(shots / "ui-workflows.png"))

                text = await _open(page, f"{ui}/{retried.workflow_id}", "plan_next_action")
                run_page = page.url.rsplit("/", 1)[0]
                assert "send_message" in text and "execute_tool" in text, text[:2000]
                await page.screenshot(path=str(shots / "ui-timeline.png"), full_page=True)

                await _open(page, f"{run_page}/history", "Event Type")
                table = page.locator("table").last
                await table.scroll_into_view_if_needed()
                await asyncio.sleep(1.0)
                text = " ".join((await table.inner_text()).split())
                assert "plan_next_action" in text and "Attempt" in text, text[:3000]
                await table.screenshot(path=str(shots / "ui-history.png"))

            finally:
                await page.screenshot(path=str(ARTIFACTS / "ui-tour-last-page.png"))
                await browser.close()
        assert "Paris" in (await pending).text
    finally:
        tools.TOOLS.clear()
        tools.TOOLS.update(builtin)
        faults.remove()
        await worker.stop()
        await lab.stop()
    for picture in TOUR:
        shutil.copy(shots / picture, ARTIFACTS / picture)
        if os.environ.get("DURABLE_COURSE_SCREENSHOTS") == "1":
            IMAGES.mkdir(exist_ok=True)
            shutil.copy(shots / picture, IMAGES / picture)
