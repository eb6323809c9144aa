"""How faithful a map is to its model: deletion and insertion curves, their AOPC against random orderings, and NAOPC.

Written once over the input adapters (`core/explain/base.py`): any explainer that says which adapter units its
explanation's units are (`faithfulness_input`) gets the card.

- **Deletion** (ERASER's comprehensiveness): replace the units by the input's baseline in the map's order, most
  important first, and watch the target probability fall. AOPC_del = mean over the steps of p(x) - p(x without
  the top k): higher means the map found what the model needs.
- **Insertion** (ERASER's sufficiency): start from the baseline and put the units back in the same order.
  AOPC_ins = mean over the steps of p(x) - p(only the top k): lower means the top units alone suffice.
- The same curves for **random orderings** of the units are the bar to clear: a map whose AOPC_del is no higher
  than random's tells nothing about this model.
- **NAOPC** (arXiv 2408.08137) puts AOPC_del on a 0..1 scale per input, so that maps of different models and
  inputs compare: (AOPC − lowest) / (highest − lowest) over the orderings tried here (the map's, its reverse, the
  leave-one-out order and its reverse, and the random ones). The true bounds need a search over all orderings;
  these are estimates, so NAOPC here can reach 1 without the map being optimal.

This is a measure of the map against the model, not a sanity check: the randomisation check (`core.explain.sanity`)
only says whether a method reacts to the model at all (Binder et al., CVPR 2023), not which method is most faithful.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from core.errors import UserError

STEPS = 10  # points on each curve after the start: 10 %, 20 %, … 100 % of the units
RANDOM_ORDERS = 5


@dataclass(frozen=True)
class Curves:
    """Target probability after removing (deletion) or keeping only (insertion) the first k units of an order."""

    fractions: list[float]
    deletion: list[float]
    insertion: list[float]

    @property
    def comprehensiveness(self) -> float:
        return float(np.mean([self.deletion[0] - value for value in self.deletion[1:]]))

    @property
    def sufficiency(self) -> float:
        return float(np.mean([self.deletion[0] - value for value in self.insertion[1:]]))


@dataclass(frozen=True)
class Faithfulness:
    """One map's card: its curves, the random orderings' mean curves, their AOPCs, and NAOPC."""

    method: str
    curves: Curves
    random: Curves
    comprehensiveness: float
    sufficiency: float
    random_comprehensiveness: float
    random_sufficiency: float
    naopc: float | None  # None when every ordering tried scores the same (nothing to normalise by)

    def to_dict(self) -> dict:
        return asdict(self)


def order_of(scores: Sequence[float], signed: bool) -> list[int]:
    """Unit positions, most important first: evidence for the target first for a signed map, largest first otherwise."""
    values = np.asarray(scores, dtype=np.float64)
    return [int(i) for i in np.argsort(-(values if signed else np.abs(values)), kind="stable")]


def curves_for(adapter, prepared, grid, unit_ids: Sequence[int], orders: Sequence[Sequence[int]], target: int, baselines: dict,
               steps: int = STEPS, cuts: Sequence[int] | None = None) -> list[Curves]:  # fmt: skip
    """Deletion and insertion curves for each order (positions into `unit_ids`) at `steps` even cuts (or the given
    unit counts), batched over every copy at once."""
    import torch

    inputs, reference = adapter.inputs(prepared), adapter.baseline_inputs(prepared, baselines)
    maps = adapter.unit_maps(prepared, grid)
    count = len(unit_ids)
    cuts = sorted(set(cuts)) if cuts is not None else sorted({round(count * step / steps) for step in range(steps + 1)})
    ids = torch.as_tensor(list(unit_ids), device=maps[0].device)
    masks = []  # one (removed or kept) unit set per order and cut
    for order in orders:
        ranked = ids[list(order)]
        masks.extend(ranked[:cut] for cut in cuts)
    probabilities = []
    for chosen_sets, keep in ((masks, False), (masks, True)):
        values = []
        batch = max(1, adapter.batch_rows(prepared, len(chosen_sets)))
        for begin in range(0, len(chosen_sets), batch):
            chosen = chosen_sets[begin : begin + batch]
            copies = []
            for whole, absent, units in zip(inputs, reference, maps):
                selected = torch.stack([torch.isin(units, set_) for set_ in chosen])[:, 0]  # (B, ...) per element
                kept, dropped = (whole, absent) if keep else (absent, whole)
                copies.append(torch.where(selected, kept, dropped))
            with torch.no_grad():
                values.append(adapter.outputs(prepared, *copies).float().softmax(-1)[:, target].cpu())
        probabilities.append(torch.cat(values).numpy())
    deleted, inserted = (array.reshape(len(orders), len(cuts)) for array in probabilities)
    fractions = [cut / count for cut in cuts]
    return [Curves(fractions, deleted[i].tolist(), inserted[i].tolist()) for i in range(len(orders))]


def leave_one_out(adapter, prepared, grid, unit_ids: Sequence[int], target: int, baselines: dict) -> list[int]:
    """Unit positions ordered by how much removing that unit alone lowers the target probability."""
    orders = [[position] + [other for other in range(len(unit_ids)) if other != position] for position in range(len(unit_ids))]
    single = curves_for(adapter, prepared, grid, unit_ids, orders, target, baselines, cuts=(0, 1))
    drops = [curve.deletion[0] - curve.deletion[1] for curve in single]
    return order_of(drops, signed=True)


def card(adapter, prepared, grid, unit_ids: Sequence[int], explanations: dict, target: int, baselines: dict,
         steps: int = STEPS, random_orders: int = RANDOM_ORDERS, seed: int = 0) -> list[Faithfulness]:  # fmt: skip
    """The faithfulness of each map in `explanations` (method -> Explanation of this input, same target)."""
    count = len(unit_ids)
    if count < 2:
        raise UserError("A faithfulness card needs an input with at least two units (tokens or patches) to remove.")
    generator = np.random.default_rng(seed)
    randoms = [list(generator.permutation(count)) for _ in range(random_orders)]
    maps = {method: order_of(explanation.scores, explanation.signed) for method, explanation in explanations.items()}
    loo = leave_one_out(adapter, prepared, grid, unit_ids, target, baselines)
    candidates = [*maps.values(), *(order[::-1] for order in maps.values()), loo, loo[::-1], *randoms]
    measured = curves_for(adapter, prepared, grid, unit_ids, candidates, target, baselines, steps)
    scores = [curve.comprehensiveness for curve in measured]
    lowest, highest = min(scores), max(scores)
    random_curves = measured[-random_orders:]
    mean_random = Curves(
        random_curves[0].fractions,
        np.mean([c.deletion for c in random_curves], axis=0).tolist(),
        np.mean([c.insertion for c in random_curves], axis=0).tolist(),
    )
    cards = []
    for index, method in enumerate(maps):
        curve = measured[index]
        naopc = None if highest - lowest < 1e-9 else (curve.comprehensiveness - lowest) / (highest - lowest)
        cards.append(
            Faithfulness(
                method=method,
                curves=curve,
                random=mean_random,
                comprehensiveness=curve.comprehensiveness,
                sufficiency=curve.sufficiency,
                random_comprehensiveness=float(np.mean([c.comprehensiveness for c in random_curves])),
                random_sufficiency=float(np.mean([c.sufficiency for c in random_curves])),
                naopc=naopc,
            )
        )
    return cards


def explainer_card(explainer, item, methods: Sequence[str], target=None, steps: int = STEPS, seed: int = 0,
                   **options) -> list[Faithfulness]:  # fmt: skip
    """The card for `item` (a text, an image) under each method with its default parameters, through the explainer's
    own adapter; `options` go to every `explain` call (an image's `grid`)."""
    from core.explain.base import input_spec

    if not methods:
        raise UserError("Pick at least one method to score.")
    explanations = {method: explainer.explain(item, method, target, **options) for method in methods}
    first = next(iter(explanations.values()))
    if first.target is None:
        raise UserError("A faithfulness card needs a class to explain; this model gives one similarity score.")
    targets = {explanation.target for explanation in explanations.values()}
    if len(targets) > 1:
        raise UserError("The maps of a faithfulness card must explain the same class; give a target.")
    prepared, grid, unit_ids = explainer.faithfulness_input(item, first)
    baselines = {name: default for name, (default, _) in input_spec(explainer.modality).baselines.items()}
    return card(explainer, prepared, grid, unit_ids, explanations, first.target, baselines, steps=steps, seed=seed)


def card_table(cards: Sequence[Faithfulness]) -> list[dict]:
    """One row per method: the card's numbers as a table (comprehensiveness higher is better, sufficiency lower)."""
    return [
        {
            "method": card.method,
            "deletion AOPC (↑)": card.comprehensiveness,
            "random deletion AOPC": card.random_comprehensiveness,
            "insertion AOPC (↓)": card.sufficiency,
            "random insertion AOPC": card.random_sufficiency,
            "NAOPC (↑)": card.naopc,
        }
        for card in cards
    ]
