"""Export: the fp32 folder loads with a plain pipeline and predicts like the workbench; the int8 ONNX
variant loads with optimum's ORTModel classes and `transformers.pipeline`, predicts like fp32 on most
test rows, is smaller, and its measured figures are the ones its model card and the Runs page show."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from finished_runs import finished_run

from core.config import RunConfig
from core.errors import UserError
from core.export import INT8_FOLDER, ONNX_FILE, REPORT_FILE, export_run, measure_quantization
from core.run_files import summary
from core.store import RunStore

PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"}


def text_config(tiny_bert) -> RunConfig:
    return RunConfig(
        name="t",
        model=str(tiny_bert),
        dataset="planted-keywords",
        max_rows=300,
        epochs=4,
        batch_size=16,
        learning_rate=0.005,
        eval_steps=10,
        logging_steps=5,
        max_length=32,
    )


def ner_config(tiny_bert) -> RunConfig:
    return RunConfig(
        name="ner",
        task="token_classification",
        model=str(tiny_bert),
        dataset="tweet-ner",
        max_rows=400,
        epochs=3,
        batch_size=16,
        learning_rate=0.005,
        eval_steps=20,
        logging_steps=10,
        max_length=48,
    )


def image_config(scratch: Path) -> RunConfig:
    from core.images.scratch import write_random_vit

    return RunConfig(
        name="img",
        task="image_classification",
        model=str(write_random_vit(scratch, "tiny")),
        dataset="planted-squares",
        max_rows=200,
        max_steps=12,
        batch_size=16,
        learning_rate=3e-3,
        eval_steps=6,
        logging_steps=3,
        device="cpu",
    )


def exported(tmp_path_factory, key: str, make_config) -> dict:
    """A finished run of the config, exported once with its int8 variant: {run, folder, report}."""
    root, run_id = finished_run(tmp_path_factory, key, make_config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        run = RunStore().get(run_id)
        folder = export_run(run_id, tmp_path_factory.mktemp(f"{key}-out") / "out", int8=True)
        return {"root": root, "run": run, "folder": folder, "report": measure_quantization(run)}


@pytest.fixture(scope="module")
def text_exported(tiny_bert, tmp_path_factory):
    return exported(tmp_path_factory, "export-text", lambda scratch: text_config(tiny_bert))


@pytest.fixture(scope="module")
def ner_exported(tiny_bert, tmp_path_factory):
    return exported(tmp_path_factory, "export-ner", lambda scratch: ner_config(tiny_bert))


@pytest.fixture(scope="module")
def image_exported(tmp_path_factory):
    return exported(tmp_path_factory, "export-image", image_config)


# A run finds its folder through the workspace variable: each test works inside its run's workspace.
@pytest.fixture
def text_export(text_exported, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(text_exported["root"]))
    return text_exported


@pytest.fixture
def ner_export(ner_exported, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(ner_exported["root"]))
    return ner_exported


@pytest.fixture
def image_export(image_exported, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(image_exported["root"]))
    return image_exported


def test_exported_folder_loads_with_pipeline_and_matches_workbench_predictions(text_export):
    from transformers import pipeline

    folder, run = text_export["folder"], text_export["run"]
    card = (folder / "README.md").read_text()
    assert "(before → after fine-tuning)" in card and "- accuracy: " in card and 'pipeline("text-classification"' in card
    saved = pd.read_parquet(run.directory / "predictions" / "test_after.parquet")
    classify = pipeline("text-classification", model=str(folder), device="cpu")
    predicted = [result["label"] for result in classify(saved["text"].tolist())]
    assert predicted == saved["predicted"].tolist()


@pytest.mark.parametrize("name", ["text_export", "ner_export", "image_export"])
def test_nothing_exported_is_a_pickle_and_int8_is_onnx_only(name, request):
    folder = request.getfixturevalue(name)["folder"]
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert not [path for path in files if path.suffix in PICKLE_SUFFIXES]
    assert (folder / "model.safetensors").is_file()
    int8 = {path.name for path in (folder / INT8_FOLDER).iterdir()}
    assert ONNX_FILE in int8 and "config.json" in int8 and not any(".safetensors" in name for name in int8)


def test_int8_text_classifier_runs_in_ort_model_and_pipeline_like_fp32(text_export):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import pipeline

    folder, run, report = text_export["folder"], text_export["run"], text_export["report"]
    saved = pd.read_parquet(run.directory / "predictions" / "test_after.parquet")
    model = ORTModelForSequenceClassification.from_pretrained(folder / INT8_FOLDER)
    classify = pipeline("text-classification", model=model, tokenizer=str(folder / INT8_FOLDER))
    predicted = [result["label"] for result in classify(saved["text"].tolist())]
    agreement = float(np.mean(np.array(predicted) == saved["predicted"].to_numpy()))
    assert agreement >= 0.95, agreement  # measured 1.0 on this run's 30 test rows
    assert abs(agreement - report.agreement) <= 0.05  # the pipeline sees what the measurement saw
    assert abs(report.accuracy_change) <= 0.05 and report.int8_megabytes < report.fp32_megabytes


def test_the_int8_model_cards_snippet_runs_as_written(text_export):
    folder = text_export["folder"] / INT8_FOLDER
    card = (folder / "README.md").read_text()
    snippet = re.findall(r"```python\n(.*?)```", card, re.S)[0].replace("PATH/TO/THIS/FOLDER", str(folder))
    assert "ORTModelForSequenceClassification.from_pretrained" in snippet
    scope: dict = {}
    exec(snippet, scope)
    assert scope["classify"]("a planted keyword")[0]["label"] in summary(text_export["run"])["label_names"]


def test_int8_token_classifier_runs_in_ort_model_and_pipeline_like_fp32(ner_export):
    from optimum.onnxruntime import ORTModelForTokenClassification
    from transformers import pipeline

    from core.ner.data import load_ner_splits

    folder, report = ner_export["folder"], ner_export["report"]
    sentences = [" ".join(tokens) for tokens in load_ner_splits("tweet-ner", seed=42, max_rows=400).test["tokens"]]
    fp32 = pipeline("token-classification", model=str(folder))
    int8 = pipeline(
        "token-classification",
        model=ORTModelForTokenClassification.from_pretrained(folder / INT8_FOLDER),
        tokenizer=str(folder / INT8_FOLDER),
    )
    fp32_tags = [[piece["entity"] for piece in tagged] for tagged in fp32(sentences, ignore_labels=[])]
    int8_tags = [[piece["entity"] for piece in tagged] for tagged in int8(sentences, ignore_labels=[])]
    agreement = np.mean([a == b for left, right in zip(fp32_tags, int8_tags) for a, b in zip(left, right)])
    assert agreement >= 0.95, agreement  # measured 1.0 over the test sentences' word pieces
    assert report.scored > report.examples  # one score per labelled word, not per sentence
    assert report.agreement >= 0.95 and abs(report.accuracy_change) <= 0.05


def test_int8_image_classifier_runs_in_ort_model_and_pipeline_like_fp32(image_export):
    from optimum.onnxruntime import ORTModelForImageClassification
    from transformers import pipeline

    from core.images import load_image_splits, open_image

    folder, report = image_export["folder"], image_export["report"]
    images = [
        open_image(reference) for reference in load_image_splits("planted-squares", seed=42, max_rows=200).frame("test")["image"]
    ]
    fp32 = pipeline("image-classification", model=str(folder))
    int8 = pipeline(
        "image-classification",
        model=ORTModelForImageClassification.from_pretrained(folder / INT8_FOLDER),
        image_processor=str(folder / INT8_FOLDER),
    )
    agreement = np.mean([a[0]["label"] == b[0]["label"] for a, b in zip(fp32(images), int8(images))])
    assert agreement >= 0.95, agreement  # measured 1.0 on the 20 test images
    # No size claim: quantization scales and graph overhead outweigh the weights of this 0.1 MB ViT.
    assert report.agreement >= 0.95 and abs(report.accuracy_change) <= 0.05


def test_the_measured_figures_are_in_the_cards_and_the_json(text_export):
    folder, report = text_export["folder"], text_export["report"]
    assert json.loads((folder / INT8_FOLDER / REPORT_FILE).read_text()) == report.__dict__
    for card in (folder / "README.md", folder / INT8_FOLDER / "README.md"):
        text = card.read_text()
        assert f"| size | {report.fp32_megabytes:.1f} MB | {report.int8_megabytes:.1f} MB |" in text
        assert f"| latency, batch 1 (median) | {report.fp32_ms_batch1:.1f} ms | {report.int8_ms_batch1:.1f} ms |" in text
        assert f"| latency, batch 32 (median) | {report.fp32_ms_batch32:.1f} ms | {report.int8_ms_batch32:.1f} ms |" in text
        assert f"| {report.accuracy_label()} | {report.fp32_accuracy:.3f} | {report.int8_accuracy:.3f} |" in text
    assert report.examples == 30 and report.scored == 30
    assert report.fp32_ms_batch1 > 0 and report.int8_ms_batch32 > 0


def test_the_int8_variant_is_made_once_and_reused(text_export, tmp_path):
    made = text_export["run"].directory / INT8_FOLDER / ONNX_FILE
    stamp = made.stat().st_mtime_ns
    folder = export_run(text_export["run"].id, tmp_path / "again", int8=True)
    assert made.stat().st_mtime_ns == stamp
    assert (folder / INT8_FOLDER / ONNX_FILE).read_bytes() == made.read_bytes()


def test_a_task_without_an_onnx_class_is_refused_before_anything_is_written(workspace, tmp_path):
    store = RunStore()
    config = RunConfig(task="image_text_contrastive")
    run = store.create("pairs", name="p", task=config.task, model="m", dataset="d", device="cpu", config_yaml=config.to_yaml())
    store.update(run.id, status="completed")
    (run.directory / "model").mkdir(parents=True)
    (run.directory / "model" / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"int8 quantization is measured for text classification runs, .* this is image-text"):
        export_run(run.id, tmp_path / "out", int8=True, store=store)
    assert not (tmp_path / "out").exists()


def test_a_failed_run_cannot_be_exported(workspace, tmp_path):
    store = RunStore()
    store.create(
        "bad", name="b", task="text_classification", model="m", dataset="d", device="cpu", config_yaml=RunConfig().to_yaml()
    )
    store.update("bad", status="failed")
    with pytest.raises(UserError, match="only a completed run"):
        export_run("bad", tmp_path / "out", store=store)
