"""Export: the folder loads with a plain pipeline and predicts like the workbench; int8 stays close."""

import pandas as pd
import pytest

from core import jobs
from core.config import RunConfig
from core.errors import UserError
from core.export import INT8_WEIGHTS, export_run, measure_quantization
from core.store import RunStore


@pytest.fixture(scope="module")
def finished_run(tiny_bert, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(tmp_path_factory.mktemp("export-ws")))
        config = RunConfig(name="t", model=str(tiny_bert), dataset="planted-keywords", max_rows=300, epochs=4,
                           batch_size=16, learning_rate=0.005, eval_steps=10, logging_steps=5, max_length=32)
        run = jobs.wait(jobs.submit(config).id, timeout=300)
        assert run.status == "completed", run.error
        yield RunStore().get(run.id)


def test_exported_folder_loads_with_pipeline_and_matches_workbench_predictions(finished_run, tmp_path, monkeypatch):
    from transformers import pipeline

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(finished_run.directory.parent.parent))
    folder = export_run(finished_run.id, tmp_path / "out", int8=True)
    card = (folder / "README.md").read_text()
    assert "(before → after fine-tuning)" in card and "- accuracy: " in card and "pipeline(\"text-classification\"" in card
    saved = pd.read_parquet(finished_run.directory / "predictions" / "test_after.parquet")
    classify = pipeline("text-classification", model=str(folder), device="cpu")
    predicted = [result["label"] for result in classify(saved["text"].tolist())]
    assert predicted == saved["predicted"].tolist()
    assert (folder / "int8" / INT8_WEIGHTS).stat().st_size > 0


def test_int8_accuracy_stays_within_two_points(finished_run, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(finished_run.directory.parent.parent))
    report = measure_quantization(finished_run)
    assert report.examples == 30
    assert abs(report.accuracy_change) <= 0.02
    assert report.int8_megabytes < report.fp32_megabytes


def test_a_failed_run_cannot_be_exported(workspace, tmp_path):
    store = RunStore()
    store.create("bad", name="b", task="text_classification", model="m", dataset="d", device="cpu", config_yaml=RunConfig().to_yaml())
    store.update("bad", status="failed")
    with pytest.raises(UserError, match="only a completed run"):
        export_run("bad", tmp_path / "out", store=store)
