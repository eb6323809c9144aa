"""Token classification: a linear tagger on every token of a BERT-family encoder — named entities
(BIO / BIOES tags) or plain per-word tags (part of speech, say).

Words are split into word pieces by the model's fast tokenizer; each word's tag goes on its first
piece (or on all pieces with `label_all_subtokens`, training split only), and the model predicts
one tag per piece. Evaluation always reads one prediction per word, the first piece's, so metrics,
reports and prediction rows speak about words, whatever the tokenizer. Metrics and the report cover
the words the model saw (the report's micro F1 is the logged `test_f1`); a prediction row covers the
whole sentence, words cut off by `max_length` counting as predicted "O" and as `unseen_words`.

Entity-level scores come from seqeval in strict mode with the dataset's scheme (IOB2 or BIOES):
an entity counts as found only when the predicted tags form that exact, well-formed entity — the
same rules the gold tags were checked against on loading. The default (conlleval) mode would
instead repair ill-formed predictions, counting an orphan I-PER after O as a PER entity, which
credits a tagger for sequences no BIO annotator may write; its F1 is still logged as `f1_lenient`
so the gap (how much a model relies on that repair) is visible and numbers stay comparable with
papers that use conlleval.

A dataset of plain tags (no B-/I- prefixes: NNP, VBZ, DT, …) marks no spans, so it is scored per
word with scikit-learn: token accuracy and per-tag precision/recall/F1. Its logged `f1` is the
macro F1 over the tags (each tag counts once), not accuracy: frequent tags (nouns, punctuation)
make accuracy high for a tagger that never learns the rare ones, and macro F1, like entity F1
ignoring O, rewards getting the informative labels right. Keeping the key `f1` for both lets
best-checkpoint selection (`eval_f1`) and the Runs page work unchanged; the headline and report
labels say which F1 it is. The scheme is the dataset's (`NerSplits.scheme`), stored in the run's
summary as `tag_scheme`, so the summary, the report and the Inspect view agree.

Every check on the data runs at submit too: `preflight` loads a file or registered dataset with
the same loader the trainer uses, so a broken file is refused before anything is queued.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from core.assets import Progress, no_progress
from core.config import RunConfig
from core.errors import UserError
from core.metrics import label_report, label_scores, softmax
from core.models import check_max_length, load_model_config, load_with_new_head, resolve_model, with_new_head
from core.ner.align import IGNORE_INDEX, encode_sentences
from core.ner.data import (
    BIOES,
    BUILTIN_NER_DATASETS,
    IOB2,
    NER_SUFFIXES,
    NO_TAG,
    OUTSIDE,
    entity_types,
    is_entity_scheme,
    word_spans,
)
from core.task_keys import TOKEN_CLASSIFICATION
from core.tasks.base import Prepared, StageModel, Task, config_labels

# Byte-level BPE tokenizers need a leading space to split pre-tokenized words as in running text.
PREFIX_SPACE_MODELS = ("roberta", "gpt2", "bloom", "deberta", "longformer", "bart")
AVERAGES = ("micro avg", "macro avg", "weighted avg")
ENTITY_AVERAGE = "micro avg"  # only seqeval's entity report has it; the per-tag report (sklearn's) has accuracy instead


class TokenClassification(Task):
    key = TOKEN_CLASSIFICATION
    title = "Token classification (named entities or per-word tags)"
    modality = "text"
    view = "tags"
    primary_metric = "f1"
    objectives = ("f1", "precision", "recall", "accuracy", "loss")
    onnx_model_class = "ORTModelForTokenClassification"
    loading_snippet = (
        'from transformers import pipeline\ntag = pipeline("token-classification", model=FOLDER, aggregation_strategy="simple")'
    )
    settings = ("strategy", "subtokens")
    adversarial_space = "embeddings"
    attack_spaces = ("embeddings",)

    def __init__(self) -> None:
        # Tag names and scheme of the run being prepared: compute_metrics gets only arrays from the Trainer.
        self._tagging: tuple[list[str], str] | None = None

    def datasets(self) -> list:
        from core.ner.data import list_ner_datasets

        return list_ner_datasets()

    def preflight(self, config: RunConfig) -> None:
        check_names_and_limits(config)
        if config.dataset not in BUILTIN_NER_DATASETS:  # built-ins are known good, and may need a download first
            load_splits(config)  # every data check the trainer makes, so a bad file is refused before it is queued

    def prepare(self, config: RunConfig, progress: Progress) -> Prepared:
        check_names_and_limits(config)
        splits = load_splits(config, progress)  # the preflight's data checks, run once more on the data trained on
        source = resolve_model(config.model, progress)
        tokenizer, model = load_model(source, splits.label_names, config.dropout)
        label_ids = {name: index for index, name in enumerate(splits.label_names)}
        all_pieces = label_all_subtokens(config)
        raw = {"train": splits.train, "validation": splits.validation, "test": splits.test}
        datasets = {
            # Evaluation splits always label first pieces only: one prediction per word, whatever the option.
            split: encode(frame, tokenizer, label_ids, config.max_length, splits.scheme, all_pieces and split == "train")
            for split, frame in raw.items()
        }
        cut = {split: truncated_sentences(frame, datasets[split]) for split, frame in raw.items()}
        if any(cut.values()):
            progress(
                1.0,
                f"Sentences longer than {config.max_length} tokens lose their last words (train {cut['train']}, "
                f"validation {cut['validation']}, test {cut['test']}); raise the max length to keep them",
            )
        self._tagging = (splits.label_names, splits.scheme)
        from transformers import DataCollatorForTokenClassification

        return Prepared(
            model=model,
            processor=tokenizer,
            datasets=datasets,
            raw=raw,
            collator=DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE_INDEX),
            label_names=splits.label_names,
            head_names=("classifier",),
            extras={
                "data_source": splits.source,
                "model_source": source,
                "tag_scheme": splits.scheme,
                **({"entity_types": ", ".join(splits.entity_types)} if splits.has_entities else {}),
                "label_all_subtokens": all_pieces,
            },
        )

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        if self._tagging is None:
            raise RuntimeError("TokenClassification.compute_metrics needs prepare() first: it learns the tag names there.")
        label_names, scheme = self._tagging
        gold, predicted = labelled_sequences(logits, labels, label_names)
        return ner_metrics(gold, predicted, scheme) if is_entity_scheme(scheme) else tag_metrics(gold, predicted)

    def report(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared) -> dict[str, Any]:
        """Over the words the model saw: per entity type (its micro F1 is the logged `test_f1`), or for plain
        tags per tag (its macro F1 is the logged `test_f1`)."""
        label_names, scheme = prepared.label_names, prepared.extras["tag_scheme"]
        gold, predicted = labelled_sequences(logits, labels, label_names)
        if not is_entity_scheme(scheme):
            return tag_report(gold, predicted, label_names)
        return ner_report(gold, predicted, scheme, entity_types(label_names))

    def predictions(self, logits: np.ndarray, labels: np.ndarray, prepared: Prepared, split: str) -> pd.DataFrame:
        return prediction_frame(logits, labels, prepared, split)

    def headline(self, report: dict[str, Any]) -> dict[str, float | None]:
        """Entity F1 for an entity report, tag F1 for a per-tag one; the first number is the logged `f1`."""
        if not report:
            return {}
        average = report.get("macro avg", {}).get("f1-score")
        if ENTITY_AVERAGE in report:
            return {
                "entity F1 (micro; logged f1)": report[ENTITY_AVERAGE]["f1-score"],
                "entity F1 (macro)": average,
                "token accuracy": report.get("accuracy"),
            }
        return {
            "tag F1 (macro; logged f1)": average,
            "token accuracy": report.get("accuracy"),
            "tag F1 (weighted)": report.get("weighted avg", {}).get("f1-score"),
        }

    # -- after training ------------------------------------------------------------------------------

    def split_rows(self, run, split: str) -> tuple[pd.DataFrame, list[str]]:
        from core.run_files import run_config

        splits = load_splits(run_config(run))
        return splits.split(split), splits.label_names

    def open_stage(self, run, stage: str) -> StageModel:
        from core.checkpoints import load_stage_model
        from core.run_files import run_config

        model, tokenizer = load_stage_model(run, stage, "AutoModelForTokenClassification")
        return StageModel(
            run, stage, model, tokenizer, config_labels(model), self.stage_logits, max_length=run_config(run).max_length
        )

    def model_inputs(self, stage: StageModel, rows: pd.DataFrame) -> dict:
        """The padded encoding of each row's words, as the model read them in training."""
        sentences = [[str(word) for word in words] for words in rows["tokens"]]
        return stage.preprocessor(
            sentences, is_split_into_words=True, truncation=True, max_length=stage.max_length, padding=True, return_tensors="pt"
        ).to(stage.model.device)

    def attack_inputs(self, stage: StageModel, rows: pd.DataFrame, label_ids: dict[str, int]) -> dict:
        """Each word's gold tag on its first piece, -100 elsewhere (and on words cut off): the check scores words, as
        evaluation does."""
        import torch

        from core.ner.align import first_positions

        encoded = self.model_inputs(stage, rows)
        labels = torch.full(encoded["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
        for index, tags in enumerate(rows["tags"]):
            for word, position in enumerate(first_positions(encoded.word_ids(index), len(tags))):
                if position is not None:
                    labels[index, position] = label_ids[tags[word]]
        return {**encoded, "labels": labels.to(stage.model.device)}

    def stage_logits(self, stage: StageModel, rows: pd.DataFrame) -> list[np.ndarray]:
        """Each sentence's (words, tags) logits at the first piece of each word (NaN for a word cut off)."""
        from core.ner.align import first_positions

        sentences = [[str(word) for word in words] for words in rows["tokens"]]
        encoded = self.model_inputs(stage, rows)
        logits = stage.model(**encoded).logits.float().cpu().numpy()
        per_sentence = []
        for index, words in enumerate(sentences):
            firsts = first_positions(encoded.word_ids(index), len(words))
            rows_of = np.full((len(words), logits.shape[-1]), np.nan, dtype=np.float32)
            kept = [word for word, position in enumerate(firsts) if position is not None]
            rows_of[kept] = logits[index, [firsts[word] for word in kept]]
            per_sentence.append(rows_of)
        return per_sentence


def check_names_and_limits(config: RunConfig) -> None:
    """The checks that need no data: the dataset is a NER dataset or file, the max length fits the model."""
    check_ner_dataset(config.dataset)
    check_max_length(resolve_model(config.model), config.max_length)


def load_splits(config: RunConfig, progress: Progress = no_progress):
    """The run's checked sentence splits: the one loader both the submit-time checks and the trainer use."""
    from core.ner.data import load_ner_splits

    return load_ner_splits(
        config.dataset,
        tokens_column=config.text_column or None,
        tags_column=config.label_column or None,
        seed=config.seed,
        max_rows=config.max_rows or None,
        progress=progress,
    )


def label_all_subtokens(config: RunConfig) -> bool:
    """The proposed config field `label_all_subtokens` (absent: False, first piece only)."""
    value = getattr(config, "label_all_subtokens", False)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def check_ner_dataset(dataset: str) -> None:
    """Catch a mistyped dataset name first, with the list to choose from."""
    from pathlib import Path

    from core.ner.data import is_ner_dataset, list_ner_datasets

    path = Path(dataset).expanduser()
    if is_ner_dataset(dataset) or (path.is_file() and path.suffix.lower() in NER_SUFFIXES):
        return
    known = ", ".join(info.key for info in list_ner_datasets())
    raise UserError(
        f"There is no NER dataset '{dataset}'. Choose one of {known}, or give the path of a CoNLL "
        "(.conll/.txt/.tsv/.iob/.bio) or JSON-lines/Parquet file with token and tag lists."
    )


def load_model(source: str, label_names: list[str], dropout: float):
    """The fast tokenizer and a token-classification model with a fresh head of len(label_names) tags."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES

    model_config = load_model_config(source)
    if model_config.model_type not in MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES:
        raise UserError(
            f"The model at {source} is a {model_config.model_type} model, which cannot tag tokens; choose a text "
            "encoder such as minilm-l6, bert-base-cased or roberta-base."
        )
    with_new_head(model_config, label_names, dropout)
    extra = {"add_prefix_space": True} if model_config.model_type in PREFIX_SPACE_MODELS else {}
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **extra)
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(
            f"The tokenizer of the model at {source} is not a fast tokenizer, which NER needs to map word pieces back "
            "to words; choose a model that ships a tokenizer.json (BERT, RoBERTa, DeBERTa and most others do)."
        )
    model = load_with_new_head(AutoModelForTokenClassification, source, model_config, "token classification")
    if "classifier" not in dict(model.named_children()):
        raise UserError(
            f"Cannot find the tagging head ('classifier') of this {type(model).__name__}; choose a BERT-family model."
        )
    return tokenizer, model


def encode(frame: pd.DataFrame, tokenizer, label_ids: dict[str, int], max_length: int, scheme: str, all_pieces: bool):
    from datasets import Dataset

    columns = encode_sentences(
        tokenizer,
        frame["tokens"].tolist(),
        frame["tags"].tolist(),
        label_ids,
        max_length,
        label_all_subtokens=all_pieces,
        scheme=scheme,
    )
    return Dataset.from_dict(columns)


def truncated_sentences(frame: pd.DataFrame, dataset) -> int:
    """Sentences of which some word has no labelled piece left after truncation."""
    labelled = [sum(1 for label in labels if label != IGNORE_INDEX) for labels in dataset["labels"]]
    return sum(1 for words, count in zip(frame["tokens"], labelled) if count < len(words))


# ---------------------------------------------------------------------------------------------
# Metrics


def seqeval_scheme(scheme: str):
    from seqeval.scheme import IOB2 as SEQEVAL_IOB2
    from seqeval.scheme import IOBES as SEQEVAL_IOBES

    return {IOB2: SEQEVAL_IOB2, BIOES: SEQEVAL_IOBES}[scheme]


def labelled_sequences(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tags at the labelled positions (label != -100) of each row, in order."""
    gold, predicted = [], []
    for row_logits, row_labels in zip(logits, labels):
        keep = row_labels != IGNORE_INDEX
        gold.append([label_names[index] for index in row_labels[keep]])
        predicted.append([label_names[index] for index in row_logits[keep].argmax(axis=-1)])
    return gold, predicted


def ner_metrics(gold: list[list[str]], predicted: list[list[str]], scheme: str) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 (strict, scheme-aware), lenient F1, token accuracy."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    strict = {"mode": "strict", "scheme": seqeval_scheme(scheme), "zero_division": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "precision": float(precision_score(gold, predicted, **strict)),
            "recall": float(recall_score(gold, predicted, **strict)),
            "f1": float(f1_score(gold, predicted, **strict)),
            "f1_lenient": float(f1_score(gold, predicted, zero_division=0)),
            "accuracy": float(accuracy_score(gold, predicted)) if any(gold) else 0.0,
        }


def tag_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Per-word scores of plain tags: token accuracy and macro precision/recall/F1 over the tags (logged as `f1`)."""
    return label_scores(_flat(gold), _flat(predicted))


def tag_report(gold: list[list[str]], predicted: list[list[str]], label_names: list[str]) -> dict[str, Any]:
    """scikit-learn's per-tag report over words: one entry per tag, accuracy, macro (the logged `f1`) and weighted avg."""
    return label_report(_flat(gold), _flat(predicted), label_names)


def _flat(sequences: list[list[str]]) -> list[str]:
    return [tag for sequence in sequences for tag in sequence]


def ner_report(gold: list[list[str]], predicted: list[list[str]], scheme: str, types: list[str] = ()) -> dict[str, Any]:
    """seqeval's strict report as plain data: one entry per entity type, micro/macro/weighted avg, token accuracy.

    Every type in `types` gets an entry (zeros when the split has no gold or predicted entity of
    it), so reports before and after training list the same types; the averages are seqeval's,
    over the types present in the split.
    """
    from seqeval.metrics import accuracy_score, classification_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = classification_report(
            gold, predicted, output_dict=True, mode="strict", scheme=seqeval_scheme(scheme), zero_division=0
        )
    report: dict[str, Any] = {}
    for name in sorted(set(types) | (set(raw) - set(AVERAGES))):
        scores = raw.get(name, {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
        report[name] = _plain(scores)
    for name in AVERAGES:
        report[name] = _plain(raw[name])
    report["accuracy"] = float(accuracy_score(gold, predicted)) if any(gold) else 0.0
    return report


def _plain(scores: dict[str, Any]) -> dict[str, float | int]:
    def number(value: Any) -> float:
        value = float(value)
        return 0.0 if math.isnan(value) else value

    return {
        "precision": number(scores["precision"]),
        "recall": number(scores["recall"]),
        "f1-score": number(scores["f1-score"]),
        "support": int(scores["support"]),
    }


def entities(tags: list[str], scheme: str) -> list[tuple[str, int, int]]:
    """Entities as (type, first word, last word) — seqeval's get_entities convention, end inclusive — read strictly."""
    from seqeval.scheme import Tokens

    if all(tag == OUTSIDE for tag in tags):
        return []
    found = Tokens(list(tags), scheme=seqeval_scheme(scheme)).entities
    return [(entity.tag, entity.start, entity.end - 1) for entity in found]


def spans(tags: list[str], scheme: str) -> list[tuple[str, int, int]]:
    """What a sentence's tags mark, as (label, first word, last word): its entities, or for plain tags every tagged
    word as a one-word span of its tag — so a wrong tag is one missed and one spurious span, like a wrong entity
    type, and the per-type confusion of the Inspect view becomes a per-tag confusion."""
    return entities(tags, scheme) if is_entity_scheme(scheme) else word_spans(tags)


# ---------------------------------------------------------------------------------------------
# Words back from pieces


def word_predictions(logits: np.ndarray, labels: np.ndarray, prepared: Prepared, split: str):
    """Per sentence: gold tags, predicted tags (first piece; for words cut off by truncation "O" in an entity
    scheme, no tag for plain tags), and per-word [position of the first piece or None] — from the evaluation
    labels, which mark exactly the first pieces."""
    label_names = prepared.label_names
    unseen = OUTSIDE if is_entity_scheme(prepared.extras["tag_scheme"]) else NO_TAG
    frame = prepared.raw[split]
    gold, predicted, positions = [], [], []
    for words, tags, row_logits, row_labels in zip(frame["tokens"], frame["tags"], logits, labels):
        first = [int(position) for position in np.flatnonzero(row_labels != IGNORE_INDEX)][: len(words)]
        first += [None] * (len(words) - len(first))
        gold.append(list(tags))
        predicted.append([label_names[int(row_logits[p].argmax())] if p is not None else unseen for p in first])
        positions.append(first)
    return gold, predicted, positions


def prediction_frame(logits: np.ndarray, labels: np.ndarray, prepared: Prepared, split: str) -> pd.DataFrame:
    """One row per sentence, in split order.

    Columns: text (tokens joined by spaces), tokens, gold_tags, predicted_tags (lists of strings,
    one per word), gold_entities and predicted_entities (JSON lists of [type, first word, last
    word], end inclusive: the `spans`, so for plain tags one per word), correct (the span sets are
    equal), missed / spurious / errors (span counts), error_types (types with an error),
    errors_by_type (JSON {type: {"missed": n, "spurious": n}}), loss (mean cross-entropy over the
    labelled pieces), confidence (mean top probability over them), word_confidence (top probability
    per word; NaN when unseen) and unseen_words (words truncation cut off, predicted "O" or no tag).
    """
    scheme = prepared.extras["tag_scheme"]
    gold, predicted, positions = word_predictions(logits, labels, prepared, split)
    rows = []
    for index, words in enumerate(prepared.raw[split]["tokens"]):
        row_labels = labels[index]
        keep = row_labels != IGNORE_INDEX
        probabilities = softmax(logits[index][keep].astype(np.float64))
        targets = row_labels[keep]
        top = probabilities.max(axis=-1) if len(targets) else np.array([])
        by_position = dict(zip(np.flatnonzero(keep).tolist(), top.tolist()))
        gold_entities = spans(gold[index], scheme)
        predicted_entities = spans(predicted[index], scheme)
        missed = sorted(set(gold_entities) - set(predicted_entities), key=lambda entity: entity[1])
        spurious = sorted(set(predicted_entities) - set(gold_entities), key=lambda entity: entity[1])
        by_type: dict[str, dict[str, int]] = {}
        for key, found in (("missed", missed), ("spurious", spurious)):
            for kind, _, _ in found:
                by_type.setdefault(kind, {"missed": 0, "spurious": 0})[key] += 1
        rows.append(
            {
                "text": " ".join(words),
                "tokens": list(words),
                "gold_tags": gold[index],
                "predicted_tags": predicted[index],
                "gold_entities": json.dumps([list(entity) for entity in gold_entities]),
                "predicted_entities": json.dumps([list(entity) for entity in predicted_entities]),
                "correct": not missed and not spurious,
                "missed": len(missed),
                "spurious": len(spurious),
                "errors": len(missed) + len(spurious),
                "error_types": sorted(by_type),
                "errors_by_type": json.dumps(dict(sorted(by_type.items()))),
                "loss": (
                    float(-np.log(np.clip(probabilities[np.arange(len(targets)), targets], 1e-12, None)).mean())
                    if len(targets)
                    else float("nan")
                ),
                "confidence": float(top.mean()) if len(targets) else float("nan"),
                "word_confidence": [
                    by_position.get(p, float("nan")) if p is not None else float("nan") for p in positions[index]
                ],
                "unseen_words": sum(1 for p in positions[index] if p is None),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "text",
            "tokens",
            "gold_tags",
            "predicted_tags",
            "gold_entities",
            "predicted_entities",
            "correct",
            "missed",
            "spurious",
            "errors",
            "error_types",
            "errors_by_type",
            "loss",
            "confidence",
            "word_confidence",
            "unseen_words",
        ],
    )
