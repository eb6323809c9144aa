"""Shared set-up for the real-browser tests: a `streamlit run app.py` server and a Chromium tab.

Playwright drives Debian's Chromium (`/usr/bin/chromium`; `playwright install` cannot download
here). The server inherits the test's environment, so WORKBENCH_WORKSPACE set by a fixture holds.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]

needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("streamlit") is None, reason="needs Debian's chromium and streamlit"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def streamlit_server(watch_files: bool = True) -> Iterator[str]:
    """The app served on 127.0.0.1 at a free port; yields its URL once it answers its health check.

    With `watch_files=False` the server does not watch the source files: a page edited while the test runs (other
    work in the same tree) then neither reloads the app nor keeps the "Source file changed" prompt in the status
    widget, which `wait_idle` would take for a script run that never ends."""
    port = free_port()
    watching = [] if watch_files else ["--server.fileWatcherType", "none"]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
            *watching,
        ],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextmanager
def chromium_tab(timeout_ms: int = 60_000, height: int = 1000):
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": height})
            tab.set_default_timeout(timeout_ms)
            yield tab
        finally:
            browser.close()


def wait_idle(page, timeout_ms: int = 90_000) -> None:
    """Until the app has finished its script run: Streamlit shows its status widget ("Running…") while one is on."""
    from playwright.sync_api import expect

    page.wait_for_timeout(300)  # a run a click just asked for takes a moment to show
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=timeout_ms)


def click_chart_point(page, point, expected) -> None:
    """Click a Plotly point (at its position: Plotly hit-tests clicks on its drag layer) once the app is idle, and
    wait for `expected`. On a loaded machine a click that lands while the page is still running its script is lost
    when the chart is drawn again, so the click waits for the run to end."""
    from playwright.sync_api import expect

    wait_idle(page)
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(expected).to_be_visible()


def decoded_width(image) -> int:
    """The natural width of an <img> once the browser has fetched and decoded it. Visible is not loaded: on a loaded
    machine the element shows before its bytes arrive, and its natural width is 0 until then. It waits for the app to
    be idle first: a script run that draws the image again replaces its source, and decoding the old one fails."""
    wait_idle(image.page)
    return image.evaluate("image => image.decode().then(() => image.naturalWidth)")
