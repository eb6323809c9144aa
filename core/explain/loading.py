"""One loader for every explainer, with one cache policy.

    explainer = load_explainer(run_id)                    # the adapter the run's task names (Task.view)
    explainer = load_explainer(run_id, "before", word=3)  # a NER run: the explainer of word 3's tag

The stage's model is opened once by `core.stages.open_stage` (the task's own loader, kept per workspace, run,
stage and time the stage's model was written), so a page calling this on every rerun, or on every click for
another word, loads the model once; a run that saves a new model gets a fresh one. Each explainer (with its
explanation cache) is kept under the same key. `ADAPTERS` says which adapter class reads which
view; each class builds itself from a `StageModel` (`from_stage`).
"""

from __future__ import annotations

from core.errors import UserError
from core.explain.answers import AnswerExplainer
from core.explain.cache import LRUCache
from core.explain.image import ImageExplainer
from core.explain.pairs import PairExplainer
from core.explain.tags import TagExplainer
from core.explain.text import TextExplainer

EXPLAINER_CACHE_SIZE = 64  # explainers over the opened stages (a NER run has one per explained word)

# One line per view a task can name (`Task.view`): the adapter that explains its runs.
ADAPTERS = {
    "text": TextExplainer,
    "tags": TagExplainer,
    "image": ImageExplainer,
    "pairs": PairExplainer,
    "answers": AnswerExplainer,
}

_EXPLAINERS = LRUCache(EXPLAINER_CACHE_SIZE)


def load_explainer(run_id: str, stage: str | None = None, word: int | None = None, refuse: dict[str, str] | None = None):
    """The explainer of a run's model at `stage` (None: the latest), kept for the next call.

    `word` picks the word of a NER run whose tag is explained. `refuse` maps a view the caller cannot use to the
    sentence saying so (e.g. a token view asked for an image run)."""
    from core.checkpoints import latest_stage
    from core.stages import open_stage, stage_key, task_of
    from core.store import RunStore

    run = RunStore().get(run_id)
    if run is None:
        raise UserError(f"There is no run '{run_id}' in this workspace; `python -m core runs` lists the runs there are.")
    task = task_of(run)
    if refuse and task.view in refuse:
        raise UserError(refuse[task.view].format(run=run, task=task.title.lower()))
    view = task.view
    if not run.directory.exists():
        raise UserError(f"The directory of run {run_id} was deleted; its models are gone. Pick another run.")
    stage = stage or latest_stage(run)
    key = stage_key(run, stage)
    found = _EXPLAINERS.get((key, word))
    if found is not None:
        return found
    opened = open_stage(run, stage)
    explainer = ADAPTERS[view].from_stage(opened, word)
    explainer.run_id, explainer.stage = run_id, stage
    return _EXPLAINERS.put((key, word), explainer)


# The explainer of one view, for callers that draw or print only that one; the sentence for a run of another view.
NOT_TOKENS = "Run {run.id} is a {task} run; token explanations need a text classification run."
NOT_PATCHES = "Run {run.id} is a {task} run; patch explanations need an image classification run."


def load_text_explainer(run_id: str, stage: str | None = None) -> TextExplainer:
    return load_explainer(
        run_id,
        stage,
        refuse={
            "image": NOT_TOKENS,
            "tags": NOT_TOKENS + " For a named-entity run, pick the word: --token K.",
            "pairs": NOT_TOKENS + " For an image-text run, give an image too: --image PATH --text WORDS.",
        },
    )


def load_image_explainer(run_id: str, stage: str | None = None) -> ImageExplainer:
    return load_explainer(run_id, stage, refuse=dict.fromkeys(("text", "tags", "pairs"), NOT_PATCHES))


def load_tag_explainer(run_id: str, word_index: int, stage: str | None = None) -> TagExplainer:
    refusal = "Run {run.id} is not a named-entity run; tag explanations need a token classification run."
    return load_explainer(run_id, stage, word_index, refuse=dict.fromkeys(("text", "image", "pairs"), refusal))


def load_pair_explainer(run_id: str, stage: str | None = None) -> PairExplainer:
    refusal = "Run {run.id} is a {task} run; pick an image-text run for retrieval and cross-modal maps."
    return load_explainer(run_id, stage, refuse=dict.fromkeys(("text", "tags", "image"), refusal))


def clear_explainer_cache() -> None:
    """Forget every opened stage and explainer (the next call loads from disk)."""
    from core.stages import clear_stage_cache

    clear_stage_cache()
    _EXPLAINERS.clear()
