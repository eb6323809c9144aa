"""Real-browser journey for instruction tuning: train the tiny LLaMA on planted-answers from the Train page, see a
sample answer change from step 0 on the Runs page, and open an answer's attribution on Inspect.

Playwright drives Debian's Chromium against a real `streamlit run app.py` server on 127.0.0.1; the run starts a real
trainer process through the job manager. Skipped with a reason when Chromium or Playwright is missing.
"""

from __future__ import annotations

import pytest
from test_instruction_tuning import llama  # noqa: F401 - the session's tiny LLaMA, its tokenizer trained on the words

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
    with chromium_tab(90_000, 1400) as tab:
        yield tab


def choose(page, box: str, option: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text=box).first.click()
    page.get_by_role("option", name=option).click()


def set_number(page, label: str, value) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")


def test_train_from_the_browser_watch_an_answer_change_and_see_why_it_was_given(server, page, llama):  # noqa: F811
    from playwright.sync_api import expect

    from core import inspect
    from core.run_files import generations

    expect.set_options(timeout=90_000)
    page.goto(server)
    page.get_by_role("link", name="Train").first.click()
    expect(page.get_by_role("heading", name="Train", exact=True)).to_be_visible()
    choose(page, "Task", "Instruction tuning (causal LM)")
    expect(page.get_by_text("Pack examples (no padding)")).to_be_visible()  # the task's own settings are drawn
    page.get_by_text("Local folder", exact=True).click()
    model = page.get_by_placeholder("/path/to/model-folder")
    model.fill(str(llama))
    model.press("Enter")
    choose(page, "Dataset", "planted-answers")
    page.get_by_text("full", exact=True).click()  # every weight of the tiny model trains
    set_number(page, "Learning rate", "3e-3")
    set_number(page, "Batch size", 16)
    set_number(page, "Epochs", 3)
    set_number(page, "Max sequence length", 64)
    set_number(page, "Evaluate every N steps", 30)
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("is running on cpu")).to_be_visible()

    page.get_by_role("link", name="Watch it on the Runs page").click()
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    (run,) = RunStore().list()
    expect(page.get_by_role("heading", name=f"{STATUS_ICONS['completed']} {run.name}")).to_be_visible(timeout=300_000)
    samples = generations(RunStore().get(run.id))
    first = samples[samples["step"] == 0].iloc[0]
    last = samples[(samples["step"] == samples["step"].max()) & (samples["prompt"] == first["prompt"])].iloc[0]
    assert first["answer"] != last["answer"] and last["answer"] == last["reference"]
    table = page.locator("[data-testid='stTable']")
    expect(table.get_by_role("row").filter(has_text="step 0").first).to_contain_text(first["answer"])
    expect(table.get_by_role("row").filter(has_text=f"step {int(last['step'])}").first).to_contain_text(last["answer"])

    # Inspect opens on the hardest test prompt (highest reference loss) and explains its answer over the prompt.
    frame = inspect.predictions(RunStore().get(run.id), "test", "after").sort_values("loss", ascending=False, kind="stable")
    page.get_by_role("link", name="Inspect").first.click()
    expect(page.get_by_role("heading", name="Why this answer")).to_be_visible()
    attribution = page.locator(".attribution-map").first
    expect(attribution).to_contain_text("the whole answer")
    expect(attribution).to_contain_text(frame.iloc[0]["reference"])  # the marked word is among the coloured ones
    expect(page.locator(".js-plotly-plot").first).to_be_visible()  # the answer-token x prompt-token grid
