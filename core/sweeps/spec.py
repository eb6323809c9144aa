"""A sweep's spec: a base run config, the knobs that vary and how, the search, the budget and the objective.

It round-trips through YAML (the file the Train page downloads and `python -m core sweep SWEEP.yaml` reads):

    name: learning rate × LoRA r
    base: {task: text_classification, model: minilm-l6, strategy: lora, ...}   # a run config
    space:
      learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}   # a range (log-uniform with log: true)
      lora_r: {values: [4, 8, 16]}                             # a list
    search: tpe          # grid, random or tpe (Optuna's TPE sampler)
    trials: 8
    parallel: 2
    objective: accuracy  # any eval metric the task logs (Task.objectives)
    direction: maximize
    pruner: median       # none, median or halving; fed by the trials' own evaluations
    pruner_startup: 2    # trials that must finish before any is pruned

`problems()` returns every mistake as a sentence before anything is queued.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from core.config import RunConfig
from core.errors import UserError

SEARCHES = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "halving")
DIRECTIONS = ("maximize", "minimize")
# Metrics where lower is better: a sweep over them minimises unless told otherwise.
LOWER_IS_BETTER = ("loss", "perplexity")
MAX_TRIALS = 500

# The knobs a sweep may vary, and the Train page setting group each belongs to (None: the common hyperparameters,
# which every task uses unless it names the knob in `Task.unused_knobs`).
SWEEPABLE: dict[str, str | None] = {
    "learning_rate": None,
    "batch_size": None,
    "epochs": None,
    "warmup_ratio": None,
    "scheduler": None,
    "weight_decay": None,
    "dropout": None,
    "max_length": None,
    "grad_accum": None,
    "seed": None,
    "label_smoothing": None,
    "max_grad_norm": None,
    "adv_epsilon": None,
    "strategy": "strategy",
    "freeze_layers": "strategy",
    "lora_r": "strategy",
    "lora_alpha": "strategy",
    "lora_dropout": "strategy",
    "image_size": "images",
    "aug_crop_scale": "images",
    "aug_flip": "images",
    "aug_rotation": "images",
    "vision_lr": "towers",
    "text_lr": "towers",
}
# Knobs that act only under some strategies: a sweep of them under another strategy would vary nothing.
STRATEGY_KNOBS: dict[str, tuple[str, ...]] = {
    "freeze_layers": ("freeze",),
    "lora_r": ("lora", "adalora"),
    "lora_alpha": ("lora", "adalora"),
    "lora_dropout": ("lora", "adalora"),
}


def sweepable_for(task) -> list[str]:
    """The knobs a sweep may vary for this task: the common ones it uses and those of its setting groups."""
    return [
        knob
        for knob, group in SWEEPABLE.items()
        if (group is None and knob not in task.unused_knobs) or (group is not None and group in task.settings)
    ]


@dataclass(frozen=True)
class Knob:
    """How one config key varies: a list of values, or a range (uniform, or log-uniform)."""

    name: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return not self.values

    @property
    def integer(self) -> bool:
        """Whether the config key takes whole numbers (a range over it draws integers)."""
        default = getattr(RunConfig(), self.name)
        return isinstance(default, int) and not isinstance(default, bool)

    def to_dict(self) -> dict[str, Any]:
        if self.values:
            return {"values": list(self.values)}
        return {"low": self.low, "high": self.high, **({"log": True} if self.log else {})}

    def distribution(self):
        """Optuna's distribution for this knob."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.values:
            return CategoricalDistribution(list(self.values))
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def extremes(self) -> tuple[Any, ...]:
        """The values whose run configs are checked before anything is queued."""
        return self.values if self.values else (self.low, self.high)

    def problems(self) -> list[str]:
        if self.values:
            return []
        if self.low is None or self.high is None:
            return [f"Give {self.name} a range (low and high) or a list of values."]
        if self.low >= self.high:
            return [f"The range of {self.name} is empty: low ({self.low:g}) must be below high ({self.high:g})."]
        if self.log and self.low <= 0:
            return [f"A log range of {self.name} must start above 0 (got low {self.low:g}); try {self.high / 100:g}."]
        return []


