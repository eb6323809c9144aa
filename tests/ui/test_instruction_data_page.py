"""The Data page's Instructions mode under Streamlit's AppTest: planted answers with lengths, and a CSV upload."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.instructions.data import PROMPT, RESPONSE, load_instruction_splits

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "views" / "data.py")

pytestmark = pytest.mark.usefixtures("workspace")


def instruction_page(**state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["data_modality"] = "Instructions"
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def array(value) -> list:
    """Plotly ships arrays base64-encoded ({"dtype", "bdata"}); plain lists pass through."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def histogram_values(at: AppTest) -> list[list[float]]:
    """Per plotly chart (prompts, then responses), every value its histograms count."""
    return [[x for trace in json.loads(chart.proto.spec)["data"] for x in array(trace["x"])] for chart in at.get("plotly_chart")]


def test_planted_answers_show_sizes_preview_word_lengths_and_the_over_length_count():
    at = instruction_page(data_instr_builtin="planted-answers")
    assert not at.exception, [e.message for e in at.exception]
    assert at.segmented_control(key="data_modality").value == "Instructions"
    assert "**1,200 prompt/response pairs**, 8 distinct answers: amber, cedar, cobalt" in texts(at.markdown)[-1]
    assert {m.label: m.value for m in at.metric} == {"train pairs": "960", "validation pairs": "120", "test pairs": "120"}
    (preview,) = at.dataframe
    assert list(preview.value.columns) == [PROMPT, RESPONSE, "split"] and len(preview.value) == 20
    assert preview.value[PROMPT].str.startswith("Copy the marked word. ").all()
    # No language model is ready in a fresh workspace: words are counted, and the page says so.
    assert any("lengths are counted in words" in caption for caption in texts(at.caption))
    assert texts(at.success) == [
        "0 of 1,200 prompts + responses are longer than 256 words; their prompts are cut from the left when training."
    ]
    prompts, responses = histogram_values(at)
    assert len(prompts) == len(responses) == 1200 and min(prompts) == 11 and max(prompts) == 17 and set(responses) == {1}
    # A shorter max length: the count is the pairs whose words exceed it.
    rows = load_instruction_splits("planted-answers").all_rows()
    over = int((rows[PROMPT].str.split().str.len() + 1 > 14).sum())
    assert 0 < over < 1200
    at.number_input(key="data_instr_max_length").set_value(14).run()
    assert not at.exception
    assert texts(at.warning) == [
        f"{over:,} of 1,200 prompts + responses are longer than 14 words; their prompts are cut from the left when training."
    ]


def test_an_upload_without_a_response_column_says_so_then_saves_once_mapped(workspace):
    at = instruction_page(data_instr_source="Upload")
    assert "prompt column and a response column" in texts(at.info)[0]
    records = [{PROMPT: f"What is {i} times two?", "reply": f"{2 * i}, twice {i}"} for i in range(30)]
    at.file_uploader(key="data_instr_upload").upload(
        "doubles.csv", pd.DataFrame(records).to_csv(index=False).encode(), "text/csv"
    )
    at.run()
    assert not at.exception
    assert at.selectbox(key="data_instr_prompt_column").value == PROMPT
    assert at.selectbox(key="data_instr_response_column").value is None  # no column name fits: the page asks
    at.button(key="data_instr_save").click().run()
    assert texts(at.error) == [
        "The uploaded file doubles.csv has no response column 'response'; its columns are 'prompt', 'reply' — choose the "
        "prompt and response columns from those (or give a JSONL / Parquet file with a messages column of chat turns)."
    ]
    assert not (workspace / "datasets").exists() or not list((workspace / "datasets").iterdir())
    at.selectbox(key="data_instr_response_column").set_value("reply").run()
    at.button(key="data_instr_save").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert texts(at.success)[0].startswith("Saved 'doubles': 30 prompt/response pairs uploaded from doubles.csv")
    assert at.radio(key="data_instr_source").value == "Registered"
    assert at.selectbox(key="data_instr_registered").value == "doubles"
    assert texts(at.markdown)[-1] == "**30 prompt/response pairs**, free-text answers"


@dataclass(frozen=True)
class ReadyModel:
    """Stands in for a built-in decoder whose files are ready: only what the page asks of one."""

    folder: Path
    key: str = "tiny-decoder"
    title: str = "Tiny word-level decoder tokenizer"

    def serves(self, task_key: str, modality: str) -> bool:
        return modality == "text"

    def is_ready(self) -> bool:
        return True

    def local_dir(self, progress=None) -> Path:
        return self.folder


def test_a_ready_model_counts_tokens_as_training_encodes_them(tmp_path, monkeypatch):
    """A word-level tokenizer without a chat template: a prompt is its words and a newline, a response its words and
    the end-of-text token, so each pair is one token longer than its words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from core import catalog
    from core.instructions.data import PLANTED_ANSWER_WORDS, PLANTED_FILLERS

    vocabulary = ["<unk>", "<eos>", "Copy", "the", "marked", "word.", *PLANTED_FILLERS]
    vocabulary += [f"[{word}]" for word in PLANTED_ANSWER_WORDS] + list(PLANTED_ANSWER_WORDS)
    words = Tokenizer(models.WordLevel({word: i for i, word in enumerate(dict.fromkeys(vocabulary))}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<eos>", unk_token="<unk>").save_pretrained(tmp_path)
    monkeypatch.setitem(catalog.BUILTIN_MODELS, "tiny-decoder", ReadyModel(tmp_path))

    at = instruction_page(data_instr_builtin="planted-answers", data_instr_max_length=15)
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="data_instr_tokenizer").value == "tiny-decoder"
    assert not any("counted in words" in caption for caption in texts(at.caption))
    rows = load_instruction_splits("planted-answers").all_rows()
    prompt_words = rows[PROMPT].str.split().str.len()
    prompts, responses = histogram_values(at)
    assert sorted(prompts) == sorted(prompt_words) and set(responses) == {2}  # the answer and <eos>
    over = int((prompt_words + 2 > 15).sum())
    assert texts(at.warning) == [
        f"{over:,} of 1,200 prompts + responses are longer than 15 tokens; their prompts are cut from the left when training."
    ]
