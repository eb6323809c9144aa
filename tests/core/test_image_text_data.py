"""Image-text pair datasets: the three built-ins, splits, references, and CSV + zip uploads."""

from __future__ import annotations

import numpy as np
import pytest
from test_images import image_bytes, make_zip  # the image upload tests' helpers

from core.errors import UserError
from core.image_text import builtin as pair_builtin
from core.image_text import data as pairs
from core.image_text.shapes import COLOURS, SHAPES
from core.images import builtin as image_builtin
from core.images import datasets as image_data

WARM, COLD = (np.array(image_builtin.PLANTED_SQUARE_COLOURS[square]) for square in ("red square", "blue square"))


@pytest.fixture(scope="module")
def shared_workspace(tmp_path_factory):
    """One workspace for the module's built-ins, so each is generated once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_WORKSPACE", str(tmp_path_factory.mktemp("pairs-shared-workspace")))
        yield


# ---------------------------------------------------------------------------------------------
# Built-ins


def test_shapes_captions_split_deterministically_and_keep_masks_where_the_caption_says(shared_workspace):
    splits = pairs.load_pair_splits("shapes-captions", kind=pairs.CONTRASTIVE, seed=3)
    again = pairs.load_pair_splits("shapes-captions", kind=pairs.CONTRASTIVE, seed=3)
    other = pairs.load_pair_splits("shapes-captions", kind=pairs.CONTRASTIVE, seed=4)
    assert list(splits.train["row"]) == list(again.train["row"]) != list(other.train["row"])
    assert sum(splits.sizes().values()) == 1200 and min(splits.sizes().values()) >= 110
    assert splits.label_names == sorted(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
    assert splits.prompt_template.format(label="red circle") == "a red circle"
    for row in splits.test.select(range(20)):
        mask = np.asarray(row["mask"]) > 0
        colour, shape = row["label"].split()
        assert shape in row["text"] and colour in row["text"]
        ys, xs = np.nonzero(mask)
        assert len(ys) > 20
        vertical = "top" if ys.mean() < 32 else "bottom"
        horizontal = "left" if xs.mean() < 32 else "right"
        assert f"{vertical} {horizontal}" in row["text"]
        pixels = np.asarray(row["image"])[mask].astype(int)
        assert np.abs(pixels - np.array(COLOURS[colour])).max() <= 1
    frame = splits.frame("test")
    assert list(frame.columns) == ["image", "text", "label", "row"]
    record = pairs.open_pair_record(frame["image"][0])
    assert record["text"] == frame["text"][0] and record["label"] == frame["label"][0]
    assert record["image"].mode == "RGB" and record["mask"].dtype == bool and record["mask"].shape == (64, 64)


def test_fashion_mnist_captions_vary_beyond_the_class_names(shared_workspace):
    splits = pairs.load_pair_splits("fashion-mnist-captions", kind=pairs.CONTRASTIVE)
    assert splits.sizes() == {"train": 2400, "validation": 300, "test": 300}
    assert splits.label_names == sorted(image_builtin.FASHION_MNIST_LABELS)
    frame = splits.frame("train")
    assert frame["label"].value_counts().eq(240).all()  # 300 per class, stratified 80/10/10
    captions = set(frame["text"])
    assert len(captions) > 3 * len(splits.label_names)
    assert not captions & set(splits.label_names) and all(caption.strip() for caption in captions)
    assert any(caption.startswith("product shot: ") for caption in captions) and any(", front view" in c for c in captions)
    boots = frame[frame["label"] == "Ankle boot"]["text"]
    assert boots.str.contains("boot").all()  # captions describe their image's class, in other words
    assert "zalando-datasets/fashion_mnist" in splits.source and splits.prompt_template == "a photo of a {label}"
    record = pairs.open_pair_record(frame["image"][0])
    assert record["image"].size == (28, 28) and record["mask"] is None


def test_fashion_mnist_captions_missing_says_how_to_install_it(workspace, monkeypatch, tmp_path):
    monkeypatch.setattr(image_builtin, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"apt-get install -y dataset-fashion-mnist"):
        pairs.load_pair_splits("fashion-mnist-captions", kind=pairs.CONTRASTIVE)
    assert not list((workspace / "cache" / "image_text").iterdir())


def test_planted_pairs_carry_the_class_in_exactly_one_modality(shared_workspace):
    splits = pairs.load_pair_splits("planted-pairs", kind=pairs.FUSION)
    assert splits.label_names == ["cold", "warm"] and splits.sizes() == {"train": 640, "validation": 80, "test": 80}
    frame = splits.frame("train")
    assert set(frame["evidence"]) == {"image", "text"}
    assert 0.35 < (frame["evidence"] == "image").mean() < 0.65
    all_keywords = {word for words in pair_builtin.PLANTED_PAIR_KEYWORDS.values() for word in words}
    for row in splits.train.select(range(60)):
        image, mask = np.asarray(row["image"]).astype(int), np.asarray(row["mask"]) > 0
        words = set(row["text"].split())
        red = (np.abs(image - WARM).max(axis=2) <= 10).sum()
        blue = (np.abs(image - COLD).max(axis=2) <= 10).sum()
        if row["evidence"] == "image":
            assert mask.sum() == 144 and row["keyword"] == "" and not words & all_keywords
            expected = WARM if row["label"] == "warm" else COLD
            assert (image[mask] == expected).all()
        else:
            assert not mask.any() and red == blue == 0
            assert row["keyword"] in pair_builtin.PLANTED_PAIR_KEYWORDS[row["label"]] and words & all_keywords == {row["keyword"]}
    record = pairs.open_pair_record(frame["image"][0])
    assert record["evidence"] == frame["evidence"][0] and record["keyword"] == frame["keyword"][0]


def test_lists_kinds_and_unknown_names(shared_workspace):
    assert [info.key for info in pairs.list_pair_datasets(pairs.CONTRASTIVE)] == ["shapes-captions", "fashion-mnist-captions"]
    assert [info.key for info in pairs.list_pair_datasets(pairs.FUSION)] == ["planted-pairs"]
    assert all(info.builtin and info.task == pairs.FUSION for info in pairs.list_pair_datasets(pairs.FUSION))
    assert pairs.is_pair_dataset("planted-pairs", pairs.FUSION) and not pairs.is_pair_dataset("planted-pairs", pairs.CONTRASTIVE)
    assert not pairs.is_pair_dataset("planted-squares", pairs.FUSION)
    with pytest.raises(UserError, match=r"'planted-pairs' is a labelled-pair dataset .*not a caption dataset.*shapes-captions"):
        pairs.load_pair_splits("planted-pairs", kind=pairs.CONTRASTIVE)
    with pytest.raises(UserError, match=r"no image-text dataset called 'coco'.*planted-pairs"):
        pairs.load_pair_splits("coco", kind=pairs.CONTRASTIVE)
    with pytest.raises(UserError, match="references look like"):
        pairs.open_pair_record("planted-pairs-3")
    with pytest.raises(UserError, match="has 800 pairs"):
        pairs.open_pair_record("planted-pairs#800")
    with pytest.raises(UserError, match="not a kind of image-text dataset"):
        pairs.list_pair_datasets("captions")


def test_max_rows_subsamples_keeping_each_class(shared_workspace):
    splits = pairs.load_pair_splits("planted-pairs", kind=pairs.FUSION, max_rows=100, seed=1)
    assert sum(splits.sizes().values()) == 100
    assert splits.frame("train")["label"].value_counts().to_dict() == {"cold": 40, "warm": 40}


# ---------------------------------------------------------------------------------------------
# Uploads


def photos(count=12, root="photos/") -> dict[str, bytes]:
    return {f"{root}{i}.png": image_bytes(colour=(6 * i, 100, 200 - 4 * i)) for i in range(count)}


def csv(header: str, lines: list[str]) -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode()


def caption_lines(count=12) -> list[str]:
    return [f"{i}.png,picture number {i}" for i in range(count)]


def fusion_lines(count=12) -> list[str]:
    return [f"{i}.png,text number {i},{'a' if i % 2 else 'b'}" for i in range(count)]


def dataset_folders(workspace) -> list[str]:
    return sorted(path.name for path in (workspace / "datasets").iterdir())


def test_caption_upload_drops_duplicates_and_loads(workspace):
    lines = caption_lines() + [
        "0.png,picture number 0",
        "photos/1.png,  picture number 1 ",
        "2.png,another caption of two",
        "3.png,picture number 4",
    ]  # 2 exact duplicates; a second caption; a caption shared by two images
    info = pairs.register_pair_dataset(
        "My captions!", pairs.CONTRASTIVE, "shots.zip", make_zip(photos()), "pairs.csv", csv("image,caption,source", lines)
    )
    assert info.key == "My_captions" and info.task == pairs.CONTRASTIVE and not info.builtin
    assert "14 pairs of 12 images, no labels" in info.description and "2 duplicate lines dropped" in info.description
    assert [i.key for i in pairs.list_pair_datasets(pairs.CONTRASTIVE)][-1] == "My_captions"
    assert pairs.is_pair_dataset("My_captions", pairs.CONTRASTIVE) and not pairs.is_pair_dataset("My_captions", pairs.FUSION)
    splits = pairs.load_pair_splits("My_captions", kind=pairs.CONTRASTIVE, seed=1)
    assert splits.label_names == [] and sum(splits.sizes().values()) == 14 and min(splits.sizes().values()) >= 1
    assert list(pairs.load_pair_splits("My_captions", kind=pairs.CONTRASTIVE, seed=1).train["row"]) == list(splits.train["row"])
    assert set(splits.frame("train")["label"]) == {""}
    texts = [row["text"] for name in ("train", "validation", "test") for row in splits.split(name)]
    assert sorted(texts).count("picture number 1") == 1 and "picture number 4" in texts
    record = pairs.open_pair_record("My_captions#2")
    assert record["image"].getpixel((0, 0)) == (12, 100, 192) and record["mask"] is None


def test_uploads_stay_out_of_the_other_dataset_lists(workspace):
    from core.data import list_datasets
    from core.ner.data import list_ner_datasets

    pairs.register_pair_dataset(
        "pairs", pairs.FUSION, "shots.zip", make_zip(photos()), "pairs.csv", csv("image,text,label", fusion_lines())
    )
    assert [info.key for info in image_data.list_image_datasets() if not info.builtin] == []
    assert not image_data.is_image_dataset("pairs")
    assert [info.key for info in list_ner_datasets() if not info.builtin] == []
    # The text registry reads every spec.yaml: it must list this one under its task, not as damaged.
    (listed,) = [info for info in list_datasets() if info.key == "pairs"]
    assert listed.task == pairs.FUSION and "damaged" not in listed.description


def test_fusion_upload_is_stratified_by_label(workspace):
    lines = [f"{i}.png,text {i},{'cat' if i < 20 else 'dog'}" for i in range(40)]
    pairs.register_pair_dataset(
        "animals", pairs.FUSION, "a.zip", make_zip(photos(40, root="")), "a.csv", csv("Image,Text,Label", lines)
    )
    splits = pairs.load_pair_splits("animals", kind=pairs.FUSION)
    assert splits.label_names == ["cat", "dog"]
    for name, share in (("train", 16), ("validation", 2), ("test", 2)):
        assert splits.frame(name)["label"].value_counts().to_dict() == {"cat": share, "dog": share}


def test_a_caption_upload_may_keep_labels_for_zero_shot(workspace):
    lines = [f"{i}.png,caption {i},{'red' if i % 2 else 'blue'}" for i in range(12)]
    pairs.register_pair_dataset(
        "labelled", pairs.CONTRASTIVE, "a.zip", make_zip(photos()), "a.csv", csv("image,caption,label", lines)
    )
    splits = pairs.load_pair_splits("labelled", kind=pairs.CONTRASTIVE)
    assert splits.label_names == ["blue", "red"] and "{label}" in splits.prompt_template


BROKEN_PNG = image_bytes()[:40]


@pytest.mark.parametrize(
    "kind, files, header, lines, pattern",
    [
        (pairs.CONTRASTIVE, photos(), "image,text", caption_lines(), r"lacks the column caption .*header row image,caption"),
        (pairs.FUSION, photos(), "image,text", caption_lines(), r"lacks the column label .*image,text,label"),
        (
            pairs.CONTRASTIVE,
            photos(),
            "image,caption",
            caption_lines() + ["gone.png,where"],
            r"Line 14 of pairs.csv names 'gone.png', which is not an image in shots.zip"
            r"; write each path as it appears inside the zip",
        ),
        (
            pairs.CONTRASTIVE,
            photos(),
            "image,caption",
            caption_lines() + ["a.png,x", "b.png,y"],
            r"2 lines of pairs.csv name images that are not in shots.zip, the first line 14 \('a.png'\)",
        ),
        (
            pairs.CONTRASTIVE,
            photos(),
            "image,caption",
            caption_lines() + [",no image"],
            r"Line 14 of pairs.csv has no image path",
        ),
        (
            pairs.CONTRASTIVE,
            {**photos(), "photos/bad.png": BROKEN_PNG},
            "image,caption",
            caption_lines() + ["bad.png,broken"],
            r"photos/bad.png in shots.zip is not a readable image",
        ),
        (
            pairs.CONTRASTIVE,
            {**photos(), "photos/empty.png": b""},
            "image,caption",
            caption_lines() + ["empty.png,empty"],
            r"photos/empty.png in shots.zip is an empty file",
        ),
        (
            pairs.CONTRASTIVE,
            photos(),
            "image,caption",
            caption_lines() + ["3.png,  "],
            r"Line 14 of pairs.csv \('3.png'\) has an empty caption",
        ),
        (
            pairs.FUSION,
            photos(),
            "image,text,label",
            fusion_lines() + ["3.png,hello,"],
            r"Line 14 of pairs.csv \('3.png'\) has no label; fill it in",
        ),
        (
            pairs.CONTRASTIVE,
            photos(),
            "image,caption,label",
            ["0.png,zero,x", *caption_lines()[1:]],
            r"Line 3 of pairs.csv \('1.png'\) has no label.*or drop the label column",
        ),
        (
            pairs.CONTRASTIVE,
            photos(),
            "image,caption",
            caption_lines(8) + caption_lines(8),
            r"8 distinct pairs \(8 duplicate lines dropped\), fewer than the 10",
        ),
        (
            pairs.FUSION,
            photos(),
            "image,text,label",
            [f"{i}.png,text {i},same" for i in range(12)],
            r"has the label 'same'.*two classes",
        ),
        (pairs.FUSION, photos(), "image,text,label", fusion_lines(11) + ["11.png,text 11,c"], r"class 'c' .*only one example"),
        (
            pairs.FUSION,
            photos(),
            "image,text,label",
            fusion_lines() + ["2.png,text number 2,a"],
            r"Lines 4 and 14 of pairs.csv give '2.png' the same text but the labels 'b' and 'a'",
        ),
        (
            pairs.CONTRASTIVE,
            photos(),
            "image,caption",
            ['0.png,"unclosed'],
            r"pairs.csv could not be read as a CSV \(.*EOF inside string.*\)"
            r"; save it as UTF-8 CSV with the header row image,caption",
        ),
    ],
)
def test_bad_uploads_are_refused_with_a_sentence_and_nothing_is_written(workspace, kind, files, header, lines, pattern):
    with pytest.raises(UserError, match=pattern):
        pairs.register_pair_dataset("bad", kind, "shots.zip", make_zip(files), "pairs.csv", csv(header, lines))
    assert dataset_folders(workspace) == []


def test_names_clash_with_built_ins_and_existing_datasets(workspace):
    upload = (make_zip(photos()), "pairs.csv", csv("image,caption", caption_lines()))
    for taken in ("shapes-captions", "planted-squares", "tweet-ner", "movie-reviews"):
        with pytest.raises(UserError, match=f"'{taken}' is the name of a built-in dataset"):
            pairs.register_pair_dataset(taken, pairs.CONTRASTIVE, "shots.zip", *upload)
    pairs.register_pair_dataset("mine", pairs.CONTRASTIVE, "shots.zip", *upload)
    with pytest.raises(UserError, match="A dataset named 'mine' already exists; choose another name, such as 'mine-2'"):
        pairs.register_pair_dataset("mine", pairs.FUSION, "shots.zip", *upload)
    with pytest.raises(UserError, match="is not a zip file"):
        pairs.register_pair_dataset("other", pairs.CONTRASTIVE, "shots.zip", b"not a zip", *upload[1:])
    assert dataset_folders(workspace) == ["mine"]
