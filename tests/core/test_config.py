"""RunConfig: YAML round trip, coercion of strings, and one sentence per bad value."""

import pytest

from core.config import HELP, RunConfig
from core.errors import UserError


def problems_of(**values) -> list[str]:
    return RunConfig(**values).validate()


def only_problem(**values) -> str:
    problems = problems_of(**values)
    assert len(problems) == 1, problems
    return problems[0]


def test_defaults_are_valid_and_every_knob_has_help():
    config = RunConfig()
    assert config.validate() == []
    config.raise_if_invalid()
    assert set(HELP) == set(config.to_dict())


def test_yaml_round_trip_keeps_every_value():
    config = RunConfig(
        name="a run: with 'quotes' and # hash",
        model="/tmp/some model",
        dataset="data/file.csv",
        text_column="body",
        label_column="stars",
        max_rows=300,
        learning_rate=3e-4,
        batch_size=8,
        epochs=2.5,
        max_steps=0,
        warmup_ratio=0.0,
        scheduler="cosine",
        weight_decay=0.0,
        dropout=0.2,
        max_length=64,
        grad_accum=2,
        seed=7,
        eval_steps=5,
        logging_steps=1,
        strategy="lora",
        freeze_layers=1,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        lora_targets=["query", "key", "value"],
        device="cpu",
        precision="fp32",
        group_by_length=False,
    )
    text = config.to_yaml()
    again = RunConfig.from_yaml(text)
    assert again == config
    assert again.to_yaml() == text
    assert again.differences(config) == {}
    # Types survive, not just equal-comparing values.
    assert isinstance(again.epochs, float) and isinstance(again.max_rows, int)
    assert isinstance(again.group_by_length, bool) and again.lora_targets == ["query", "key", "value"]


