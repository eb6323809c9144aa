"""Sweep specs, objectives and what a study shows — without starting a trainer (the fast lane)."""

import math

import optuna
import pandas as pd
import pytest

from core.config import RunConfig
from core.errors import UserError
from core.store import RunStore
from core.sweeps import results
from core.sweeps.driver import objective_value, submit_sweep
from core.sweeps.spec import Knob, SweepSpec

BASE = {"model": "minilm-l6", "dataset": "planted-keywords", "max_rows": 200, "strategy": "lora"}


def spec_of(**values) -> SweepSpec:
    return SweepSpec.from_dict(
        {
            "base": BASE,
            "space": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}, "lora_r": [4, 8]},
            "search": "random",
            "trials": 4,
            **values,
        }
    )


def test_a_spec_round_trips_through_yaml_with_typed_values():
    spec = spec_of(name="lr × r", parallel=2, pruner="median", objective="f1_macro")
    again = SweepSpec.from_yaml(spec.to_yaml())
    assert again.to_dict() == spec.to_dict()
    assert again.space["learning_rate"] == Knob("learning_rate", low=1e-5, high=1e-3, log=True)
    assert again.space["lora_r"].values == (4, 8)
    assert again.objective_metric == "eval_f1_macro" and again.maximize
    assert again.problems() == []


def test_yaml_numbers_written_without_a_dot_and_listed_floats_get_the_keys_type():
    spec = SweepSpec.from_yaml(
        "base: {model: minilm-l6, dataset: planted-keywords}\n"
        "space:\n  learning_rate: {values: [1e-5, 3e-5]}\n  batch_size: {values: [8.0, 16]}\nsearch: grid\n"
    )
    assert spec.space["learning_rate"].values == (1e-5, 3e-5)  # PyYAML reads 1e-5 as text
    assert spec.space["batch_size"].values == (8, 16) and all(type(v) is int for v in spec.space["batch_size"].values)
    config = spec.trial_config({"learning_rate": 3e-5, "batch_size": 16}, 3)
    assert (config.learning_rate, config.batch_size, config.name.endswith("trial 3")) == (3e-5, 16, True)


def test_the_objective_defaults_to_the_tasks_primary_metric_and_loss_is_minimised():
    assert spec_of().objective_metric == "eval_accuracy"
    assert not spec_of(objective="loss").maximize
    assert spec_of(objective="loss", direction="maximize").maximize
    ner = spec_of(base={**BASE, "task": "token_classification", "dataset": "tweet-ner"})
    assert ner.objective_metric == "eval_f1"


def test_a_grid_runs_in_the_listed_order_and_is_cut_to_the_budget():
    spec = spec_of(search="grid", space={"learning_rate": [1e-4, 1e-5], "lora_r": [4, 8, 16]}, trials=4)
    assert spec.grid()[:3] == [
        {"learning_rate": 1e-4, "lora_r": 4},
        {"learning_rate": 1e-4, "lora_r": 8},
        {"learning_rate": 1e-4, "lora_r": 16},
    ]
    assert spec.budget() == 4 and len(spec.grid()) == 6
    assert spec_of(search="grid", space={"lora_r": [4, 8]}, trials=10).budget() == 2


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"space": {}}, "search space is empty"),
        ({"space": {"learning_rate": {"low": 1e-3, "high": 1e-4}}}, "low (0.001) must be below high"),
        ({"space": {"learning_rate": {"low": 0, "high": 1e-3, "log": True}}}, "log range of learning_rate must start above 0"),
        ({"space": {"image_size": [64, 96]}}, "do not use image_size"),
        ({"space": {"lora_r": [4, 8]}, "base": {**BASE, "strategy": "full"}}, "lora_r acts only with strategy lora"),
        ({"space": {"warmup": [0.1]}}, "'warmup' cannot be swept"),
        ({"objective": "recall@1"}, "never log 'recall@1'"),
        ({"trials": 0}, "budget must be from 1"),
        ({"parallel": 0}, "At least one trial"),
        ({"search": "grid"}, "grid search needs a list of values for every setting; give learning_rate"),
        ({"search": "bayes"}, "Unknown search 'bayes'"),
        ({"pruner": "hyperband"}, "Unknown pruner"),
        ({"space": {"learning_rate": {"low": 1e-5, "high": 2.0}}}, "With learning_rate = 2.0: A learning rate of 2.0"),
        ({"space": {"dropout": [0.1, 1.5]}}, "With dropout = 1.5: Dropout is a probability"),
    ],
)
def test_each_bad_spec_gets_its_sentence(values, words):
    problems = spec_of(**values).problems()
    assert any(words in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("space: {}\n", "needs a `base:` mapping"),
        ("base: {}\nspace: {learning_rate: {values: []}}\n", "list of values for learning_rate is empty"),
        ("base: {}\nspace: {batch_size: {values: [8.5]}}\n", "must be whole numbers"),
        ("base: {}\nspace: {learning_rate: {low: small, high: 1}}\n", "must be numbers"),
        ("base: {}\ntrials: many\n", "'trials' must be a whole number"),
        ("base: {}\nbudget: 3\n", "unknown keys: budget"),
        ("base: {lr: 1}\n", "unknown keys: lr"),
        ("- a list\n", "must be a YAML mapping"),
    ],
)
def test_a_malformed_sweep_file_is_refused_with_a_sentence(text, words):
    with pytest.raises(UserError, match=None) as caught:
        SweepSpec.from_yaml(text)
    assert words in str(caught.value)


