"""Word-piece alignment: word-level tags onto sub-word tokens, and sub-word predictions back onto words.

A fast tokenizer splits each word into pieces and says, through `word_ids()`, which word every
token came from (None for [CLS], [SEP] and padding). Tags belong to words, so each word's tag goes:

- on its first piece only, the other pieces getting -100, which the cross-entropy loss ignores
  (the default, and how every evaluation here labels: one prediction per word); or
- on all its pieces (`label_all_subtokens`), with the tag rewritten per piece so the sequence stays
  valid in its scheme: B-X becomes B-X I-X I-X, S-X becomes B-X I-X E-X, E-X becomes I-X I-X E-X;
  a plain tag (a part-of-speech tag, say) marks no span, so every piece simply repeats it.

Special tokens are always -100. Truncation to `max_length` drops the pieces past the limit, and the
labels are computed from the truncated `word_ids`, so they stay aligned; words cut off entirely
have no labelled position (the prediction frames report them as unseen).

A word that the tokenizer turns into no piece at all (a lone zero-width space, a control character)
would silently lose its tag and shift every later word's prediction, so such words are fed to the
model as the unknown token instead.
"""

from __future__ import annotations

from collections.abc import Sequence

IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy and the Trainer ignore


def piece_tags(tag: str, pieces: int, scheme: str = "IOB2") -> list[str]:
    """The tags for the `pieces` sub-tokens of one word tagged `tag`, keeping the scheme valid."""
    if pieces < 1:
        return []
    if scheme == "plain" or tag == "O" or pieces == 1:
        return [tag] * pieces
    prefix, kind = tag[0], tag[2:]
    inside = [f"I-{kind}"] * (pieces - 2)
    if scheme == "BIOES":
        first = {"B": f"B-{kind}", "I": f"I-{kind}", "E": f"I-{kind}", "S": f"B-{kind}"}[prefix]
        last = {"B": f"I-{kind}", "I": f"I-{kind}", "E": f"E-{kind}", "S": f"E-{kind}"}[prefix]
        return [first] + inside + [last]
    first = f"B-{kind}" if prefix == "B" else f"I-{kind}"
    return [first] + [f"I-{kind}"] * (pieces - 1)


def align_labels(
    word_ids: Sequence[int | None],
    tags: Sequence[str],
    label_ids: dict[str, int],
    *,
    label_all_subtokens: bool = False,
    scheme: str = "IOB2",
) -> list[int]:
    """One label id per token: the word's tag on its first piece (or on all pieces), -100 elsewhere."""
    labels = [IGNORE_INDEX] * len(word_ids)
    positions: dict[int, list[int]] = {}
    for position, word in enumerate(word_ids):
        if word is not None:
            positions.setdefault(word, []).append(position)
    for word, where in positions.items():
        if label_all_subtokens:
            for position, tag in zip(where, piece_tags(tags[word], len(where), scheme)):
                labels[position] = label_ids[tag]
        else:
            labels[where[0]] = label_ids[tags[word]]
    return labels


def first_positions(word_ids: Sequence[int | None], words: int) -> list[int | None]:
    """For each of `words` words, the position of its first piece, or None when truncation cut it off."""
    found: list[int | None] = [None] * words
    for position, word in enumerate(word_ids):
        if word is not None and word < words and found[word] is None:
            found[word] = position
    return found


def model_words(sentences: Sequence[Sequence[str]], tokenizer) -> list[list[str]]:
    """The sentences as fed to the model: words the tokenizer reduces to nothing become its unknown token."""
    unknown = getattr(tokenizer, "unk_token", None)
    vocabulary = sorted({word for words in sentences for word in words})
    if not unknown or not vocabulary:
        return [list(words) for words in sentences]
    pieces = tokenizer(vocabulary, add_special_tokens=False)["input_ids"]
    empty = {word for word, ids in zip(vocabulary, pieces) if not ids}
    if not empty:
        return [list(words) for words in sentences]
    return [[unknown if word in empty else word for word in words] for words in sentences]


def tokenize_words(tokenizer, sentences: Sequence[Sequence[str]], max_length: int):
    """The fast tokenizer's encoding of pre-split sentences, truncated to `max_length` tokens (no padding)."""
    return tokenizer(model_words(sentences, tokenizer), is_split_into_words=True, truncation=True, max_length=max_length)


def encode_sentences(
    tokenizer,
    sentences: Sequence[Sequence[str]],
    tag_lists: Sequence[Sequence[str]],
    label_ids: dict[str, int],
    max_length: int,
    *,
    label_all_subtokens: bool = False,
    scheme: str = "IOB2",
) -> dict[str, list]:
    """Columns for a `datasets.Dataset`: the tokenizer's outputs plus aligned `labels`."""
    encoding = tokenize_words(tokenizer, sentences, max_length)
    columns = {key: list(values) for key, values in encoding.items()}
    columns["labels"] = [
        align_labels(encoding.word_ids(index), tags, label_ids, label_all_subtokens=label_all_subtokens, scheme=scheme)
        for index, tags in enumerate(tag_lists)
    ]
    return columns