def test_load_reads_a_file_and_names_a_missing_one(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(RunConfig(name="from file", seed=3).to_yaml(), encoding="utf-8")
    assert RunConfig.load(path) == RunConfig(name="from file", seed=3)
    with pytest.raises(UserError, match=r"no config file at .*missing.yaml"):
        RunConfig.load(tmp_path / "missing.yaml")


def test_unknown_keys_are_named():
    with pytest.raises(UserError) as caught:
        RunConfig.from_yaml("name: x\nlearnin_rate: 0.1\nbatchsize: 4\n")
    message = str(caught.value)
    assert "learnin_rate" in message and "batchsize" in message
    assert "unknown keys" in message
    assert "learning_rate" in message  # the valid keys are listed to help fix the typo


def test_yaml_that_is_not_a_mapping_or_not_yaml():
    with pytest.raises(UserError, match="mapping"):
        RunConfig.from_yaml("- a\n- b\n")
    with pytest.raises(UserError, match="not valid YAML"):
        RunConfig.from_yaml("name: [unclosed\n")
    assert RunConfig.from_yaml("") == RunConfig()


def test_strings_are_coerced_to_the_field_types():
    # PyYAML reads 5e-5 (no dot) as a string; it must still become a float.
    config = RunConfig.from_yaml("learning_rate: 5e-5\nepochs: '2'\nbatch_size: '32'\nmax_rows: 1e3\n")
    assert config.learning_rate == pytest.approx(5e-5) and isinstance(config.learning_rate, float)
    assert config.epochs == 2.0 and isinstance(config.epochs, float)
    assert config.batch_size == 32 and isinstance(config.batch_size, int)
    assert config.max_rows == 1000 and isinstance(config.max_rows, int)
    config = RunConfig.from_dict({"lora_targets": "query, value ,dense", "group_by_length": "no", "seed": 4.0})
    assert config.lora_targets == ["query", "value", "dense"]
    assert config.group_by_length is False
    assert config.seed == 4 and isinstance(config.seed, int)
    assert RunConfig.from_dict({"group_by_length": "Yes"}).group_by_length is True
    assert RunConfig.from_dict({"name": 123}).name == "123"


@pytest.mark.parametrize(
    "key, value",
    [
        ("batch_size", "sixteen"),
        ("batch_size", 2.5),
        ("learning_rate", "fast"),
        ("group_by_length", "maybe"),
        ("lora_targets", 5),
    ],
)
def test_values_that_cannot_be_coerced_say_which_key(key, value):
    with pytest.raises(UserError) as caught:
        RunConfig.from_dict({key: value})
    assert f"'{key}'" in str(caught.value)
    assert repr(value) in str(caught.value)


def test_an_empty_yaml_value_keeps_the_default():
    # `text_column:` with nothing after it is None in YAML; it must not become the column "None".
    config = RunConfig.from_yaml("text_column:\nmax_rows:\nname: x\n")
    assert config.text_column == ""
    assert config.max_rows == 0
    assert config.validate() == []


@pytest.mark.parametrize(
    "values, words",
    [
        ({"learning_rate": 0.0}, ["learning rate", "above 0"]),
        ({"learning_rate": -1e-5}, ["learning rate", "above 0"]),
        ({"learning_rate": 2.0}, ["learning rate", "below 1"]),
        ({"batch_size": 0}, ["batch size", "at least 1"]),
        ({"dropout": 1.0}, ["Dropout", "between 0 and 1"]),
        ({"dropout": -0.1}, ["Dropout", "between 0 and 1"]),
        ({"scheduler": "exponential"}, ["scheduler", "'exponential'", "linear, cosine, constant"]),
        ({"strategy": "adapters"}, ["strategy", "'adapters'", "full, head, freeze, lora"]),
        ({"device": "tpu"}, ["device", "'tpu'", "auto, cpu, cuda"]),
        ({"precision": "int8"}, ["precision", "'int8'"]),
        ({"device": "cpu", "precision": "fp16"}, ["fp16", "GPU"]),
        ({"epochs": 0, "max_steps": 0}, ["epochs", "max steps"]),
        ({"max_steps": -5}, ["Max steps", "negative"]),
        ({"warmup_ratio": 1.0}, ["warmup ratio"]),
        ({"max_length": 4}, ["max length", "at least 8"]),
        ({"grad_accum": 0}, ["Gradient accumulation"]),
        ({"eval_steps": 0}, ["eval steps"]),
        ({"logging_steps": 0}, ["logging steps"]),
        ({"max_rows": -1}, ["Max rows"]),
        ({"freeze_layers": -1}, ["frozen layers"]),
        ({"name": "   "}, ["name"]),
        ({"task": "translation"}, ["task", "'translation'", "text_classification"]),
        ({"strategy": "lora", "lora_r": 0}, ["LoRA rank"]),
        ({"strategy": "lora", "lora_targets": []}, ["target module"]),
    ],
)
def test_each_bad_value_gives_one_sentence(values, words):
    problem = only_problem(**values)
    for word in words:
        assert word in problem, (word, problem)
    assert problem.rstrip().endswith(".")


def test_epochs_zero_is_fine_with_max_steps_and_fp16_is_fine_on_auto_device():
    assert problems_of(epochs=0, max_steps=10) == []
    # Whether auto means a GPU is only known when the run is queued (see test_jobs).
    assert problems_of(device="auto", precision="fp16") == []
    assert problems_of(device="cpu", precision="bf16") == []


def test_lora_knobs_are_only_checked_for_lora():
    assert problems_of(strategy="full", lora_r=0, lora_targets=[]) == []


def test_validate_returns_every_problem_at_once_and_raise_joins_them():
    config = RunConfig(learning_rate=0, batch_size=0, scheduler="nope")
    problems = config.validate()
    assert len(problems) == 3
    with pytest.raises(UserError) as caught:
        config.raise_if_invalid()
    for problem in problems:
        assert problem in str(caught.value)


def test_differences_lists_changed_keys_with_both_values():
    base = RunConfig()
    other = RunConfig(learning_rate=1e-4, strategy="head", lora_targets=["query"])
    assert base.differences(other) == {
        "learning_rate": (5e-5, 1e-4),
        "strategy": ("full", "head"),
        "lora_targets": (["query", "value"], ["query"]),
    }
    assert other.differences(base)["strategy"] == ("head", "full")
    assert base.differences(RunConfig()) == {}


def test_cli_command_quotes_the_path():
    assert RunConfig().cli_command() == "python -m core train run.yaml"
    assert RunConfig().cli_command("my runs/a b.yaml") == "python -m core train 'my runs/a b.yaml'"


def test_a_config_naming_instruction_tuning_gets_the_tasks_decoder_and_lora_where_it_says_nothing():
    from core.config import RunConfig

    minimal = RunConfig.from_yaml("task: instruction_tuning\nname: answers\n")
    assert (minimal.model, minimal.dataset, minimal.strategy, minimal.lora_targets) == (
        "smollm2-135m",
        "sentiment-instructions",
        "lora",
        ["q_proj", "v_proj"],
    )
    chosen = RunConfig.from_yaml("task: instruction_tuning\nstrategy: full\nmodel: my/decoder\n")
    assert (chosen.strategy, chosen.model, chosen.max_length) == ("full", "my/decoder", 256)
    assert RunConfig.from_yaml("name: text\n") == RunConfig(name="text")  # other tasks keep the common defaults
