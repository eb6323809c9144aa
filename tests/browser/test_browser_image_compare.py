"""Real-browser journey on Inspect's "Compare models" tab for two image runs: pick the better run, compare it with
a barely trained one on the same data, and see both accuracies, the number of changed predictions and the images
the better run fixed.

The better run is the finished tiny ViT that tests/ui/test_image_pages.py trains once per session; its workspace is
copied (never changed: other modules inspect it and expect it alone) and a second run on the same data (dataset,
seed, row limit), one step at a tiny learning rate, is trained into the copy through core.jobs (a real trainer
process). Every figure checked on the page is computed here from the two runs' stored prediction frames.
Playwright drives Debian's Chromium against a real `streamlit run app.py` server on 127.0.0.1; skipped with a
reason when Chromium or Playwright is missing.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from test_image_pages import tiny_image_config, trained_image_run  # the shared finished run (helpers, not tests)

from core import inspect, jobs
from core.config import RunConfig
from core.store import RunStore
from pages import VERDICTS
from tests.browser.harness import chromium_tab, decoded_width, needs_browser, streamlit_server, wait_idle

pytestmark = needs_browser

STAGE = "after"  # the stage Inspect picks first, for the run and for the run compared with


def barely_trained_config(scratch: Path) -> RunConfig:
    """The shared run's data (same dataset, seed and row limit, so test predictions pair up), one step at lr 1e-6."""
    return replace(
        tiny_image_config(scratch),
        name="tiny image barely trained",
        max_steps=1,
        learning_rate=1e-6,
        eval_steps=1,
        logging_steps=1,
    )


def copy_workspace(source: Path, target: Path) -> None:
    """The runs, their files and the prepared images; the run store through SQLite's backup (it is in WAL mode)."""
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("runs.db*", "supervisor.*", ".*.partial"))
    with sqlite3.connect(source / "runs.db") as original, sqlite3.connect(target / "runs.db") as copy:
        original.backup(copy)


