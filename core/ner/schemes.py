"""Tag schemes of token-tagged data: IOB2 (BIO) and BIOES entity tags, or plain per-word tags.

IOB2 (O, B-X, I-X with every entity starting at B-) and BIOES (adds E-X for the last word of a
longer entity and S-X for a one-word entity) are entity schemes; any other tag set (part-of-speech
tags such as NNP, VBZ, DT) is "plain": one label per word, no spans. The scheme is detected from the
tags in use — plain when no tag carries a B-/I-/E-/S- prefix — then every sentence is checked
against it; a broken sequence is a `UserError` naming the sentence, the token and its line (I-PER
after O, B-PER left open in BIOES, a prefix-less tag among BIO tags, …). An I- tag that continues no
entity is refused, not repaired as conlleval would: repairing would change the gold annotation
silently (an IOB1 file must be converted to IOB2 first).
"""

from __future__ import annotations

import re

import pandas as pd

from core.errors import UserError

OUTSIDE = "O"
NO_TAG = ""  # a word without a plain tag: one that truncation cut off before the model saw it
IOB2, BIOES, PLAIN = "IOB2", "BIOES", "plain"
ENTITY_SCHEMES = (IOB2, BIOES)
SCHEME_NAMES = {IOB2: "IOB2 (BIO)", BIOES: "BIOES", PLAIN: "plain tags"}
_TAG = re.compile(r"^([BIES])-(\S+)$")


def is_entity_scheme(scheme: str) -> bool:
    """Whether tags of `scheme` mark entity spans (IOB2, BIOES), scored by seqeval, or are plain per-word labels."""
    return scheme in ENTITY_SCHEMES


def entity_types(label_names: list[str]) -> list[str]:
    return sorted({tag[2:] for tag in label_names if tag != OUTSIDE})


def word_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Plain tags as one-word spans (tag, word, word), so tagged words draw and compare like entities."""
    return [(tag, index, index) for index, tag in enumerate(tags) if tag != NO_TAG]


def scheme_sentence(scheme: str) -> str:
    """What the detected scheme means for training and scoring, in one sentence for people."""
    if scheme == PLAIN:
        return (
            "Found plain tags (no B-/I-/E-/S- prefixes, as in part-of-speech tagging): each word gets one label and "
            "no spans are formed, so a run trains per-word tagging and reports token accuracy and scikit-learn's "
            "per-tag precision, recall and F1; its f1 is the macro F1 over the tags."
        )
    spans = "B- begins an entity, I- continues it" + (", E- ends it, S- is a one-word entity" if scheme == BIOES else "")
    return (
        f"Found {SCHEME_NAMES[scheme]} entity tags ({spans}): a run is scored on whole entities with seqeval's "
        "strict entity-level report (precision, recall and F1 per entity type); its f1 is the micro entity F1."
    )


def tag_names(frame: pd.DataFrame, scheme: str) -> list[str]:
    """Every tag in use, sorted; in an entity scheme "O" comes first (and is there even if no word has it)."""
    tags = {tag for sentence in frame["tags"] for tag in sentence}
    if not is_entity_scheme(scheme):
        return sorted(tags)
    return [OUTSIDE] + sorted(tags - {OUTSIDE})


def detect_scheme(tag_lists) -> str:
    """ "plain" when no tag has a B-/I-/E-/S- prefix, else "BIOES" when an E- or S- tag is used, else "IOB2".

    A tag set that mixes prefixed and other tags is an entity scheme with mistakes in it (a typo such
    as PER for B-PER), not a plain one; `check_tags` names the offending tag.
    """
    tags = {tag for tags in tag_lists for tag in tags}
    if not any(_TAG.match(tag) for tag in tags) and tags - {OUTSIDE}:
        return PLAIN
    prefixes = {tag[:2] for tag in tags}
    return BIOES if prefixes & {"E-", "S-"} else IOB2


def check_tags(frame: pd.DataFrame, where: str) -> str:
    """The frame's tag scheme, after checking every tag and every sentence against it."""
    lines = frame["lines"] if "lines" in frame.columns else [None] * len(frame)
    for sentence, (tokens, tags, numbers) in enumerate(zip(frame["tokens"], frame["tags"], lines), 1):
        if not len(tokens):
            raise UserError(f"Sentence {sentence} of {where} is empty; remove it or give it tokens and tags.")
        blank = next((index for index, tag in enumerate(tags) if not str(tag).strip()), None)
        if blank is not None:
            raise UserError(f"The tag at {_place(sentence, blank, tokens, numbers)} of {where} is empty; give every token a tag.")
    scheme = detect_scheme(frame["tags"])
    if scheme == PLAIN:
        _check_plain_tags(frame, where)
        return scheme
    for sentence, (tokens, tags, numbers) in enumerate(zip(frame["tokens"], frame["tags"], lines), 1):
        for index, tag in enumerate(tags):
            if tag != OUTSIDE and not _TAG.match(tag):
                raise UserError(
                    f"The tag {tag!r} at {_place(sentence, index, tokens, numbers)} of {where} is outside the BIO/BIOES "
                    "tag scheme that its other tags use; tags are O, or B-, I- (and in BIOES E-, S-) followed by the "
                    "entity type, such as B-PER. A file of plain tags (part-of-speech tags, say) trains too, but then "
                    "no tag may start with B-, I-, E- or S-."
                )
    for sentence, (tokens, tags, numbers) in enumerate(zip(frame["tokens"], frame["tags"], lines), 1):
        problem = sequence_problem(list(tags), scheme)
        if problem:
            index, message = problem
            raise UserError(f"{message} at {_place(sentence, index, tokens, numbers)} of {where}: {_advice(tags, index, scheme)}")
    if not any(tag != OUTSIDE for tags in frame["tags"] for tag in tags):
        raise UserError(
            f"Every tag in {where} is O, so there are no entities to learn; check that the tags column holds tags "
            "such as B-PER and I-PER, or annotate some entities."
        )
    return scheme


