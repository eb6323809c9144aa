"""Real-browser journey: start a tiny run from the Train page, watch it on the Runs page.

Playwright drives Debian's Chromium (`/usr/bin/chromium`) against a real `streamlit run` server
on 127.0.0.1; skipped with a reason when Chromium or Playwright is missing.
"""

from __future__ import annotations

import pytest

from core.store import RunStore
from pages import STATUS_ICONS
from tests.browser.harness import chromium_tab, needs_browser, streamlit_server

pytestmark = needs_browser


@pytest.fixture
def server(workspace):
    with streamlit_server() as url:
        yield url


@pytest.fixture
def page():
    with chromium_tab(60000, 1000) as tab:
        yield tab


def set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")


def test_start_a_run_in_the_browser_and_watch_it(server, page, tiny_bert):
    from playwright.sync_api import expect

    # Trainer start-up (imports) takes seconds on this machine; give each expectation a minute.
    expect.set_options(timeout=60_000)
    # A person opens the address streamlit prints, then picks a page from the sidebar.
    page.goto(server)
    page.get_by_role("link", name="Train").first.click()
    expect(page.get_by_role("heading", name="Train", exact=True)).to_be_visible()
    page.get_by_text("Local folder", exact=True).click()
    model = page.get_by_placeholder("/path/to/model-folder")
    model.fill(str(tiny_bert))
    model.press("Enter")
    page.get_by_label("Run name", exact=True).fill("browser run")
    page.get_by_label("Run name", exact=True).press("Enter")
    page.get_by_test_id("stSelectbox").filter(has_text="Dataset").click()
    page.get_by_role("option", name="planted-keywords").click()
    set_number(page, "Max rows (0 = all)", 300)
    set_number(page, "Max steps (0 = use epochs)", 800)  # long enough to be seen running on a fast machine
    set_number(page, "Max sequence length", 32)
    set_number(page, "Evaluate every N steps", 50)
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("is running on cpu")).to_be_visible()

    page.get_by_role("link", name="Watch it on the Runs page").click()
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    # While it runs (checked first: the tiny run can finish while the curves are drawn): its running heading,
    # Cancel, a progress bar with ETA, and the loss panel of the live curves.
    expect(page.get_by_role("heading", name=f"{STATUS_ICONS['running']} browser run")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    expect(page.get_by_text(" · ETA ")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    expect(page.get_by_text("Loss", exact=True).first).to_be_visible()
    # Without any reload, the fragment shows it completed and the before/after report appears.
    expect(page.get_by_role("heading", name=f"{STATUS_ICONS['completed']} browser run")).to_be_visible(timeout=180_000)
    expect(page.get_by_text("before vs after fine-tuning").first).to_be_visible()
    runs = RunStore().list()
    assert [run.status for run in runs] == ["completed"]
    assert RunStore().metrics(runs[0].id).query("name == 'train_loss'").shape[0] > 5