@dataclass
class SweepSpec:
    base: RunConfig
    space: dict[str, Knob]
    name: str = ""
    search: str = "tpe"
    trials: int = 8
    parallel: int = 1
    objective: str = ""  # empty: the task's primary metric
    direction: str = ""  # empty: minimise loss-like metrics, maximise the rest
    pruner: str = "none"
    pruner_startup: int = 2
    extras: dict[str, Any] = field(default_factory=dict)  # parent (a "repeat best" sweep names the sweep it repeats)

    @property
    def objective_metric(self) -> str:
        """The objective as logged by the trainer (`eval_` + the task's metric name)."""
        from core.tasks import TASKS

        name = self.objective.removeprefix("eval_") or TASKS[self.base.task].primary_metric
        return f"eval_{name}"

    @property
    def maximize(self) -> bool:
        if self.direction:
            return self.direction == "maximize"
        return self.objective_metric.removeprefix("eval_") not in LOWER_IS_BETTER

    @property
    def title(self) -> str:
        return self.name or f"{self.base.name}: sweep of {', '.join(self.space)}"

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the knobs' values, in the order given (the first knob varies slowest)."""
        names = list(self.space)
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.space[name].values for name in names))]

    def budget(self) -> int:
        """How many trials run: the trial budget, and for a grid no more than its size."""
        return min(self.trials, len(self.grid())) if self.search == "grid" else self.trials

    def trial_config(self, params: dict[str, Any], number: int) -> RunConfig:
        """The run config of one trial: the base with the trial's values, named after the sweep."""
        values = {**self.base.to_dict(), **params, "name": f"{self.title} · trial {number}"}
        return RunConfig.from_dict(values)

    # -- checks ---------------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every mistake in the spec, as sentences; empty when it can be queued."""
        from core.tasks import TASKS

        problems = list(self.base.validate())
        task = TASKS.get(self.base.task)
        if task is None:
            return problems
        if not self.space:
            problems.append("The search space is empty: pick at least one setting to vary, such as the learning rate.")
        for knob in self.space.values():
            problems.extend(knob.problems() + self._knob_use_problems(knob, task))
        problems.extend(self._corner_problems(problems))
        problems.extend(self._search_problems())
        name = self.objective_metric.removeprefix("eval_")
        if name not in task.objectives:
            problems.append(
                f"{task.title} runs never log '{name}', so it cannot be the objective; choose one of "
                f"{', '.join(task.objectives)}."
            )
        if self.direction and self.direction not in DIRECTIONS:
            problems.append(f"Unknown direction '{self.direction}'; choose maximize or minimize.")
        return problems

    def _knob_use_problems(self, knob: Knob, task) -> list[str]:
        if knob.name not in SWEEPABLE:
            return [f"'{knob.name}' cannot be swept; choose from {', '.join(SWEEPABLE)}."]
        if knob.name not in sweepable_for(task):
            return [f"{task.title} runs do not use {knob.name}, so sweeping it would change nothing; remove it."]
        strategies = STRATEGY_KNOBS.get(knob.name)
        swept = self.space.get("strategy")
        used = set(swept.values) if swept else {self.base.strategy}
        if strategies and not used & set(strategies):
            return [
                f"{knob.name} acts only with strategy {' or '.join(strategies)}, and this sweep trains with "
                f"{', '.join(sorted(used))}; set the strategy to {strategies[0]} or remove {knob.name}."
            ]
        return []

    def _corner_problems(self, earlier: list[str]) -> list[str]:
        """What the run config refuses at a knob's extreme values (a learning rate of 2, a dropout of 1)."""
        problems: list[str] = []
        for knob in self.space.values():
            if knob.problems() or knob.name not in SWEEPABLE:
                continue
            for value in knob.extremes():
                try:
                    config = RunConfig.from_dict({**self.base.to_dict(), knob.name: value})
                except UserError as problem:
                    found = [str(problem)]
                else:
                    found = config.validate()
                for problem in found:
                    sentence = f"With {knob.name} = {value}: {problem}"
                    if problem not in earlier and sentence not in problems:
                        problems.append(sentence)
        return problems

    def _search_problems(self) -> list[str]:
        problems = []
        if self.search not in SEARCHES:
            problems.append(f"Unknown search '{self.search}'; choose grid, random or tpe.")
        if self.search == "grid":
            ranges = [name for name, knob in self.space.items() if knob.is_range]
            if ranges:
                problems.append(
                    f"A grid search needs a list of values for every setting; give {', '.join(ranges)} as a list "
                    "(such as 1e-5, 3e-5, 1e-4), or choose random or tpe search."
                )
        if not 1 <= self.trials <= MAX_TRIALS:
            problems.append(f"The budget must be from 1 to {MAX_TRIALS} trials (got {self.trials}).")
        if self.parallel < 1:
            problems.append(f"At least one trial must run at a time (got parallel {self.parallel}).")
        if self.pruner not in PRUNERS:
            problems.append(f"Unknown pruner '{self.pruner}'; choose none, median or halving.")
        if self.pruner_startup < 0:
            problems.append("The number of trials to finish before pruning cannot be negative.")
        return problems

    def raise_if_invalid(self) -> None:
        problems = self.problems()
        if problems:
            raise UserError(" ".join(problems))

    # -- YAML -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        values = {
            "name": self.name,
            "base": self.base.to_dict(),
            "space": {name: knob.to_dict() for name, knob in self.space.items()},
            "search": self.search,
            "trials": self.trials,
            "parallel": self.parallel,
            "objective": self.objective,
            "direction": self.direction,
            "pruner": self.pruner,
            "pruner_startup": self.pruner_startup,
        }
        return {**values, **self.extras}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SweepSpec:
        if not isinstance(values, dict):
            raise UserError("A sweep file must be a YAML mapping with a base run config and a space, like the Train page's.")
        known = {"name", "base", "space", "search", "trials", "parallel", "objective", "direction", "pruner"}
        extras = {key: values[key] for key in ("parent",) if key in values}
        unknown = sorted(set(values) - known - {"pruner_startup", *extras})
        if unknown:
            raise UserError(f"The sweep file has unknown keys: {', '.join(unknown)}. Valid keys are: {', '.join(sorted(known))}.")
        base = values.get("base")
        if not isinstance(base, dict):
            raise UserError("The sweep file needs a `base:` mapping: the run config every trial starts from.")
        space = values.get("space") or {}
        if not isinstance(space, dict):
            raise UserError("`space:` must map each setting to its range ({low, high, log}) or its list ({values: [...]}).")
        return cls(
            base=RunConfig.from_dict(base),
            space={str(name): _knob(str(name), value) for name, value in space.items()},
            name=str(values.get("name") or ""),
            search=str(values.get("search", "tpe")),
            trials=_whole(values.get("trials", 8), "trials"),
            parallel=_whole(values.get("parallel", 1), "parallel"),
            objective=str(values.get("objective") or ""),
            direction=str(values.get("direction") or ""),
            pruner=str(values.get("pruner", "none")),
            pruner_startup=_whole(values.get("pruner_startup", 2), "pruner_startup"),
            extras=extras,
        )

    @classmethod
    def from_yaml(cls, text: str) -> SweepSpec:
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise UserError(f"The sweep file is not valid YAML ({error}); fix the line it names.") from None
        return cls.from_dict(values)


