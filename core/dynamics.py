"""Training dynamics (data cartography, Swayamdipta et al. 2020): how each training example's gold-label probability
moved over the epochs, recorded from the training forward passes themselves, and the data map read from it.

While a classification run trains, the Trainer's own forward pass of each batch already has the logits: the
probability of each example's gold label is kept (with whether it was right), one value per example and epoch,
written to the run directory's `dynamics.parquet` at every epoch's end. No extra pass over the data is made.
The data map per training example is then its **confidence** (the mean of those probabilities), **variability**
(their standard deviation) and **correctness** (the share of epochs it was right), in three regions: *easy to learn*
(confident, stable), *ambiguous* (variable) and *hard to learn* (unconfident, stable). Low confidence with low
variability is what a mislabelled example looks like: the model never comes round to its label.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.errors import UserError

DYNAMICS_FILE = "dynamics.parquet"
INDEX = "example_index"  # the training row's position, carried through the collator beside the model inputs
# The region boundaries, on the probability scale the map is drawn on.
AMBIGUOUS_VARIABILITY = 0.2
EASY_CONFIDENCE = 0.5
REGIONS = ("easy to learn", "ambiguous", "hard to learn")


class IndexedDataset:
    """The training dataset with each row's position added under `INDEX` (a torch-style map dataset)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], INDEX: int(index)}


def indexed_collator(collate):
    """`collate` for rows that carry `INDEX`: the positions travel beside the batch as one tensor (evaluation rows,
    which carry none, are collated as they are)."""
    import torch
    from transformers import default_data_collator

    collate = collate or default_data_collator

    def collate_indexed(features: list[dict]) -> dict:
        if not features or INDEX not in features[0]:
            return collate(features)
        positions = [feature[INDEX] for feature in features]
        batch = collate([{key: value for key, value in feature.items() if key != INDEX} for feature in features])
        batch[INDEX] = torch.tensor(positions, dtype=torch.long)
        return batch

    return collate_indexed


@dataclass
class DynamicsRecorder:
    """Collects (epoch, example, p(gold), predicted class, right) from the training passes, and writes them at each
    epoch's end. The predicted class is what a relabel proposes (`core.retrain.proposed_labels`)."""

    path: os.PathLike
    epoch: int = 0
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def record(self, positions, probabilities, labels) -> None:
        import torch

        with torch.no_grad():
            gold = probabilities.gather(1, labels.view(-1, 1)).view(-1)
            predicted = probabilities.argmax(-1)
        self.rows.append(
            (positions.cpu().numpy(), gold.float().cpu().numpy(), predicted.cpu().numpy(), (predicted == labels).cpu().numpy())
        )

    def flush(self) -> None:
        """Write this epoch's values (replacing any an earlier attempt at the same epoch wrote)."""
        if not self.rows:
            return
        positions, gold, predicted, right = (np.concatenate(part) for part in zip(*self.rows))
        self.rows.clear()
        fresh = pd.DataFrame({"epoch": self.epoch, "index": positions, "p_gold": gold, "predicted": predicted, "correct": right})
        # An adversarial step passes a batch again, perturbed: the first (clean) pass of each example counts.
        fresh = fresh.drop_duplicates("index", keep="first")
        try:
            earlier = pd.read_parquet(self.path)
            fresh = pd.concat([earlier[earlier["epoch"] != self.epoch], fresh], ignore_index=True)
        except (OSError, ValueError):
            pass
        temporary = f"{self.path}.tmp"
        fresh.to_parquet(temporary, index=False)
        os.replace(temporary, self.path)


def dynamics_callback(recorder: DynamicsRecorder):
    from transformers import TrainerCallback

    class RecordDynamics(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            recorder.epoch = round(state.epoch or 0)

        def on_epoch_end(self, args, state, control, **kwargs):
            recorder.flush()

        def on_train_end(self, args, state, control, **kwargs):
            recorder.flush()  # a run that stops by max_steps mid-epoch keeps its last part-epoch

    return RecordDynamics()


def dynamics_trainer(base: type, recorder: DynamicsRecorder) -> type:
    """`base` whose training passes also record each example's gold-label probability (eval passes do not)."""

    class DynamicsTrainer(base):
        def _set_signature_columns_if_needed(self) -> None:
            # Trainer drops every feature its model's forward does not name before collating; the positions must pass.
            super()._set_signature_columns_if_needed()
            if INDEX not in self._signature_columns:
                self._signature_columns.append(INDEX)

        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            positions = inputs.get(INDEX)
            if positions is not None:
                inputs = {key: value for key, value in inputs.items() if key != INDEX}
            labels = inputs.get("labels")
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[1 if loss is not None else 0]
            if positions is not None and labels is not None and model.training:
                recorder.record(positions, logits.detach().float().softmax(-1), labels)
            return (loss, outputs) if return_outputs else loss

    return DynamicsTrainer


# -- reading --------------------------------------------------------------------------------------


def read_dynamics(run) -> pd.DataFrame:
    path = run.directory / DYNAMICS_FILE
    if not path.exists():
        raise UserError(
            f"Run {run.id} recorded no training dynamics: only text and image classification runs record them, "
            "from this version on. Train it again to get its data map."
        )
    return pd.read_parquet(path)


def data_map(run) -> pd.DataFrame:
    """One row per training example: `example` (its position in the training split), its row (text or image, gold),
    confidence, variability, correctness, region."""
    from core.stages import split_rows

    records = read_dynamics(run)
    epochs = records["epoch"].nunique()
    if epochs < 2:
        raise UserError(
            f"Run {run.id} trained for one epoch, so no example has a variability yet; the data map needs at least two "
            "epochs (train with epochs: 2 or more)."
        )
    grouped = records.groupby("index")
    summary = pd.DataFrame(
        {
            "confidence": grouped["p_gold"].mean(),
            "variability": grouped["p_gold"].std(ddof=0),
            "correctness": grouped["correct"].mean(),
            "epochs": grouped["epoch"].nunique(),
        }
    )
    rows, _ = split_rows(run, "train")
    rows = rows.reset_index(drop=True)
    summary = summary[summary.index < len(rows)]
    frame = rows.loc[summary.index].assign(**{column: summary[column].to_numpy() for column in summary.columns})
    frame.insert(0, "example", summary.index.to_numpy())  # its position in the training split
    frame["region"] = regions(frame["confidence"], frame["variability"])
    return frame.reset_index(drop=True)


def regions(confidence: pd.Series, variability: pd.Series) -> list[str]:
    return [
        "ambiguous" if spread >= AMBIGUOUS_VARIABILITY else ("easy to learn" if mean >= EASY_CONFIDENCE else "hard to learn")
        for mean, spread in zip(confidence, variability)
    ]


def mislabel_candidates(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k rows most like mislabelled ones: lowest confidence first, the stable (low-variability) ones among ties."""
    return frame.sort_values(["confidence", "variability"], kind="stable").head(k)
