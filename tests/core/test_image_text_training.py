"""The image-text tasks end to end: contrastive alignment and fusion classification through the real trainer.

The loss, tower settings and model round trips use a tiny dual encoder built from configs (tiny ViT
+ tiny BERT). The training runs use the built-in MobileNetV2 + MiniLM dual encoder at 64 px: random
tiny towers give every shape nearly the same embedding and sit on the ln(batch) plateau for far
longer than a test may take, while pretrained towers align within a few steps.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_training import train_here

from core.config import RunConfig
from core.errors import UserError
from core.image_text.metrics import caption_groups, chance_recall, match_ranks, retrieval_metrics
from core.store import RunStore

BUILTIN = "mobilenet-minilm-clip"


def pair_config(model_dir=BUILTIN, **overrides) -> RunConfig:
    values = {
        "name": "pairs",
        "task": "image_text_contrastive",
        "model": str(model_dir),
        "dataset": "shapes-captions",
        "max_rows": 300,
        "epochs": 1,
        "batch_size": 32,
        "learning_rate": 1e-4,
        "eval_steps": 4,
        "logging_steps": 2,
        "max_length": 24,
        "device": "cpu",
        "image_size": 64,
    }
    values.update(overrides)
    return RunConfig(**values)


# --- metrics ----------------------------------------------------------------------------------


def test_equal_captions_count_as_matches_of_each_other():
    similarity = np.array(
        [
            [0.2, 0.9, 0.1],  # image 0: caption 1 first, but captions 0 and 1 are the same words
            [0.8, 0.3, 0.1],
            [0.3, 0.7, 0.2],  # image 2: its caption third
        ]
    )
    assert match_ranks(similarity).tolist() == [2, 2, 3]
    groups = caption_groups(["a red circle", "A red circle ", "a blue square"])
    assert groups.tolist() == [0, 0, 1]
    assert match_ranks(similarity, groups).tolist() == [1, 1, 3]
    metrics = retrieval_metrics(similarity, ks=(1,), groups=groups)
    assert metrics["image_to_text_recall@1"] == pytest.approx(2 / 3)
    assert metrics["recall@1"] == pytest.approx((metrics["image_to_text_recall@1"] + metrics["text_to_image_recall@1"]) / 2)


def test_chance_recall_matches_a_random_ranking():
    rng = np.random.default_rng(0)
    groups = np.array([0, 0, 1, 2, 3, 3, 3, 4, 5, 6])
    simulated = np.mean(
        [retrieval_metrics(rng.random((10, 10)), ks=(1,), groups=groups)["image_to_text_recall@1"] for _ in range(3000)]
    )
    assert chance_recall(groups, 1) == pytest.approx(simulated, abs=0.02)
    assert chance_recall(np.arange(20), 1) == pytest.approx(1 / 20)


# --- the loss of a dual encoder built from configs -----------------------------------------------


def test_contrastive_loss_is_symmetric_and_falls(tiny_dual_encoder):
    from transformers import VisionTextDualEncoderModel

    from core.image_text.models import load_tokenizer

    torch.manual_seed(0)
    model = VisionTextDualEncoderModel.from_pretrained(tiny_dual_encoder).eval()  # no dropout: the same batch each step
    tokenizer = load_tokenizer(str(tiny_dual_encoder))
    pixels = torch.randn(6, 3, 32, 32)
    text = tokenizer(
        ["a red circle", "a blue square", "a green triangle", "a yellow star", "the big dog", "a small cat"],
        padding=True,
        return_tensors="pt",
    )
    output = model(pixel_values=pixels, **text, return_loss=True)
    targets = torch.arange(6)
    both_ways = (
        torch.nn.functional.cross_entropy(output.logits_per_image, targets)
        + torch.nn.functional.cross_entropy(output.logits_per_text, targets)
    ) / 2
    assert output.loss.item() == pytest.approx(both_ways.item(), rel=1e-5)
    order = torch.randperm(6)  # the same pairs in another order: the same loss
    shuffled = model(pixel_values=pixels[order], **{k: v[order] for k, v in text.items()}, return_loss=True)
    assert shuffled.loss.item() == pytest.approx(output.loss.item(), rel=1e-5)

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    first = output.loss.item()
    for _ in range(60):
        loss = model(pixel_values=pixels, **text, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.5 * first


def test_tower_settings_freeze_add_adapters_and_set_learning_rates(tiny_dual_encoder):
    from core.image_text.models import apply_tower_modes, load_dual_encoder, merge_adapters, parameter_groups

    model = load_dual_encoder(str(tiny_dual_encoder))
    lora = {"targets": ["query", "value"], "r": 2, "alpha": 4, "dropout": 0.0}
    apply_tower_modes(model, {"vision": "freeze", "text": "lora"}, lora)
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert not any(name.startswith("vision_model.") for name in trained)
    assert {name for name in trained if name.startswith("text_model.")} and all(
        "lora_" in name for name in trained if name.startswith("text_model.")
    )
    assert {"visual_projection.weight", "text_projection.weight", "logit_scale"} <= trained
    groups = parameter_groups(model, 1e-4, {"text": 5e-4}, weight_decay=0.01)
    assert {group["lr"] for group in groups} == {1e-4, 5e-4}
    assert all(
        group["lr"] == 5e-4 for group in groups if any(p is q for p in group["params"] for q in model.text_model.parameters())
    )
    grouped = sum(p.numel() for group in groups for p in group["params"])
    assert grouped == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert all(group["weight_decay"] == 0.0 for group in groups if any(p.ndim < 2 for p in group["params"]))
    merge_adapters(model)
    assert not any("lora_" in name for name, _ in model.named_parameters())

    with pytest.raises(UserError, match="None of the LoRA target modules"):
        apply_tower_modes(
            load_dual_encoder(str(tiny_dual_encoder)), {"vision": "lora", "text": "train"}, {**lora, "targets": ["nothing"]}
        )


# --- bad input ----------------------------------------------------------------------------------


def test_bad_image_text_configs_get_sentences(tiny_bert, tiny_dual_encoder, workspace):
    from core.tasks import TASKS

    task = TASKS["image_text_contrastive"]
    with pytest.raises(UserError, match="not an image-text dual encoder"):
        task.preflight(pair_config(tiny_bert))
    with pytest.raises(UserError, match="per tower"):
        task.preflight(pair_config(tiny_dual_encoder, strategy="lora"))
    with pytest.raises(UserError, match="no image-text dataset 'movie-reviews'"):
        task.preflight(pair_config(tiny_dual_encoder, dataset="movie-reviews"))
    assert any("vision tower" in problem for problem in pair_config(tiny_dual_encoder, vision_tower="melt").validate())


# --- contrastive alignment through the trainer -------------------------------------------------


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """One short alignment run of the built-in dual encoder on shapes captions, text tower with LoRA."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(tmp_path_factory.mktemp("pairs-workspace")))
        patch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
        store = RunStore()
        config = pair_config(text_tower="lora", lora_r=8, lora_alpha=16, text_lr=5e-4)
        run = train_here(config, store, "aligned")
        store.transition(run.id, ("running",), status="completed")  # what the worker does once train() returns
        run = store.get(run.id)
        yield {"run": run, "store": store, "metrics": store.metrics(run.id), "config": config}