def _knob(name: str, value: Any) -> Knob:
    """A knob from its YAML form: {values: [...]}, a bare list, or {low, high, log}."""
    if isinstance(value, list):
        value = {"values": value}
    if not isinstance(value, dict):
        raise UserError(f"Give {name} as a range ({{low: 1e-5, high: 1e-3, log: true}}) or a list ({{values: [8, 16]}}).")
    if "values" in value:
        values = value["values"]
        if not isinstance(values, list) or not values:
            raise UserError(f"The list of values for {name} is empty; give at least one value.")
        default = getattr(RunConfig(), name, None)
        return Knob(name, values=tuple(_typed(name, item, default) for item in values))
    try:
        low = None if value.get("low") is None else float(value["low"])
        high = None if value.get("high") is None else float(value["high"])
    except (TypeError, ValueError):
        raise UserError(
            f"The range of {name} must be numbers (got low {value.get('low')!r}, high {value.get('high')!r})."
        ) from None
    if (low is not None and not math.isfinite(low)) or (high is not None and not math.isfinite(high)):
        raise UserError(f"The range of {name} must be finite numbers.")
    return Knob(name, low=low, high=high, log=bool(value.get("log", False)))


def _typed(name: str, value: Any, default: Any) -> Any:
    """A listed value in the config key's own type (YAML reads 1e-5 as text, and 8.0 as a float)."""
    if default is None or isinstance(default, str | bool | list):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"The values of {name} must be numbers (got {value!r}).") from None
    if isinstance(default, int):
        if not number.is_integer():
            raise UserError(f"The values of {name} must be whole numbers (got {value!r}).")
        return int(number)
    return number


def _whole(value: Any, key: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"'{key}' must be a whole number (got {value!r}).") from None
    if not number.is_integer():
        raise UserError(f"'{key}' must be a whole number (got {value!r}).")
    return int(number)


def load_spec(path: str) -> SweepSpec:
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise UserError(f"There is no sweep file at {path}; download one from the Train page (Sweep) or write one by hand.")
    try:
        return SweepSpec.from_yaml(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text YAML file; give a sweep file downloaded from the Train page.") from None
