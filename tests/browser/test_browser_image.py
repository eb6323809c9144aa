"""Real-browser journey on Inspect for an image run: click a confusion-matrix cell, see that cell's
thumbnails and a patch overlay of its first image.

Playwright drives Debian's Chromium against a real `streamlit run app.py` server on 127.0.0.1, on
the finished tiny ViT run that tests/test_image_pages.py trains once per session (submitted through
core.jobs, not the Train page). Skipped with a reason when Chromium or Playwright is missing.
"""

from __future__ import annotations

import re

import pytest
from test_image_pages import explainer_ready, trained_image_run  # the shared finished run (helpers, not tests)

from tests.browser.harness import chromium_tab, click_chart_point, decoded_width, needs_browser, streamlit_server

pytestmark = needs_browser


@pytest.fixture
def image_run(tmp_path_factory, monkeypatch):
    root, run_id = trained_image_run(tmp_path_factory)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    from core.store import RunStore

    return RunStore().get(run_id)


@pytest.fixture
def server(image_run):
    with streamlit_server() as url:
        yield url


@pytest.fixture
def page():
    with chromium_tab(90000, 1100) as tab:
        yield tab


def test_click_a_confusion_cell_and_see_its_images_and_a_patch_overlay(image_run, server, page):
    from playwright.sync_api import expect

    from core import inspect

    expect.set_options(timeout=90_000)
    frame = inspect.predictions(image_run, "test", "after")
    names = inspect.label_names(image_run, frame)
    counts = inspect.confusion_counts(frame, names)
    # The smallest non-empty cell, so the click visibly narrows the gallery.
    cells = sorted((int(counts.loc[g, p]), g, p) for g in names for p in names if counts.loc[g, p] > 0)
    count, gold, predicted = cells[0]
    cell = names.index(gold) * len(names) + names.index(predicted)

    page.goto(server)
    page.get_by_role("link", name="Inspect").first.click()
    expect(page.get_by_role("heading", name="Inspect", exact=True)).to_be_visible()
    expect(page.get_by_text(f"{len(frame)} of {len(frame)} images")).to_be_visible()
    points = page.locator(".js-plotly-plot").first.locator(".scatterlayer path.point")
    expect(points).to_have_count(len(names) ** 2)
    click_chart_point(page, points.nth(cell), page.get_by_text(f"{count} of {len(frame)} images"))
    gallery = page.locator(".st-key-inspect_gallery_grid img")
    expect(gallery).to_have_count(min(count, inspect.IMAGE_PAGE_SIZE))
    # The first image of the cell is selected: its line names the cell.
    expect(page.get_by_text(re.compile(rf"gold {re.escape(gold)} · predicted {re.escape(predicted)}")).first).to_be_visible()
    if not explainer_ready():
        pytest.skip("core.explain has no image explainer yet: the overlay is not checked")
    overlay = page.locator(".st-key-inspect_overlay_area img").first
    expect(overlay).to_be_visible()
    assert decoded_width(overlay) > 0
