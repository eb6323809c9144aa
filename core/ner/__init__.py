"""Token classification data: NER and plain-tag datasets and tag schemes (`data`), word-piece alignment (`align`).

The task itself (model, metrics, report, predictions) is `core.tasks.token_classification`.
"""

from core.ner.align import IGNORE_INDEX, align_labels, encode_sentences, first_positions, piece_tags, tokenize_words
from core.ner.data import (
    BUILTIN_NER_DATASETS,
    NER_SUFFIXES,
    TOKEN_CLASSIFICATION,
    TWEET_NER,
    TWEET_NER_ASSET,
    NerSplits,
    is_ner_dataset,
    list_ner_datasets,
    load_ner_splits,
    register_ner_dataset,
)
from core.ner.parsing import parse_conll, parse_ner, read_ner_file
from core.ner.schemes import BIOES, IOB2, PLAIN, check_tags, detect_scheme, is_entity_scheme, scheme_sentence, word_spans

__all__ = [
    "BIOES",
    "BUILTIN_NER_DATASETS",
    "IGNORE_INDEX",
    "IOB2",
    "NER_SUFFIXES",
    "PLAIN",
    "TOKEN_CLASSIFICATION",
    "TWEET_NER",
    "TWEET_NER_ASSET",
    "NerSplits",
    "align_labels",
    "check_tags",
    "detect_scheme",
    "encode_sentences",
    "first_positions",
    "is_entity_scheme",
    "is_ner_dataset",
    "list_ner_datasets",
    "load_ner_splits",
    "parse_conll",
    "parse_ner",
    "piece_tags",
    "read_ner_file",
    "register_ner_dataset",
    "scheme_sentence",
    "tokenize_words",
    "word_spans",
]
