"""Real-browser journey on Inspect for an image-text run: type a query, see the images it finds,
explain one (image, query) pair and see its word map beside its patch overlay.

Playwright drives Debian's Chromium against a real `streamlit run app.py` server on 127.0.0.1, on
the alignment run of the built-in dual encoder that tests/test_pair_pages.py trains once per
session through the job manager. Skipped with a reason when Chromium or Playwright is missing.
"""

from __future__ import annotations

import pytest
from test_pair_pages import trained_pair_run  # the shared finished run (a helper, not a test)

from tests.browser.harness import chromium_tab, decoded_width, needs_browser, streamlit_server

pytestmark = needs_browser


@pytest.fixture
def server(tmp_path_factory, monkeypatch):
    root, _ = trained_pair_run(tmp_path_factory)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    with streamlit_server() as url:
        yield url


@pytest.fixture
def page():
    with chromium_tab(90000, 1400) as tab:
        yield tab


def test_type_a_query_see_its_images_and_explain_a_match_across_modalities(server, page):
    from playwright.sync_api import expect

    expect.set_options(timeout=90_000)
    page.goto(server)
    page.get_by_role("link", name="Inspect").first.click()
    expect(page.get_by_role("heading", name="Retrieval browser")).to_be_visible()
    query = page.get_by_role("textbox", name="Search the images with words")
    query.fill("blue square")
    query.press("Enter")
    expect(page.get_by_text("most similar to 'blue square'")).to_be_visible()
    expect(page.locator(".st-key-inspect_pair_results img")).to_have_count(8)

    page.get_by_role("button", name="Explain with the query").first.click()
    expect(page.get_by_role("textbox", name="Text of the pair")).to_have_value("blue square")
    page.get_by_role("button", name="Explain this pair").click()
    words = page.locator(".st-key-inspect_pair_words")
    expect(words.get_by_text("text share", exact=False)).to_be_visible()
    expect(words.get_by_text("blue", exact=False).first).to_be_visible()
    overlay = page.locator(".st-key-inspect_pair_patches img").first
    expect(overlay).to_be_visible()
    assert decoded_width(overlay) > 0
    expect(page.get_by_text("Share of the total attribution")).to_be_visible()
