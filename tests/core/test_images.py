"""The image modality: MobileNetV2 conversion, built-in image datasets, uploads, augmentation, the task.

The converted MobileNetV2 and the built-in datasets are prepared once per module in their own
workspaces (converting or storing 70,000 images per test would dominate the suite); upload tests
each get a fresh workspace, so "nothing was written" can be checked by listing it. Training uses a
random 2-layer ViT at 32 px through the real job manager.
"""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core.errors import UserError
from core.images import augment as aug
from core.images import builtin as image_builtin
from core.images import datasets as ds
from core.images import uploads as image_uploads

RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def shared_workspace(tmp_path_factory):
    """One workspace for the module's built-ins (converted model, stored datasets, downloads)."""
    root = tmp_path_factory.mktemp("images-shared-workspace")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        yield root


@pytest.fixture(scope="module")
def mobilenet_dir(shared_workspace):
    from core.catalog_images import MOBILENET_V2

    return MOBILENET_V2.local_dir()


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    from core.images.scratch import write_random_vit

    return write_random_vit(tmp_path_factory.mktemp("tiny-vit"), "tiny")


# ---------------------------------------------------------------------------------------------
# MobileNetV2: conversion from torchvision's weights


def reference_logits(state: dict, pixel_values: torch.Tensor) -> torch.Tensor:
    """torchvision's MobileNetV2 forward (eval mode), written out from its published architecture table
    with torch.nn.functional on the raw state dict: independent of transformers and of the key map."""
    import torch.nn.functional as F

    def conv_bn(x, conv, bn, stride=1, groups=1, act=True):
        weight = state[f"{conv}.weight"]
        x = F.conv2d(x, weight, stride=stride, padding=(weight.shape[-1] - 1) // 2, groups=groups)
        x = F.batch_norm(
            x,
            state[f"{bn}.running_mean"],
            state[f"{bn}.running_var"],
            state[f"{bn}.weight"],
            state[f"{bn}.bias"],
            training=False,
            eps=1e-5,
        )
        return F.relu6(x) if act else x

    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    x = conv_bn(pixel_values, "features.0.0", "features.0.1", stride=2)
    index, channels = 1, 32
    for t, c, n, s in settings:
        for repeat in range(n):
            stride = s if repeat == 0 else 1
            base = f"features.{index}.conv"
            y = x
            if t != 1:
                y = conv_bn(y, f"{base}.0.0", f"{base}.0.1")
                depthwise, project, project_bn = f"{base}.1", f"{base}.2", f"{base}.3"
            else:
                depthwise, project, project_bn = f"{base}.0", f"{base}.1", f"{base}.2"
            y = conv_bn(y, f"{depthwise}.0", f"{depthwise}.1", stride=stride, groups=channels * t)
            y = conv_bn(y, project, project_bn, act=False)
            x = x + y if stride == 1 and channels == c else y
            channels, index = c, index + 1
    x = conv_bn(x, "features.18.0", "features.18.1")
    return F.linear(x.mean(dim=(2, 3)), state["classifier.1.weight"], state["classifier.1.bias"])


def test_converted_mobilenet_computes_torchvisions_logits(mobilenet_dir):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from core.assets import prepare
    from core.images import mobilenet

    state = mobilenet.load_torchvision_state(prepare(mobilenet.WEIGHTS_ASSET) / mobilenet.WEIGHTS_FILE)
    mapping = mobilenet.key_map(list(state))
    assert len(mapping) == len([key for key in state if not key.endswith("num_batches_tracked")]) == 262
    model = AutoModelForImageClassification.from_pretrained(mobilenet_dir, use_safetensors=True).eval()
    assert set(mapping.values()) == {key for key in model.state_dict() if not key.endswith("num_batches_tracked")}
    config = json.loads((mobilenet_dir / "config.json").read_text())
    assert config["hidden_size"] == 1280 and len(config["id2label"]) == 1000
    assert config["id2label"]["0"] == "tench, Tinca tinca" and config["tf_padding"] is False
    assert (mobilenet_dir / "model.safetensors").is_file() and not list(mobilenet_dir.glob("*.bin"))
    processor = AutoImageProcessor.from_pretrained(mobilenet_dir, backend="pil")
    assert list(processor.image_mean) == mobilenet.IMAGENET_MEAN
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 224, 224, generator=generator)
    with torch.no_grad():
        ours, theirs = model(pixel_values=pixels).logits, reference_logits(state, pixels)
        at_96 = model(pixel_values=pixels[:, :, :96, :96]).logits
    assert ours.shape == (2, 1000)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0), (ours - theirs).abs().max()
    assert torch.allclose(at_96, reference_logits(state, pixels[:, :, :96, :96]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("picture, expected", [("chelsea", "cat"), ("coffee", "espresso")])
def test_mobilenet_recognises_imagenet_pictures(mobilenet_dir, picture, expected):
    import skimage.data
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(mobilenet_dir, use_safetensors=True).eval()
    processor = AutoImageProcessor.from_pretrained(mobilenet_dir, backend="pil")
    image = Image.fromarray(getattr(skimage.data, picture)())
    with torch.no_grad():
        probabilities = model(**processor(image, return_tensors="pt")).logits.softmax(-1)[0]
    top = model.config.id2label[int(probabilities.argmax())]
    assert expected in top.split(",")[0], top  # chelsea: "Egyptian cat"; coffee: "espresso"
    assert float(probabilities.max()) > 0.5


def test_mobilenet_is_a_builtin_model_entry(mobilenet_dir):
    from core.catalog_images import MOBILENET_V2

    assert MOBILENET_V2.hub_id == "google/mobilenet_v2_1.0_224" and MOBILENET_V2.modality == "image"
    assert MOBILENET_V2.is_ready()
    before = (mobilenet_dir / "model.safetensors").stat().st_mtime_ns
    assert MOBILENET_V2.local_dir() == mobilenet_dir  # converted once, then reused
    assert (mobilenet_dir / "model.safetensors").stat().st_mtime_ns == before


# ---------------------------------------------------------------------------------------------
# Built-in image datasets


def assert_rgb_rows(split, size):
    row = split[0]
    assert row["image"].mode == "RGB" and row["image"].size == size
    assert isinstance(row["label"], str)


def test_planted_squares_are_deterministic_and_keep_their_square(shared_workspace):
    first = list(image_builtin.planted_squares_records(rows=6, seed=3))
    again = list(image_builtin.planted_squares_records(rows=6, seed=3))
    other = list(image_builtin.planted_squares_records(rows=6, seed=4))
    assert [r["image"] for r in first] == [r["image"] for r in again] and [r["bbox"] for r in first] == [r["bbox"] for r in again]
    assert [r["image"] for r in first] != [r["image"] for r in other]
    splits = ds.load_image_splits("planted-squares", seed=1)
    assert splits.label_names == ["blue square", "red square"] and splits.sizes() == {
        "train": 800,
        "validation": 100,
        "test": 100,
    }
    for row in splits.test.select(range(20)):
        pixels = np.asarray(row["image"]).astype(int)
        x0, y0, x1, y1 = row["bbox"]
        assert x1 - x0 == y1 - y0 == image_builtin.PLANTED_SQUARE_SIDE
        colour = np.array(image_builtin.PLANTED_SQUARE_COLOURS[row["label"]])
        assert (np.abs(pixels[y0:y1, x0:x1] - colour).max(axis=-1) == 0).all()
        outside = np.ones(pixels.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        # No other pixel is near red or near blue: the square alone decides the class.
        for class_colour in image_builtin.PLANTED_SQUARE_COLOURS.values():
            assert (np.abs(pixels[outside] - np.array(class_colour)).max(axis=-1) > 60).all()
    frame = splits.frame("test")
    assert list(frame.columns[:3]) == ["image", "label", "row"] and "bbox" in frame.columns
    record = ds.open_record(frame["image"][0])
    assert record["label"] == frame["label"][0] and list(record["bbox"]) == list(frame["bbox"][0])


def test_same_seed_same_split_other_seed_other_split(shared_workspace):
    a = ds.load_image_splits("digits", seed=5)
    b = ds.load_image_splits("digits", seed=5)
    c = ds.load_image_splits("digits", seed=6)
    assert list(a.test["row"]) == list(b.test["row"]) and list(a.test["row"]) != list(c.test["row"])


def test_digits_are_scikit_learns_pixels_upscaled(shared_workspace):
    from sklearn.datasets import load_digits

    splits = ds.load_image_splits("digits")
    assert sum(splits.sizes().values()) == 1797 and splits.label_names == [str(d) for d in range(10)]
    assert_rgb_rows(splits.train, (32, 32))
    row = splits.train[0]
    digits = load_digits()
    pixels = np.asarray(row["image"])[::4, ::4, 0]
    assert np.array_equal(pixels, np.round(digits.images[row["row"]] * 255 / 16).astype(np.uint8))
    assert row["label"] == str(digits.target[row["row"]])


def test_textile_defects_have_three_classes_from_the_package(shared_workspace):
    splits = ds.load_image_splits("textile-defects")
    assert splits.label_names == ["global defect", "local defect", "nominal"]
    balance = splits.class_balance().groupby("label")["count"].sum().to_dict()
    assert balance == {"global defect": 500, "local defect": 500, "nominal": 1000}
    assert_rgb_rows(splits.validation, (250, 250))
    assert "conformal-clip-data==0.1.4" in splits.source


@pytest.mark.skipif(not image_builtin.FASHION_MNIST_DIR.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_fashion_mnist_subsample_is_stratified_seeded_and_keeps_the_official_test_split(shared_workspace):
    splits = ds.load_image_splits("fashion-mnist", max_rows=600, seed=3)
    sizes = splits.sizes()
    assert 560 <= sum(sizes.values()) <= 640 and sizes["test"] == 90  # 1/7 of the rows are the official test set: 9 a class
    balance = splits.class_balance()
    assert (balance["count"] > 0).all() and balance["label"].nunique() == 10
    assert min(list(splits.test["row"])) >= 60_000 and max(list(splits.train["row"]) + list(splits.validation["row"])) < 60_000
    assert_rgb_rows(splits.test, (28, 28))
    assert "zalando-datasets/fashion_mnist" in splits.source
    assert list(ds.load_image_splits("fashion-mnist", max_rows=600, seed=3).train["row"]) == list(splits.train["row"])


def test_fashion_mnist_missing_says_how_to_install_it(workspace, monkeypatch, tmp_path):
    monkeypatch.setattr(image_builtin, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"apt-get install -y dataset-fashion-mnist"):
        ds.load_image_splits("fashion-mnist")
    assert not (workspace / "cache" / "images" / "fashion-mnist").exists()


def test_list_and_unknown_datasets(workspace):
    keys = [info.key for info in ds.list_image_datasets()]
    assert keys == ["planted-squares", "digits", "textile-defects", "fashion-mnist"]
    assert all(info.task == "image_classification" and info.builtin for info in ds.list_image_datasets())
    with pytest.raises(UserError, match=r"no image dataset called 'cifar'.*planted-squares"):
        ds.load_image_splits("cifar")
    with pytest.raises(UserError, match="references look like 'digits#12'"):
        ds.open_image("digits-12")


# ---------------------------------------------------------------------------------------------
# Uploads


def image_bytes(mode="RGB", size=(20, 20), colour=None, fmt="PNG", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    if colour is not None:
        array[:] = colour
    image = Image.fromarray(array[..., 0] if mode == "L" else array, mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def make_zip(files: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def class_folders(root="", per_class=5) -> dict[str, bytes]:
    files = {}
    for label in ("cat", "dog"):
        for index in range(per_class):
            files[f"{root}{label}/{label}{index}.png"] = image_bytes(seed=index + (10 if label == "dog" else 0))
    return files


def workspace_files(workspace: Path) -> list[str]:
    folder = workspace / "datasets"
    return sorted(str(path.relative_to(workspace)) for path in folder.rglob("*")) if folder.exists() else []


def test_zip_of_class_folders_is_stored_as_rgb_and_junk_is_ignored(workspace):
    files = class_folders(root="my photos/")
    files["my photos/cat/grey.png"] = image_bytes("L", seed=5)
    files["my photos/dog/see-through.png"] = image_bytes("RGBA", seed=6)
    files["my photos/dog/photo.jpg"] = image_bytes(fmt="JPEG", seed=7)
    files["__MACOSX/my photos/cat/._cat0.png"] = b"\x00\x05\x16\x07 resource fork"
    files["my photos/.DS_Store"] = b"junk"
    files["my photos/cat/.hidden.png"] = b"not an image"
    files["my photos/README.txt"] = b"my cats and dogs"
    info = ds.register_image_dataset("pets", "pets.zip", make_zip(files))
    assert info.key == "pets" and info.task == "image_classification" and not info.builtin
    assert "13 images in 2 classes" in info.description
    splits = ds.load_image_splits("pets", seed=0)
    assert splits.label_names == ["cat", "dog"] and sum(splits.sizes().values()) == 13
    rows = [row for name in ("train", "validation", "test") for row in splits.split(name)]
    assert {row["image"].mode for row in rows} == {"RGB"}
    stored = list(ds.stored_table("pets"))
    # The RGBA image was laid on white: its stored pixels equal the alpha-composite, not the hidden RGB.
    original = Image.open(io.BytesIO(files["my photos/dog/see-through.png"]))
    expected = np.asarray(image_uploads.to_rgb(original))
    assert any(np.array_equal(np.asarray(row["image"]), expected) for row in stored)
    from core.data import list_datasets

    listed = {entry.key: entry for entry in list_datasets()}
    assert listed["pets"].task == "image_classification"  # core.data's registry reads the same spec.yaml
    assert "pets" in [entry.key for entry in ds.list_image_datasets()]
    assert ds.open_image("pets#0").mode == "RGB"


def test_zip_with_a_csv_of_paths_and_labels(workspace):
    files = {f"img/{index}.png": image_bytes(seed=index) for index in range(20)}
    csv = "path,label\n" + "".join(f"./img/{index}.png,{'odd' if index % 2 else 'even'}\n" for index in range(20))
    ds.register_image_dataset("parity", "images.zip", make_zip(files), csv_filename="labels.csv", csv_data=csv.encode())
    splits = ds.load_image_splits("parity")
    assert splits.label_names == ["even", "odd"] and sum(splits.sizes().values()) == 20
    assert "labels.csv" in splits.source


def truncated_png() -> bytes:
    data = image_bytes(size=(64, 64))
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "files, pattern",
    [
        ({"a.png": image_bytes(), "b.png": image_bytes(seed=1)}, "no class folders"),
        (
            {**class_folders(), "dog/broken.png": b"this is not a png at all"},
            r"dog/broken.png in upload.zip is not a readable image",
        ),
        ({**class_folders(), "cat/cut.png": truncated_png()}, r"cat/cut.png in upload.zip is not a readable image"),
        ({**class_folders(), "cat/empty.jpg": b""}, r"cat/empty.jpg in upload.zip is an empty file \(0 bytes\)"),
        ({**class_folders(), "../../evil/x.png": image_bytes()}, r"unsafe path '../../evil/x.png'"),
        ({**class_folders(), "/etc/x.png": image_bytes()}, r"unsafe path '/etc/x.png'"),
        (
            {f"cat/{i}.png": image_bytes(seed=i) for i in range(4)},
            r"Every image in upload.zip has the class 'cat'.*at least two classes",
        ),
        (
            {**{f"cat/{i}.png": image_bytes(seed=i) for i in range(3)}, "dog/0.png": image_bytes()},
            r"class 'dog' in upload.zip has only one image",
        ),
        ({"notes/readme.txt": b"hello"}, r"holds no images"),
        (class_folders(per_class=2), r"The upload upload.zip has too few rows \(4\) to fill the validation and test split"),
    ],
)
def test_bad_zips_are_refused_with_a_sentence_and_nothing_is_written(workspace, tmp_path, files, pattern):
    with pytest.raises(UserError, match=pattern):
        ds.register_image_dataset("bad", "upload.zip", make_zip(files))
    assert workspace_files(workspace) == []
    assert not (tmp_path / "evil").exists() and not Path("/etc/x.png").exists()


def test_not_a_zip_is_refused(workspace):
    with pytest.raises(UserError, match=r"upload.zip is not a zip file"):
        ds.register_image_dataset("bad", "upload.zip", b"PK but not really")
    assert workspace_files(workspace) == []


def test_zip_bomb_is_refused_before_unpacking(workspace, monkeypatch):
    files = class_folders()
    files["cat/huge.bmp"] = bytes(80 * 2**20)  # 80 MB of zeros packs into about 80 KB
    data = make_zip(files)
    assert len(data) < 2**20
    with pytest.raises(UserError, match=r"would unpack to 80 MB.*zip bomb"):
        ds.register_image_dataset("bomb", "upload.zip", data)
    monkeypatch.setenv(image_uploads.MAX_UNPACKED_ENV, "0.001")  # a plain cap on the unpacked size, too
    with pytest.raises(UserError, match="over the 0 MB limit"):
        ds.register_image_dataset("bomb", "upload.zip", make_zip(class_folders(), compression=zipfile.ZIP_STORED))
    assert workspace_files(workspace) == []


@pytest.mark.parametrize(
    "csv, pattern",
    [
        (
            "path,label\nimg/0.png,a\nimg/1.png,b\nimg/missing.png,a\n",
            r"1 paths in labels.csv are not images in upload.zip, the first 'img/missing.png'",
        ),
        ("file,class\nimg/0.png,a\n", r"labels.csv needs the columns path and label"),
        ("path,label\nimg/0.png,a\nimg/1.png,\n", r"Line 3 of labels.csv \('img/1.png'\) has no label"),
        ("path,label\nimg/0.png,a\nimg/1.png,a\n", r"Every image in upload.zip has the class 'a'"),
    ],
)
def test_bad_csv_uploads_are_refused(workspace, csv, pattern):
    files = {f"img/{index}.png": image_bytes(seed=index) for index in range(2)}
    with pytest.raises(UserError, match=pattern):
        ds.register_image_dataset("bad", "upload.zip", make_zip(files), csv_filename="labels.csv", csv_data=csv.encode())
    assert workspace_files(workspace) == []


def test_names_are_sanitised_and_never_overwrite(workspace):
    data = make_zip(class_folders())
    info = ds.register_image_dataset("../../my pets", "upload.zip", data)
    assert info.key == "my_pets" and (workspace / "datasets" / "my_pets" / ds.DATA_FILE).is_file()
    with pytest.raises(UserError, match="already exists"):
        ds.register_image_dataset("my pets", "upload.zip", data)
    for taken in ("digits", "movie-reviews"):
        with pytest.raises(UserError, match="name of a built-in dataset"):
            ds.register_image_dataset(taken, "upload.zip", data)


# ---------------------------------------------------------------------------------------------
# Augmentation


def test_augmentation_is_deterministic_with_a_seed_and_pure():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    before = image.tobytes()
    params = aug.AugmentParams(crop_scale=0.5, flip=0.5, rotation=20, brightness=0.3, contrast=0.3, saturation=0.3)
    first = [aug.augment(image, params, np.random.default_rng(7)).tobytes() for _ in range(2)]
    assert first[0] == first[1]
    rng = np.random.default_rng(7)
    draws = {aug.augment(image, params, rng).tobytes() for _ in range(5)}
    assert len(draws) == 5  # one generator, five different augmentations
    assert image.tobytes() == before
    assert aug.augment(image, params, np.random.default_rng(8)).size == image.size
    identity = aug.augment(image, aug.AugmentParams(), np.random.default_rng(0))
    assert identity.tobytes() == before and identity is not image
    flipped = aug.augment(image, aug.AugmentParams(flip=1.0), np.random.default_rng(0))
    assert np.array_equal(np.asarray(flipped), np.asarray(image)[:, ::-1])


def test_preview_grid_repeats_for_a_seed():
    images = [Image.new("RGB", (32, 32), colour) for colour in ("red", "green", "blue")]
    params = aug.AugmentParams(crop_scale=0.3, rotation=45, brightness=0.5)
    grid = aug.preview_grid(images, params, seed=1, n=7)
    assert len(grid) == 7 and all(picture.size == (32, 32) for picture in grid)
    assert [p.tobytes() for p in grid] == [p.tobytes() for p in aug.preview_grid(images, params, seed=1, n=7)]
    assert [p.tobytes() for p in grid] != [p.tobytes() for p in aug.preview_grid(images, params, seed=2, n=7)]
    assert aug.preview_grid([], params) == []


def test_augmentation_settings_are_checked_and_read_from_a_config():
    from core.config import RunConfig

    assert aug.params_from_config(RunConfig()) == aug.AugmentParams() and not aug.AugmentParams().active
    config = RunConfig()
    config.aug_flip, config.aug_rotation = 0.5, 15  # fields a later RunConfig may carry
    assert aug.params_from_config(config) == aug.AugmentParams(flip=0.5, rotation=15.0)
    problems = aug.AugmentParams(crop_scale=0, flip=2, rotation=-1, brightness=1.5).problems()
    assert len(problems) == 4 and all(problem.endswith(".") for problem in problems)


# ---------------------------------------------------------------------------------------------
# The task


def image_config(model, **overrides):
    from core.config import RunConfig

    values = {
        "name": "tiny image run",
        "task": "image_classification",
        "model": str(model),
        "dataset": "planted-squares",
        "max_rows": 200,
        "epochs": 1,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "eval_steps": 10,
        "logging_steps": 5,
        "device": "cpu",
    }
    values.update(overrides)
    return RunConfig(**values)


def test_prepare_augments_training_batches_only(shared_workspace, tiny_vit):
    from core.tasks.image_classification import ImageClassification

    config = image_config(tiny_vit)
    config.aug_flip, config.aug_crop_scale, config.aug_brightness = 0.5, 0.6, 0.3
    prepared = ImageClassification().prepare(config, progress=lambda fraction, message: None)
    assert prepared.head_names == ("classifier",) and prepared.label_names == ["blue square", "red square"]
    train, test = prepared.datasets["train"], prepared.datasets["test"]
    assert train[0]["pixel_values"].shape == (3, 32, 32)
    assert not torch.equal(train[0]["pixel_values"], train[0]["pixel_values"])  # a new augmentation per visit
    assert torch.equal(test[0]["pixel_values"], test[0]["pixel_values"])
    batch = prepared.collator([test[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["labels"].dtype == torch.long
    assert prepared.model(**batch).logits.shape == (4, 2)
    assert list(prepared.raw["test"].columns[:3]) == ["image", "label", "row"] and len(prepared.raw["test"]) == len(test)
    logits = np.random.default_rng(0).normal(size=(len(test), 2))
    labels = np.array([prepared.label_names.index(label) for label in prepared.raw["test"]["label"]])
    frame = ImageClassification().predictions(logits, labels, prepared, "test")
    assert list(frame.columns) == [
        "image",
        "gold",
        "predicted",
        "confidence",
        "loss",
        "correct",
        "p(blue square)",
        "p(red square)",
    ]
    assert frame["image"][0].startswith("planted-squares#") and ds.open_image(frame["image"][0]).size == (64, 64)


def test_image_size_shrinks_a_convolutional_models_processor(shared_workspace, mobilenet_dir):
    from core.tasks.image_classification import load_model, load_processor

    processor = load_processor(str(mobilenet_dir), 96)
    pixels = processor(Image.new("RGB", (300, 200)), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 96, 96) and processor.size["shortest_edge"] == 110
    model = load_model(str(mobilenet_dir), ["a", "b", "c"], dropout=0.1)
    assert model.classifier.out_features == 3 and model.config.hidden_size == 1280
    assert all(module.momentum == 0.1 for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d))
    assert model(pixel_values=pixels).logits.shape == (1, 3)


def test_preflight_refuses_what_cannot_work(shared_workspace, tiny_vit, tiny_bert):
    from core.tasks.image_classification import ImageClassification

    task = ImageClassification()
    with pytest.raises(UserError, match="no image dataset 'movie-reviews'"):
        task.preflight(image_config(tiny_vit, dataset="movie-reviews"))
    with pytest.raises(UserError, match="bert model, which cannot classify images"):
        task.preflight(image_config(tiny_bert))
    config = image_config(tiny_vit)
    config.image_size = 64
    with pytest.raises(UserError, match="takes images of exactly 32 pixels"):
        task.preflight(config)
    config = image_config(tiny_vit)
    config.aug_flip = 1.5
    with pytest.raises(UserError, match="flip probability"):
        task.preflight(config)


def test_freeze_strategy_finds_the_layer_stacks(shared_workspace, tiny_vit, mobilenet_dir):
    from core.models import head_names
    from core.strategies import apply_strategy, encoder_layers, trainable_parameters
    from core.tasks.image_classification import load_model

    for source, layers in ((tiny_vit, 2), (mobilenet_dir, 16)):
        model = load_model(str(source), ["a", "b"], dropout=0.0)
        assert len(encoder_layers(model)) == layers and head_names(model) == ("classifier",)
        frozen = apply_strategy(model, image_config(source, strategy="freeze", freeze_layers=layers - 1), head_names(model))
        trainable, total = trainable_parameters(frozen)
        assert 0 < trainable < total
        assert all(p.requires_grad for p in encoder_layers(model)[-1].parameters())
        assert not any(p.requires_grad for p in encoder_layers(model)[0].parameters())
    # LoRA on ViT: transformers 5 names its attention projections q_proj/v_proj (BERT's are query/value).
    model = load_model(str(tiny_vit), ["a", "b"], dropout=0.0)
    with pytest.raises(UserError, match="q_proj"):
        apply_strategy(model, image_config(tiny_vit, strategy="lora"), head_names(model))
    adapted = apply_strategy(model, image_config(tiny_vit, strategy="lora", lora_targets=["q_proj", "v_proj"]), head_names(model))
    trainable, total = trainable_parameters(adapted)
    assert 0 < trainable < total / 2 and adapted(pixel_values=torch.zeros(1, 3, 32, 32)).logits.shape == (1, 2)


def test_tiny_vit_learns_planted_squares_through_the_job_manager(workspace, tiny_vit, monkeypatch):
    from core import jobs
    from core.checkpoints import BEFORE_MODEL, FINAL_MODEL
    from core.store import RunStore

    # A 24k-parameter model gains nothing from a second thread, and on a busy 2-core machine torch's
    # threads wait on each other: one step takes 0.25 s with two threads and 0.013 s with one.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = image_config(tiny_vit, max_rows=300, epochs=3, learning_rate=3e-3, eval_steps=15, logging_steps=5)
    run = jobs.submit(config)
    run = jobs.wait(run.id, timeout=RUN_TIMEOUT)
    assert run.status == "completed", jobs.log_tail(run.id, 40)
    metrics = RunStore().metrics(run.id)

    def series(name):
        return metrics[metrics["name"] == name].sort_values("step")["value"].tolist()

    train_loss, accuracy, eval_loss = series("train_loss"), series("eval_accuracy"), series("eval_loss")
    assert train_loss[-1] < train_loss[0]
    assert eval_loss[-1] < eval_loss[0]
    assert accuracy[-1] > accuracy[0] and accuracy[-1] >= 0.9, accuracy
    directory = run.directory
    for name in ("test_before", "test_after", "validation_after"):
        frame = pd.read_parquet(directory / "predictions" / f"{name}.parquet")
        assert list(frame.columns[:6]) == ["image", "gold", "predicted", "confidence", "loss", "correct"]
        assert frame["image"].str.startswith("planted-squares#").all()
    after = pd.read_parquet(directory / "predictions" / "test_after.parquet")
    assert after["correct"].mean() >= 0.9
    report = json.loads((directory / "reports" / "test_after.json").read_text())["report"]
    assert set(report) >= {"blue square", "red square", "accuracy", "macro avg"}
    assert (directory / "reports" / "test_before.json").is_file()
    for folder in (BEFORE_MODEL, FINAL_MODEL):
        saved = directory / folder
        assert (saved / "preprocessor_config.json").is_file() and (saved / "model.safetensors").is_file()