def series(metrics: pd.DataFrame, name: str) -> pd.Series:
    rows = metrics[metrics["name"] == name].drop_duplicates("step", keep="last")
    return rows.set_index("step")["value"]


def test_alignment_logs_retrieval_zero_shot_and_temperature_from_step_zero(aligned):
    metrics = aligned["metrics"]
    recall = series(metrics, "eval_recall@1")
    assert recall.index.min() == 0 and len(recall) >= 3
    for name in ("eval_image_to_text_recall@5", "eval_text_to_image_median_rank", "eval_zero_shot_accuracy", "test_recall@1"):
        assert name in set(metrics["name"]), name
    temperature = series(metrics, "temperature")
    assert len(temperature) >= 2 and (temperature > 0).all()
    loss = series(metrics, "train_loss")
    assert loss.iloc[-1] < loss.iloc[0]
    # Pure chance on the validation split would stay near its chance level; the aligned model beats it.
    assert recall.iloc[-1] > recall.iloc[0]


def test_alignment_writes_reports_predictions_and_a_plain_final_model(aligned):
    from core.checkpoints import available_stages
    from core.pair_runs import load_stage_pair_model
    from core.tasks import TASKS

    run = aligned["run"]
    directory = run.directory
    before = json.loads((directory / "reports" / "test_before.json").read_text())["report"]
    after = json.loads((directory / "reports" / "test_after.json").read_text())["report"]
    assert 0 < before["chance_recall@1"] < 0.2
    headline = TASKS["image_text_contrastive"].headline(after)
    assert "R@1 (mean of both directions)" in headline and "zero-shot accuracy" in headline
    assert TASKS["image_text_contrastive"].class_report(after)["accuracy"] == pytest.approx(
        after["retrieval"]["zero_shot_accuracy"]
    )
    frame = pd.read_parquet(directory / "predictions" / "test_after.parquet")
    assert {"image", "text", "image_to_text_rank", "text_to_image_rank", "top_caption", "predicted", "image_embedding"} <= set(
        frame.columns
    )
    assert (frame["image_to_text_rank"] >= 1).all() and len(frame["image_embedding"].iloc[0]) == 256
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["in_batch_negatives"] == "31" and "not negatives" in summary["gradient_accumulation"]

    from safetensors import safe_open

    for folder in ("model_before", "model"):  # adapters are added after the before-model and merged before the final one
        with safe_open(str(directory / folder / "model.safetensors"), "pt") as handle:
            assert not any("lora_" in key for key in handle.keys()), folder
    stages = available_stages(run)
    assert stages[0] == "before" and stages[-1] == "after" and any(stage.startswith("checkpoint-") for stage in stages)
    final = load_stage_pair_model(run, "after")
    checkpoint = load_stage_pair_model(run, stages[-2])
    assert final.kind == "similarity" and final.prompt_template == "a {label}" and len(final.label_names) == 12
    assert not any("lora_" in name for name, _ in checkpoint.model.named_parameters())


