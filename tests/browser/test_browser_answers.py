"""Real-browser journey for an instruction-tuning run: the Runs page shows a sample answer changing from step 0 to
the last evaluation, and Inspect explains an answer over its prompt (the marked word coloured, the token grid drawn).

Playwright drives Debian's Chromium against a real `streamlit run app.py` server on 127.0.0.1, on the tiny LLaMA run
that tests/core/test_instruction_tuning.py trains once per session. Skipped with a reason when Chromium or Playwright
is missing.
"""

from __future__ import annotations

import pytest
from test_instruction_tuning import answers_run, llama, tokenizer  # noqa: F401 - the session's shared fixtures

from tests.browser.harness import chromium_tab, needs_browser, streamlit_server

pytestmark = needs_browser


@pytest.fixture
def server(answers_run, monkeypatch):  # noqa: F811 - the imported fixture, used by name
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(answers_run.directory.parents[1]))
    with streamlit_server() as url:
        yield url


@pytest.fixture
def page():
    with chromium_tab(90_000, 1400) as tab:
        yield tab


def test_a_sample_answer_changes_on_runs_and_an_answer_is_explained_on_inspect(answers_run, server, page):  # noqa: F811
    from playwright.sync_api import expect

    from core import inspect
    from core.run_files import generations

    expect.set_options(timeout=90_000)
    samples = generations(answers_run)
    first = samples[samples["step"] == 0].iloc[0]
    last = samples[(samples["step"] == samples["step"].max()) & (samples["prompt"] == first["prompt"])].iloc[0]
    assert first["answer"] != last["answer"]

    page.goto(server)
    page.get_by_role("link", name="Runs").first.click()
    expect(page.get_by_text("Sample answers at each evaluation")).to_be_visible()
    table = page.locator("[data-testid='stTable']")
    step_zero = table.get_by_role("row").filter(has_text="step 0").first
    final = table.get_by_role("row").filter(has_text=f"step {int(last['step'])}").first
    expect(step_zero).to_contain_text(first["answer"] or "")
    expect(final).to_contain_text(last["answer"])

    # Inspect opens on the hardest test prompt (highest reference loss) and explains its answer.
    frame = inspect.predictions(answers_run, "test", "after").sort_values("loss", ascending=False, kind="stable")
    hardest = frame.iloc[0]
    page.get_by_role("link", name="Inspect").first.click()
    expect(page.get_by_role("heading", name="Why this answer")).to_be_visible()
    attribution = page.locator(".attribution-map").first
    expect(attribution).to_contain_text("the whole answer")
    # The map colours the prompt's words, the marked one among them; the answer x prompt grid is drawn under it.
    expect(attribution).to_contain_text(hardest["reference"])
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
