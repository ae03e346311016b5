"""A real browser: JupyterLab on 127.0.0.1, driven by Debian's Chromium through Playwright.

The test opens a copy of notebooks/04_chat.ipynb (outputs cleared, so everything on screen comes from this
run), runs every cell but the last one (which stops the lab) from the Run menu, types "What is 25 + 17?"
into the last chat box, presses Enter and waits for the agent's reply. It saves a screenshot in test-artifacts/.
JupyterLab runs with the settings `course.py` writes, and no "official Jupyter news?" toast may appear.
No browser is ever downloaded: if /usr/bin/chromium or the playwright package is missing, the test is skipped
and says why; under CI (CI=true) that skip fails the run instead (`ci_required`, tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from durable_agent.server import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import course  # noqa: E402  (course.py, at the repository's root)

NEWS_TOAST = "Would you like to get notified about official Jupyter news?"
NOTEBOOK = ROOT / "notebooks" / "04_chat.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _api(base: str, token: str, path: str, method: str = "GET") -> object:
    request = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture
def jupyter_lab(tmp_path):
    """JupyterLab serving a copy of notebook 04 (autosave can never touch the repository's copy)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does it)")
    try:
        import playwright  # noqa: F401
    except ImportError as err:
        pytest.skip(f"the playwright package is not installed ({err}); it is in requirements.lock")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.metadata.pop("widgets", None)
    root = tmp_path / "lab"
    root.mkdir()
    nbformat.write(notebook, root / NOTEBOOK.name)

    port, token = free_port(), secrets.token_hex(16)
    # JupyterLab's settings as `python3 course.py lab` writes them into .venv (here into a folder of the test's).
    settings = course.configure_jupyterlab(tmp_path / "env").parent
    env = {**os.environ, "LLM_MODEL": "", "TEMPORAL_ADDRESS": "",  # the offline model, an embedded server
           **{name: str(tmp_path / name.lower()) for name in (
               "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
               "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}}
    log = (tmp_path / "jupyter.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True", f"--LabApp.app_settings_dir={settings}"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            _api(base, token, "/api/status")
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'jupyter.log').read_text(errors='replace')}")
            time.sleep(0.2)
    yield base, token, NOTEBOOK.name
    try:  # shut the kernels down first: each one stops its embedded Temporal server
        for kernel in _api(base, token, "/api/kernels") or []:
            _api(base, token, f"/api/kernels/{kernel['id']}", method="DELETE")
        _api(base, token, "/api/shutdown", method="POST")
        process.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass
    finally:
        if process.poll() is None:
            process.kill()  # by its own pid
            process.wait()
        log.close()


async def kernel_idle(base: str, token: str, name: str, timeout: float = 90) -> None:
    """Wait until the notebook's kernel has started and is idle (asked over JupyterLab's REST API)."""
    deadline = time.monotonic() + timeout
    while True:
        sessions = _api(base, token, "/api/sessions") or []
        states = [s["kernel"]["execution_state"] for s in sessions if s.get("path", "").endswith(name) and s.get("kernel")]
        if "idle" in states:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the kernel of {name} did not start: sessions {sessions}")
        await asyncio.sleep(0.25)


@pytest.mark.slow
@pytest.mark.ci_required
async def test_chat_in_jupyterlab_in_a_real_browser(jupyter_lab):
    from playwright.async_api import async_playwright, expect

    base, token, name = jupyter_lab
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            await page.goto(f"{base}/lab/tree/{name}?token={token}")
            await expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(timeout=60_000)
            await kernel_idle(base, token, name)
            select_kernel = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
            if await select_kernel.count():  # JupyterLab asks when the kernel was not up in time
                await select_kernel.click()
                await kernel_idle(base, token, name)

            # Run every cell but the last, which stops the lab (as the notebook tells learners to).
            code_cells = page.locator(".jp-Notebook .jp-CodeCell")
            await expect(code_cells.last).to_contain_text("await lab.stop()")
            await code_cells.last.locator(".jp-InputPrompt").click()  # select the last cell
            await page.get_by_role("menuitem", name="Run", exact=True).click()
            await page.get_by_role("menuitem", name="Run All Above Selected Cell", exact=True).click()

            # The "Your turn" cell's output is a fresh chat box.
            box = code_cells.nth(-2).locator(".durable-chat")
            await box.scroll_into_view_if_needed(timeout=150_000)
            text_box = box.locator(".durable-chat-input input")
            await expect(text_box).to_be_enabled(timeout=30_000)
            # Before the first message, the box says what the agent can do (from its tools registry).
            intro = box.locator(".durable-chat-intro")
            await expect(intro).to_contain_text("calculator")
            await expect(intro.locator(".durable-chat-example").filter(has_text="What is 25 + 17?")).to_be_visible()
            await box.screenshot(path=str(ARTIFACTS / "browser-chat-intro.png"))
            await text_box.click()
            await text_box.press_sequentially("What is 25 + 17?")
            await text_box.press("Enter")

            reply = box.locator(".durable-chat-agent")
            await expect(reply).to_contain_text("42", timeout=60_000)
            await expect(box.locator(".durable-chat-user")).to_have_text(["What is 25 + 17?"])
            await expect(intro).to_be_hidden()  # the conversation has begun
            await expect(box.locator(".durable-chat-tool").first).to_contain_text("calculator(expression='25 + 17')")
            await expect(box.locator(".durable-chat-status")).to_contain_text("idle")
            await expect(text_box).to_have_value("")  # sent, and the box is ready for the next message
            link = box.get_by_role("link", name="open in the Temporal UI")
            assert "/namespaces/default/workflows/chat-" in (await link.get_attribute("href") or "")
            await expect(box.locator(".durable-chat-end")).to_be_visible()
            assert "25 + 17 = 42." in await reply.last.inner_text()

            # The Send button works too (a click, not Enter).
            await text_box.fill("What is 100 / 5?")
            await box.locator(".durable-chat-send").click()
            await expect(reply).to_have_count(2, timeout=60_000)
            await expect(reply.last).to_have_text("100 / 5 = 20.")
            await expect(box.locator(".durable-chat-user")).to_have_count(2)  # each message sent once

            # A minute after JupyterLab opened, nothing covers the cells: JupyterLab asks about its news as
            # soon as it has restored the page, unless course.py's settings say "never".
            await expect(page.get_by_text(NEWS_TOAST)).to_have_count(0)
        finally:
            await page.screenshot(path=str(ARTIFACTS / "browser-chat-page.png"))
            if await page.locator(".jp-Notebook .jp-CodeCell .durable-chat").count():
                await page.locator(".jp-Notebook .jp-CodeCell").nth(-2).screenshot(
                    path=str(ARTIFACTS / "browser-chat-box.png"))
            await browser.close()