def test_retrieval_finds_the_images_of_a_query(aligned):
    from core.pair_runs import load_stage_pair_model, search_captions, search_images, split_embeddings, zero_shot

    run = aligned["run"]
    pair = load_stage_pair_model(run, "after")
    frame, image_embeds, text_embeds = split_embeddings(run, pair, "after", "test")
    assert len(frame) == len(image_embeds) == len(text_embeds)
    assert (run.directory / "inspect" / "embeddings_test_after.npz").is_file()
    found = search_images(pair, frame, image_embeds, "red circle", k=5)
    assert len(found) == 5 and found["score"].is_monotonic_decreasing
    from core.image_text.data import open_pair_record

    picture = open_pair_record(frame["image"].iloc[0])["image"]
    captions = search_captions(pair, frame, text_embeds, picture, k=4)
    assert captions["text"].is_unique and captions["score"].is_monotonic_decreasing
    classes = zero_shot(pair, picture)
    assert classes["probability"].sum() == pytest.approx(1.0) and len(classes) == 12
    with pytest.raises(UserError, match="Type some words"):
        search_images(pair, frame, image_embeds, "  ")


# --- fusion classification ---------------------------------------------------------------------


def test_fusion_heads_round_trip_through_save_and_load(tiny_dual_encoder, tmp_path):
    from core.image_text.fusion import FusionClassifier
    from core.image_text.models import load_dual_encoder, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_dual_encoder))
    text = tokenizer(["a red square", "icy road"], padding=True, return_tensors="pt")
    pixels = torch.randn(2, 3, 32, 32)
    for fusion in ("concat", "gated"):
        model = FusionClassifier(load_dual_encoder(str(tiny_dual_encoder)), ["cold", "warm"], fusion).eval()
        assert (model.gate is None) == (fusion == "concat")
        with torch.no_grad():
            expected = model(pixel_values=pixels, **text).logits
        assert expected.shape == (2, 2)
        model.save_pretrained(tmp_path / fusion)
        loaded = FusionClassifier.from_pretrained(tmp_path / fusion).eval()
        with torch.no_grad():
            assert torch.allclose(loaded(pixel_values=pixels, **text).logits, expected, atol=1e-6)
        assert loaded.fusion == fusion and loaded.label_names == ["cold", "warm"]