def test_a_bad_spec_queues_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path))
    store = RunStore()
    with pytest.raises(UserError, match="search space is empty"):
        submit_sweep(spec_of(space={}), store)
    assert store.sweeps() == [] and store.list() == []


def metrics_frame(series: dict[str, dict[int, float]]) -> pd.DataFrame:
    rows = [
        {"run_id": "r", "step": step, "name": name, "value": value}
        for name, values in series.items()
        for step, value in values.items()
    ]
    return pd.DataFrame(rows)


def test_the_objective_is_read_at_the_checkpoint_the_run_kept():
    metrics = metrics_frame(
        {
            "eval_accuracy": {0: 0.99, 10: 0.6, 20: 0.9, 30: 0.8},  # step 0 is the pretrained model: never counted
            "eval_loss": {0: 0.1, 10: 0.7, 20: 0.3, 30: 0.4},
        }
    )
    spec = spec_of()
    kept_best = RunConfig(best_checkpoint=True)
    kept_last = RunConfig(best_checkpoint=False)
    assert objective_value(metrics, spec, kept_best) == 0.9
    assert objective_value(metrics, spec, kept_last) == 0.8
    assert objective_value(metrics, spec_of(objective="loss"), kept_best) == 0.3  # the loss of the best-accuracy model
    assert objective_value(metrics_frame({"eval_accuracy": {0: 0.5}}), spec, kept_best) is None


def hand_made_study(trials: int = 12):
    """A study where the objective follows the learning rate and barely notices the LoRA rank."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    distributions = {"learning_rate": FloatDistribution(1e-5, 1e-2, log=True), "lora_r": CategoricalDistribution([4, 8, 16])}
    for index in range(trials):
        learning_rate = 10 ** (-5 + 3 * index / (trials - 1))
        rank = (4, 8, 16)[index % 3]
        value = 1 - abs(math.log10(learning_rate) + 3) / 3 + 0.001 * rank
        study.add_trial(
            optuna.trial.create_trial(
                params={"learning_rate": learning_rate, "lora_r": rank}, distributions=distributions, value=value
            )
        )
    return study


def test_importances_say_the_learning_rate_mattered_most():
    found = results.importances(hand_made_study())
    assert set(found) == {"learning_rate", "lora_r"}
    assert found["learning_rate"] > 0.8 > found["lora_r"]
    assert math.isclose(sum(found.values()), 1.0)
    figure = results.importance_figure(hand_made_study())
    bars = figure.data[0]
    assert bars.orientation == "h" and max(zip(bars.x, bars.y))[1] == "learning_rate"


def test_importances_wait_for_enough_finished_trials_that_vary():
    assert results.importances(hand_made_study(trials=2)) == {}
    assert results.importance_figure(hand_made_study(trials=2)) is None


def test_the_parallel_coordinates_have_one_axis_per_knob_and_the_objective_and_a_line_per_trial():
    figure = results.parallel_figure(hand_made_study())
    assert list(figure.layout.xaxis.ticktext) == ["Objective Value", "learning_rate", "lora_r"]
    assert sum(trace.mode == "lines" and len(trace.x) == 3 for trace in figure.data) == 12


def test_the_best_so_far_curve_only_climbs_and_ends_at_the_best_trial():
    frame = pd.DataFrame(
        {
            "trial": [0, 1, 2, 3, 4],
            "status": ["completed", "completed", "pruned", "completed", "failed"],
            "objective": [0.6, 0.55, 0.2, 0.8, None],
        }
    )
    curve = results.best_so_far(frame, maximize=True)
    assert curve["best"].tolist() == [0.6, 0.6, 0.8] and curve["trial"].tolist() == [0, 1, 3]
    assert results.best_trial(frame, maximize=True)["trial"] == 3
    assert results.best_trial(frame, maximize=False)["trial"] == 1  # pruned trials never count as the best
    figure = results.history_figure(frame, True, "eval_accuracy")
    assert list(figure.data[1].y) == [0.6, 0.6, 0.8]
