"""The Data page's "Image + text" mode under Streamlit's AppTest: built-in pairs, and a CSV + zip upload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_images import image_bytes, make_zip  # the image upload tests' helpers

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "views" / "data.py")

pytestmark = pytest.mark.usefixtures("workspace")


def pair_page(**state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["data_modality"] = "Image + text"
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def test_builtin_shapes_captions_show_sizes_pairs_and_caption_lengths():
    at = pair_page()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="data_pair_builtin_image_text_contrastive").value == "shapes-captions"
    assert texts(at.markdown)[-1].startswith("**1,200 pairs**, 12 classes: blue circle, blue square")
    assert {m.label: m.value for m in at.metric} == {"train pairs": "962", "validation pairs": "119", "test pairs": "119"}
    (grid,) = at.image
    assert len(grid.value) == 12
    assert all(
        ": " in caption and any(shape in caption for shape in ("circle", "square", "triangle")) for caption in grid.captions
    )
    (lengths,) = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert [trace["name"] for trace in lengths["data"]] == ["train", "validation", "test"]
    assert all(widget.help for widget in [*at.radio, *at.selectbox, *at.number_input])
    # Labelled pairs list the fusion built-in instead.
    at.radio(key="data_pair_kind").set_value("Labelled pairs for fusion").run()
    assert not at.exception
    assert texts(at.markdown)[-1] == "**800 pairs**, 2 classes: cold, warm"


def test_upload_says_what_is_wrong_then_saves_and_shows_the_dataset(workspace):
    at = pair_page(data_pair_source="Upload")
    assert "header row image,caption" in texts(at.info)[0]
    lines = [f"{i}.png,a picture numbered {i}" for i in range(12)]
    at.file_uploader(key="data_pair_zip").upload(
        "pics.zip", make_zip({f"pics/{i}.png": image_bytes(seed=i) for i in range(12)}), "application/zip"
    )
    at.file_uploader(key="data_pair_csv").upload(
        "bad.csv", ("image,caption\n" + "\n".join(lines + ["nope.png,lost"])).encode(), "text/csv"
    ).run()
    at.button(key="data_pair_save").click().run()
    assert not at.exception
    assert texts(at.error) == [
        (
            "Line 14 of bad.csv names 'nope.png', which is not an image in pics.zip; "
            "write each path as it appears inside the zip (folder/name.jpg)."
        )
    ]
    assert not (workspace / "datasets").exists() or not list((workspace / "datasets").iterdir())
    at.file_uploader(key="data_pair_csv").upload(
        "good.csv", ("image,caption\n" + "\n".join(lines + lines[:2])).encode(), "text/csv"
    ).run()
    at.button(key="data_pair_save").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "Saved 'pics'" in texts(at.success)[0] and "2 duplicate lines dropped" in texts(at.success)[0]
    assert at.radio(key="data_pair_source").value == "Registered"
    assert at.selectbox(key="data_pair_registered_image_text_contrastive").value == "pics"
    assert texts(at.markdown)[-1] == "**12 pairs**, no labels"
    assert sum(int(m.value) for m in at.metric) == 12
    # The text mode lists only text tables, not this upload.
    at.session_state["data_source"] = "Registered"  # not the built-in default, which would extract movie reviews
    at.segmented_control(key="data_modality").set_value("Text").run()
    assert not at.exception and not at.error
    assert "No datasets are registered yet" in texts(at.info)[0]
