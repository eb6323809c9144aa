"""Instruction-tuning runs on the Train, Runs and Inspect pages, under Streamlit's AppTest.

The run is the tiny LLaMA instruction-tuned in-process on planted-answers (tests/core/test_instruction_tuning.py,
trained once per session).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_instruction_tuning import answers_run, llama, tokenizer  # noqa: F401 - the session's shared fixtures

from core import inspect

TIMEOUT = 180
ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
RUNS = str(ROOT / "pages" / "views" / "runs.py")
TRAIN = str(ROOT / "pages" / "views" / "train.py")


@pytest.fixture
def workspace_of(answers_run, monkeypatch):  # noqa: F811 - the imported fixture, used by name
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(answers_run.directory.parents[1]))
    return answers_run


def test_the_runs_page_shows_the_sample_answers_step_by_step_and_the_answer_scores(workspace_of):
    run = workspace_of
    app = AppTest.from_file(RUNS, default_timeout=TIMEOUT).run()
    app.multiselect(key="runs_selection").set_value([run.id]).run()
    assert not app.exception, [e.message for e in app.exception]
    from core.run_files import generations

    written = generations(run)
    references = written.drop_duplicates("prompt")["reference"].tolist()
    samples = next(t.value for t in app.table if "answer 1" in t.value.columns)
    assert list(samples.columns) == [f"answer {n}" for n in range(1, 5)] and samples.index[0] == "step 0"
    assert len(samples) == written["step"].nunique() >= 3
    assert sum(a == r for a, r in zip(samples.iloc[-1], references)) >= 3
    assert all(a != r for a, r in zip(samples.iloc[0], references))
    assert any(f"→ *{references[0]}*" in m.value for m in app.markdown)
    headline = next(t.value for t in app.dataframe if "exact match" in t.value.index)
    assert headline.loc["exact match"].iloc[-1] >= 0.9


def test_inspect_shows_the_answers_and_explains_the_picked_one_over_the_prompt(workspace_of):
    run = workspace_of
    frame = inspect.predictions(run, "test", "after")
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    app.switch_page("pages/views/inspect.py").run()
    assert not app.exception, [e.message for e in app.exception]
    assert {m.label: m.value for m in app.metric}["Exact match"] == f"{frame['match'].mean():.1%}"
    table = next(t.value for t in app.dataframe if "answer" in t.value.columns)
    assert len(table) == len(frame)
    # The hardest row leads and is explained: its prompt words coloured, and one grid row per answer token.
    maps = [html.proto.body for html in app.get("html") if "the whole answer" in html.proto.body]
    assert maps and "[" in maps[0]
    assert len(app.get("plotly_chart")) >= 1
    assert any(c.value.startswith("Prompt format: plain (the model has no chat template)") for c in app.caption)
    # The sanity check explains the same answer with randomised weights.
    app.button(key="inspect_sanity_go").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert any(m.label == "Spearman rank correlation" for m in app.metric)
    app.toggle(key="answers_wrong").set_value(True).run()
    shown = next(c.value for c in app.caption if " prompts" in c.value)
    assert shown.startswith(f"{int((~frame['match']).sum())} of {len(frame)} prompts")


def test_a_typed_prompt_is_answered_and_explained_under_two_stages(workspace_of):
    from core.stages import split_rows

    run = workspace_of
    rows, _ = split_rows(run, "test")
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    app.switch_page("pages/views/inspect.py").run()
    app.text_area(key="answers_prompt").set_value(rows["prompt"].iloc[1])
    app.selectbox(key="answers_versus").set_value("before")
    app.button(key="answers_go").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    answers = [m.value for m in app.markdown if m.value.startswith("Answer: ") or m.value == "The model answered nothing."]
    assert len(answers) == 2 and answers[0] == f"Answer: `{rows['response'].iloc[1]}`"


def test_picking_instruction_tuning_on_train_suggests_a_decoder_with_lora_and_going_back_restores(workspace_of):
    app = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    app.selectbox(key="train_task").set_value("instruction_tuning").run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.selectbox(key="train_model_builtin").value == "smollm2-135m"
    assert app.radio(key="train_strategy").value == "lora"
    assert app.text_input(key="train_lora_targets").value == "q_proj,v_proj"
    assert app.selectbox(key="train_dataset").value == "sentiment-instructions"
    app.selectbox(key="train_task").set_value("text_classification").run()
    assert app.selectbox(key="train_model_builtin").value == "minilm-l6"
    assert app.radio(key="train_strategy").value == "full"


def test_a_preset_keeps_its_values_when_it_switches_the_task(workspace_of):
    """The seed preset after instruction tuning: its learning rate stands, not the default a task switch restores."""
    app = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    app.selectbox(key="train_task").set_value("instruction_tuning").run()
    app.selectbox(key="train_preset").set_value("seed").run()
    app.button(key="train_preset_fill").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.selectbox(key="train_task").value == "text_classification"
    assert app.number_input(key="train_learning_rate").value == pytest.approx(2e-5)
    assert app.radio(key="train_strategy").value == "full"


def test_compare_models_lists_the_prompts_training_fixed(workspace_of):
    run = workspace_of
    before, after = (inspect.predictions(run, "test", stage) for stage in ("before", "after"))
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    app.switch_page("pages/views/inspect.py").run()
    app.selectbox(key="inspect_compare_stage").set_value("before").run()
    assert not app.exception, [e.message for e in app.exception]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Exact match · before"] == f"{before['match'].mean():.1%}"
    assert metrics["Exact match · after"] == f"{after['match'].mean():.1%}"
    fixed = int((~before["match"] & after["match"]).sum())
    assert fixed >= 100 and any(m.value == f"**Fixed** — wrong under before, right under after: {fixed}" for m in app.markdown)
    table = next(t.value for t in app.dataframe if "answer (before)" in t.value.columns)
    assert len(table) == fixed and (table["answer (after)"] == table["reference"]).all()