@pytest.fixture(scope="module")
def compared_workspace(tmp_path_factory) -> tuple[Path, str, str]:
    """(workspace, better run id, worse run id): a copy of the shared run's workspace plus a barely trained run."""
    source, better_id = trained_image_run(tmp_path_factory)
    root = tmp_path_factory.mktemp("image-compare-workspace")
    copy_workspace(source, root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        patch.setenv("OMP_NUM_THREADS", "1")
        store = RunStore()
        assert [run.id for run in store.list()] == [better_id]
        run = jobs.submit(barely_trained_config(tmp_path_factory.mktemp("image-compare-scratch")), store)
        finished = jobs.wait(run.id, store, timeout=240)
        assert finished.status == "completed", jobs.log_tail(run.id, 40)
    return root, better_id, run.id


@pytest.fixture
def runs(compared_workspace, monkeypatch):
    root, better_id, worse_id = compared_workspace
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    store = RunStore()
    return store.get(better_id), store.get(worse_id)


@pytest.fixture
def server(runs):
    with streamlit_server(watch_files=False) as url:
        yield url


@pytest.fixture
def page():
    with chromium_tab(90_000, 1100) as tab:
        yield tab


def choose(page, box, option: str) -> None:
    """Open a selectbox (a locator) and click its option whose text contains `option`, once the app is idle."""
    wait_idle(page)
    box.click()
    page.get_by_role("option", name=option).click()
    wait_idle(page)


def metric(panel, label: str):
    return panel.get_by_test_id("stMetric").filter(has=panel.page.get_by_text(label, exact=True))


def test_compare_two_image_runs_and_see_the_fixed_images(runs, server, page):
    from playwright.sync_api import expect

    better, worse = runs
    assert inspect.stages(better)[-1] == STAGE and inspect.stages(worse)[-1] == STAGE
    # A = the run compared with (the earlier model), B = the run being inspected; labels as the page writes them.
    label_a, label_b = f"{worse.name} · {STAGE}", f"{better.name} · {STAGE}"
    frame_a = inspect.predictions(worse, "test", STAGE)
    frame_b = inspect.predictions(better, "test", STAGE)
    comparison = inspect.compare(frame_a, frame_b, (label_a, label_b))
    assert comparison.accuracy_b > comparison.accuracy_a and len(comparison.fixed), (
        f"the trained run ({comparison.accuracy_b:.1%}) fixed nothing the barely trained one "
        f"({comparison.accuracy_a:.1%}) got wrong"
    )
    fixed, broken = comparison.fixed, comparison.broken
    predicted_b, confidence_b = f"predicted ({label_b})", f"confidence ({label_b})"

    expect.set_options(timeout=90_000)
    page.goto(server)
    page.get_by_role("link", name="Inspect").first.click()
    expect(page.get_by_role("heading", name="Inspect", exact=True)).to_be_visible()
    # The newest run (the barely trained one) comes first; pick the trained one.
    run_box = page.get_by_role("combobox", name="Run", exact=True)
    expect(run_box).to_have_value(re.compile(re.escape(worse.id)))
    choose(page, run_box, better.id)
    expect(run_box).to_have_value(re.compile(re.escape(better.id)))
    expect(page.get_by_text(f"{len(frame_b)} of {len(frame_b)} images")).to_be_visible()

    page.get_by_role("tab", name="Compare models").click()
    page.get_by_text("another run", exact=True).click()
    wait_idle(page)
    other_box = page.get_by_role("combobox", name="Run to compare with", exact=True)
    choose(page, other_box, worse.id)
    expect(other_box).to_have_value(re.compile(re.escape(worse.id)))
    expect(page.get_by_role("combobox", name="Its stage", exact=True)).to_have_value(STAGE)

    panel = page.get_by_role("tabpanel").filter(has_text="Predictions that changed")
    expect(panel).to_be_visible()
    expect(metric(panel, f"Accuracy · {label_a}").get_by_test_id("stMetricValue")).to_have_text(f"{comparison.accuracy_a:.1%}")
    better_metric = metric(panel, f"Accuracy · {label_b}")
    expect(better_metric.get_by_test_id("stMetricValue")).to_have_text(f"{comparison.accuracy_b:.1%}")
    points = (comparison.accuracy_b - comparison.accuracy_a) * 100
    expect(better_metric.get_by_test_id("stMetricDelta")).to_contain_text(f"{points:+.1f} points")
    expect(metric(panel, "Predictions that changed").get_by_test_id("stMetricValue")).to_have_text(f"{comparison.changed:,}")
    expect(panel.get_by_text(f"Fixed — wrong under {label_a}, right under {label_b}: {len(fixed)}", exact=True)).to_be_visible()
    expect(panel.get_by_text(f"Broken — right under {label_a}, wrong under {label_b}: {len(broken)}", exact=True)).to_be_visible()

    # The galleries: the fixed images are right under B, the broken ones wrong; captions name each by its row.
    shown_fixed = min(len(fixed), inspect.IMAGE_PAGE_SIZE)
    shown_broken = min(len(broken), inspect.IMAGE_PAGE_SIZE)
    expect(panel.get_by_test_id("stImage")).to_have_count(shown_fixed + shown_broken)
    captions = panel.get_by_test_id("stImageCaption")
    expect(captions.filter(has_text=re.compile(rf"^{VERDICTS[True]} #"))).to_have_count(shown_fixed)
    expect(captions.filter(has_text=re.compile(rf"^{VERDICTS[False]} #"))).to_have_count(shown_broken)
    for row in (fixed.index[0], fixed.index[shown_fixed - 1]):
        record = fixed.loc[row]
        assert record[predicted_b] == record["gold"] and not frame_a.loc[row, "correct"]
        caption = f"{VERDICTS[True]} #{row} {record['gold']} → {record[predicted_b]} · {record[confidence_b]:.0%}"
        expect(captions.filter(has_text=re.compile(rf"^{re.escape(caption)}$"))).to_have_count(1)
    first = panel.get_by_test_id("stImage").first
    expect(first).to_contain_text(f"#{fixed.index[0]} ")
    image = first.locator("img")
    image.scroll_into_view_if_needed()
    assert decoded_width(image) > 0
    # Rows B got right all along are in neither gallery.
    steady = frame_b.index[frame_b["correct"] & frame_a["correct"]]
    for row in steady[:3]:
        expect(captions.filter(has_text=re.compile(rf"#{row} "))).to_have_count(0)