@pytest.fixture(scope="module")
def fusion_trained(tmp_path_factory):
    """(workspace, run) of one gated-fusion run on all of planted-pairs for 2 epochs, trained once for the
    module: learning (below) and the planted-evidence maps (further down) are checked on the same run."""
    root = tmp_path_factory.mktemp("fusion-workspace")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        patch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
        config = pair_config(
            task="image_text_fusion", dataset="planted-pairs", fusion="gated", max_rows=0, epochs=2, eval_steps=20
        )
        return root, train_here(config, RunStore(), "fusion")


@pytest.fixture
def fusion_run(fusion_trained, monkeypatch):
    """The shared fusion run, with this test's workspace pointing at it."""
    root, run = fusion_trained
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    return run


def test_fusion_learns_planted_pairs_and_saves_a_loadable_model(fusion_run):
    from core.pair_runs import fusion_predictions, load_stage_pair_model

    run = fusion_run
    metrics = RunStore().metrics(run.id)
    accuracy = series(metrics, "eval_accuracy")
    assert accuracy.index.min() == 0 and accuracy.iloc[-1] > accuracy.iloc[0]
    assert accuracy.iloc[-1] >= 0.7

    pair = load_stage_pair_model(run, "after")
    assert pair.kind == "classification" and pair.label_names == ["cold", "warm"] and pair.model.fusion == "gated"
    frame = fusion_predictions(run, pair, "after", "test")
    stored = pd.read_parquet(run.directory / "predictions" / "test_after.parquet")
    assert frame["predicted"].tolist() == stored["predicted"].tolist()
    # A split the trainer did not predict is predicted once and kept.
    validation = fusion_predictions(run, pair, "before", "validation")
    assert len(validation) > 0 and (run.directory / "inspect" / "fusion_validation_before.parquet").is_file()


def test_a_fusion_classifier_is_attacked_in_either_input(fusion_run):
    """Its pixels or its text's word embeddings; the clean accuracy is the stored predictions' on the same pairs."""
    from core.adversarial import evaluate_robustness

    stored = pd.read_parquet(fusion_run.directory / "predictions" / "test_after.parquet").head(200)
    results = {
        space: evaluate_robustness(fusion_run, "after", method="pgd", epsilon=0.5, steps=3, space=space)
        for space in ("pixel_values", "embeddings")
    }
    for space, result in results.items():
        assert result["space"] == space and result["examples"] == len(stored)
        assert result["clean_accuracy"] == pytest.approx(stored["correct"].mean(), abs=1e-9)
        assert result["attacked_accuracy"] <= result["clean_accuracy"]
    assert min(result["attacked_accuracy"] for result in results.values()) < stored["correct"].mean(), results
    assert evaluate_robustness(fusion_run, "after", space=None)["space"] == "pixel_values"  # the first space by default