def _check_plain_tags(frame: pd.DataFrame, where: str) -> None:
    """Plain tags need no sequence rules, only something to tell apart: at least two different tags."""
    tags = {tag for tags in frame["tags"] for tag in tags}
    if len(tags) < 2:
        raise UserError(
            f"Every word in {where} has the tag {next(iter(tags))!r}, so there is nothing to learn; check that the tag "
            "column is the right one, or tag the words with at least two different tags."
        )


def sequence_problem(tags: list[str], scheme: str) -> tuple[int, str] | None:
    """(token index, "I-PER after O") for the first tag that breaks the scheme, or None when the sentence is valid."""
    allowed_prefixes = "BI" if scheme == IOB2 else "BIES"
    for index, tag in enumerate(tags):
        previous = tags[index - 1] if index else None
        following = tags[index + 1] if index + 1 < len(tags) else None
        prefix, kind = (tag[0], tag[2:]) if tag != OUTSIDE else ("O", "")
        if prefix not in allowed_prefixes + "O":
            return index, f"{tag} is not an {SCHEME_NAMES[scheme]} tag"
        if prefix in "IE" and previous not in (f"B-{kind}", f"I-{kind}"):
            return index, f"{tag} after {previous or 'the start of the sentence'}"
        if scheme == BIOES and prefix in "BI" and following not in (f"I-{kind}", f"E-{kind}"):
            return index, f"{tag} followed by {following or 'the end of the sentence'}"
    return None


def _advice(tags, index: int, scheme: str) -> str:
    tag = tags[index]
    kind = tag[2:]
    if scheme == IOB2:
        return (
            f"in the {SCHEME_NAMES[scheme]} scheme an entity starts with B-{kind}, so change this tag to B-{kind} "
            f"or fix the tag before it (a file in IOB1, where I- may start an entity, must be converted to IOB2)."
        )
    if tag.startswith(("I-", "E-")) and (index == 0 or tags[index - 1] not in (f"B-{kind}", f"I-{kind}")):
        return (
            f"in the BIOES scheme {tag[:1]}-{kind} continues an entity begun by B-{kind}, so change this tag "
            f"(to B-{kind} or S-{kind}) or fix the tag before it."
        )
    return (
        f"in the BIOES scheme an entity of several words ends with E-{kind} and a one-word entity is S-{kind}, so change "
        "this tag or the one after it."
    )


def _place(sentence: int, index: int, tokens, numbers) -> str:
    token = str(tokens[index])[:30] if index < len(tokens) else ""
    line = f", line {numbers[index]}" if numbers is not None and index < len(numbers) else ""
    return f"sentence {sentence}, token {index + 1} ({token!r}{line})"
