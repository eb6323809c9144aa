"""Real-browser journey on Inspect: click a confusion-matrix cell of errors, see those examples and a token map.

Playwright drives Debian's Chromium against a real `streamlit run app.py` server on 127.0.0.1, on
the finished tiny run that tests/test_inspect.py trains once per session (it has misclassified
test examples). Skipped with a reason when Chromium or Playwright is missing.
"""

from __future__ import annotations

import re

import pytest
from test_inspect import trained_run  # the shared finished tiny run (a helper, not a test)

from tests.browser.harness import chromium_tab, click_chart_point, needs_browser, streamlit_server

pytestmark = needs_browser


@pytest.fixture
def trained(tmp_path_factory, tiny_bert, monkeypatch):
    root, run_id = trained_run(tmp_path_factory, tiny_bert)
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    from core.store import RunStore

    return RunStore().get(run_id)


@pytest.fixture
def server(trained):
    with streamlit_server() as url:
        yield url


@pytest.fixture
def page():
    with chromium_tab(60000, 1100) as tab:
        yield tab


def test_click_a_confusion_cell_of_errors_and_see_a_token_map(trained, server, page):
    from playwright.sync_api import expect

    from core import inspect

    expect.set_options(timeout=60_000)
    frame = inspect.predictions(trained, "test", "after")
    names = inspect.label_names(trained, frame)
    counts = inspect.confusion_counts(frame, names)
    errors = [(g, p) for g in names for p in names if g != p and counts.loc[g, p] > 0]
    assert errors, "the tiny run made no test errors to click on"
    gold, predicted = errors[0]
    cell = names.index(gold) * len(names) + names.index(predicted)  # points are drawn row by row

    page.goto(server)
    page.get_by_role("link", name="Inspect").first.click()
    expect(page.get_by_role("heading", name="Inspect", exact=True)).to_be_visible()
    expect(page.get_by_text(f"{len(frame)} of {len(frame)} examples")).to_be_visible()
    points = page.locator(".js-plotly-plot").first.locator(".scatterlayer path.point")
    expect(points).to_have_count(len(names) ** 2)
    # The table then holds exactly that cell's examples, and the first of them is explained.
    click_chart_point(page, points.nth(cell), page.get_by_text(f"{counts.loc[gold, predicted]} of {len(frame)} examples"))
    expect(page.get_by_text(f"gold {gold} · predicted {predicted}").first).to_be_visible()
    token_map = page.locator(".attribution-map").first
    expect(token_map).to_be_visible()
    expect(token_map).to_contain_text("Integrated Gradients")
    hardest = frame[(frame["gold"] == gold) & (frame["predicted"] == predicted)].sort_values("loss", ascending=False).iloc[0]
    first_word = hardest["text"].split()[0]
    unit = token_map.locator(".attribution-unit", has_text=re.compile(rf"^{re.escape(first_word)}$")).first
    expect(unit).to_be_visible()
    # The exact score is on hover, as the unit's title.
    word, value = unit.get_attribute("title").rsplit(": ", 1)
    assert word == first_word and value[0] in "+-" and float(value) == float(value)