def test_a_fusion_run_is_compared_and_attacked_from_its_pages_and_the_cli(fusion_run, capsys):
    """Inspect's Compare models counts the pairs training fixed; the Runs page attacks the image or the text."""
    from streamlit.testing.v1 import AppTest

    from core.cli import main
    from core.trainer import record_ending

    pages = Path(__file__).resolve().parents[2] / "pages" / "views"
    before, after = (
        pd.read_parquet(fusion_run.directory / "predictions" / f"test_{stage}.parquet") for stage in ("before", "after")
    )
    fixed = int((~before["correct"] & after["correct"]).sum())
    assert fixed > 0
    assert main(["compare", f"{fusion_run.id}:before", f"{fusion_run.id}:after", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["measure"] == "Accuracy" and len(record["fixed"]) == fixed and {"image", "text"} <= set(record["fixed"][0])

    inspect_page = AppTest.from_file(str(pages / "inspect.py"), default_timeout=180).run()
    inspect_page.selectbox(key="inspect_compare_stage").set_value("before").run()
    assert not inspect_page.exception, inspect_page.exception
    assert {m.label: m.value for m in inspect_page.metric}["Accuracy · after"] == f"{after['correct'].mean():.1%}"
    table = next(frame.value for frame in inspect_page.dataframe if "predicted (before)" in frame.value.columns)
    assert table["image"].tolist() == after["image"][~before["correct"] & after["correct"]].tolist()

    record_ending(RunStore(), fusion_run.id, "completed", None)  # trained in this process: end it as the worker does
    runs_page = AppTest.from_file(str(pages / "runs.py"), default_timeout=180).run()
    runs_page.multiselect(key="runs_selection").set_value([fusion_run.id]).run()
    assert runs_page.selectbox(key=f"runs_attack_space_{fusion_run.id}").options == ["pixels", "word embeddings"]
    runs_page.selectbox(key=f"runs_attack_space_{fusion_run.id}").set_value("embeddings").run()
    assert any("around its word embeddings" in caption.value for caption in runs_page.caption)
    runs_page.button(key=f"runs_attack_go_{fusion_run.id}").click().run()
    assert not runs_page.error, [e.value for e in runs_page.error]
    assert any(caption.value.endswith("attacked in the word embeddings.") for caption in runs_page.caption)


def test_an_aligned_model_exports_as_a_folder_that_auto_classes_load(aligned, tmp_path, monkeypatch):
    from transformers import AutoModel, AutoProcessor

    from core.export import export_run, measure_quantization

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(aligned["run"].directory.parent.parent))
    folder = export_run(aligned["run"].id, tmp_path / "out")
    card = (folder / "README.md").read_text()
    assert "R@1 (mean of both directions): " in card and "AutoProcessor.from_pretrained" in card
    model, processor = AutoModel.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
    from core.image_text.data import open_pair_record

    picture = open_pair_record("shapes-captions#0")["image"]
    inputs = processor(text=["a red circle", "a blue square"], images=[picture], return_tensors="pt", padding=True)
    assert model(**inputs).logits_per_image.shape == (1, 2)
    with pytest.raises(UserError, match="int8 quantization is measured for text classification runs"):
        measure_quantization(aligned["run"])


def test_training_keeps_batchnorm_statistics_averaging(aligned):
    """MobileNetV2's TensorFlow momentum would make the running statistics those of the last (maybe tiny) batch."""
    from torch import nn

    from core.image_text.models import load_dual_encoder, resolve_dual_encoder
    from core.image_text.training import trainable_pair_model

    model = load_dual_encoder(resolve_dual_encoder(BUILTIN))
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    assert norms and all(norm.momentum > 0.5 for norm in norms)
    trainable_pair_model(model, pair_config())
    assert all(norm.momentum == 0.1 for norm in norms)


def test_fusion_maps_point_at_the_planted_evidence(fusion_run):
    """Planted pairs carry their evidence in one modality: a square (image) or a keyword (text).

    For correctly classified test pairs the explained class's top unit is that evidence (the
    square's patch, or the keyword's token), and the evidence's modality holds the larger share.
    IG from the grey picture (the page's default for pairs): measured 97 % on the evidence, and 73-87 % with
    the larger share (one thread vs two), over 30 pairs.
    """
    from PIL import Image

    from core.explain import patches
    from core.explain.pairs import PairExplainer
    from core.image_text.data import open_pair_record
    from core.pair_runs import fusion_predictions, load_stage_pair_model

    run = fusion_run
    pair = load_stage_pair_model(run, "after")
    correct = fusion_predictions(run, pair, "after", "test").query("correct").head(30)
    assert len(correct) >= 20
    explainer = PairExplainer(
        pair.model, pair.image_processor, pair.tokenizer, kind="classification", label_names=pair.label_names
    )
    on_evidence, larger_share = [], []
    for reference, text in zip(correct["image"], correct["text"]):
        record = open_pair_record(reference)
        explanation = explainer.explain(record["image"], text, "ig", grid=8, image_baseline="grey")
        tokens, cells = explanation.part("tokens"), explanation.part("patches")
        if record["evidence"] == "image":
            seen = explainer.input_image(Image.fromarray(record["mask"].astype(np.uint8) * 255).convert("RGB"))
            mask = np.asarray(seen)[..., 0] >= 128
            x0, y0, x1, y1 = patches.cell_boxes(mask.shape[1], mask.shape[0], (8, 8))[int(np.argmax(cells.scores))]
            on_evidence.append(bool(mask[y0:y1, x0:x1].any()))
            larger_share.append(cells.share > tokens.share)
        else:
            top_token = tokens.units[int(np.argmax(tokens.scores))]
            on_evidence.append(top_token.lstrip("#") in record["keyword"])
            larger_share.append(tokens.share > cells.share)
    assert np.mean(on_evidence) >= 0.9, np.mean(on_evidence)
    assert np.mean(larger_share) >= 0.65, np.mean(larger_share)
