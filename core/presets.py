"""Teaching presets: one click fills the Train page with a lesson's config (or queues its variants).

Each preset says what to watch for in the curves. A preset with several variants is a controlled
comparison (only the named knobs differ); the Runs page overlays the variants' curves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.config import RunConfig


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    watch_for: str  # the paragraph a teacher reads out: what the curves will show
    common: dict[str, Any]
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"": {}})

    def configs(self) -> list[RunConfig]:
        """One config per variant, named after the preset and the variant."""
        return [
            RunConfig(**{**self.common, **changes, "name": f"{self.title}{f' · {label}' if label else ''}"})
            for label, changes in self.variants.items()
        ]


SEED = {"model": "minilm-l6", "dataset": "movie-reviews", "batch_size": 16, "epochs": 3.0, "eval_steps": 50, "logging_steps": 10}
SHAPES = {
    "task": "image_text_contrastive",
    "model": "mobilenet-minilm-clip",
    "dataset": "shapes-captions",
    "batch_size": 32,
    "learning_rate": 1e-4,
    "epochs": 3.0,
    "image_size": 64,
    "max_length": 32,
    "eval_steps": 10,
    "logging_steps": 5,
}

PRESETS: dict[str, Preset] = {
    preset.key: preset
    for preset in (
        Preset(
            "seed",
            "Seed: BERT movie-review sentiment",
            "The classic recipe: AdamW at 2e-5, batch 16, three epochs, linear decay after a 10 % warmup "
            "(three times the built-in default's one epoch, so about three times as long). "
            "Watch the step-0 point first: the untrained head guesses (about 50 % accuracy). The training loss "
            "falls fastest in the first epoch, validation accuracy climbs to roughly 80 %, and the learning-rate "
            "panel shows the warmup ramp and the linear decay. The run keeps its best checkpoint by validation "
            "accuracy, so later epochs cannot make the saved model worse.",
            {**SEED, "learning_rate": 2e-5},
        ),
        Preset(
            "overfit",
            "Over-fit on purpose",
            "A learning rate of 1e-3 with no weight decay and no dropout, for many epochs on a few hundred "
            "sentences. Watch the training loss race towards zero while the validation loss turns and climbs: "
            "the gap between the two curves is over-fitting. Validation accuracy stalls or drops even as the "
            "training loss keeps improving. This preset keeps the last checkpoint, not the best one, so the "
            "test numbers after training show what over-fitting costs; tick 'Keep the best checkpoint' to see "
            "the saved model recover.",
            {
                **SEED,
                "learning_rate": 1e-3,
                "weight_decay": 0.0,
                "dropout": 0.0,
                "max_rows": 500,
                "epochs": 10.0,
                "eval_steps": 20,
                "best_checkpoint": False,
            },
        ),
        Preset(
            "probe-vs-full",
            "Linear probe vs full fine-tune",
            "Two runs on the same data: a linear probe (only the new classifier trains, about 0.01 % of the "
            "weights) and a full fine-tune. Overlay them on the Runs page: the probe's loss falls slowly and "
            "plateaus higher, because the frozen sentence features were never trained for sentiment; the full "
            "fine-tune reaches a higher accuracy but every weight moves.",
            {**SEED, "epochs": 2.0},
            {"linear probe": {"strategy": "head", "learning_rate": 1e-3}, "full": {"strategy": "full", "learning_rate": 5e-5}},
        ),
        Preset(
            "lora-vs-full",
            "LoRA vs full",
            "LoRA trains small low-rank adapters on the attention query and value projections (about 1 % of "
            "the weights) with a larger learning rate. Overlay the two runs: LoRA usually lands close to the "
            "full fine-tune's accuracy, a little slower at first; the run summary shows how few parameters trained.",
            {**SEED, "epochs": 2.0},
            {
                "LoRA r=8": {"strategy": "lora", "lora_r": 8, "learning_rate": 5e-4},
                "full": {"strategy": "full", "learning_rate": 5e-5},
            },
        ),
        Preset(
            "adversarial-vs-plain",
            "Adversarial vs plain",
            "The same fine-tune with and without FGM adversarial training (a 5 % perturbation of the word "
            "embeddings each step). The adversarial run's training loss sits a little higher, since every batch "
            "also carries its hardest nearby version. Then compare both on Inspect's robustness check: accuracy "
            "under attack drops much less for the adversarially trained model.",
            {**SEED, "epochs": 2.0, "learning_rate": 5e-5},
            {"FGM": {"adversarial": "fgm", "adv_epsilon": 0.05}, "plain": {"adversarial": "none"}},
        ),
        Preset(
            "align-shapes",
            "Align images and captions (CLIP-style)",
            "The built-in dual encoder (MobileNetV2 sees, MiniLM reads) learns that 'a red circle in the top left' "
            "goes with its picture. Step 0 shows retrieval near chance: the new projections map both towers to "
            "unrelated places. Watch recall@1 climb in both directions while the contrastive loss falls from "
            "about ln(32), each image picking its caption among the 31 others of its batch. Then open Inspect, "
            "type 'blue square' and see which images come back, and which words and patches drove a match.",
            SHAPES,
        ),
        Preset(
            "teach-smollm2",
            "Teach SmolLM2 to answer: sentiment instructions (LoRA)",
            "SmolLM2-135M-Instruct learns to answer 'Is this review positive or negative?' with one word. Step 0 "
            "shows the pretrained model's habit on the Runs page's sample answers: a chatty sentence ('This review is "
            "positive, as it highlights the…'), so exact match starts at zero even when the opinion is right. Within "
            "a few dozen steps the answers shrink to 'positive' or 'negative' and exact match climbs while the "
            "validation loss and perplexity fall. Only the LoRA adapters on q_proj and v_proj train (under 1 % of "
            "the weights). Then open Inspect and see which words of a review made it answer as it did. About 15 "
            "minutes on a laptop CPU.",
            {
                "task": "instruction_tuning",
                "model": "smollm2-135m",
                "dataset": "sentiment-instructions",
                "max_rows": 800,
                "epochs": 1.0,
                "batch_size": 8,
                "learning_rate": 2e-4,
                "strategy": "lora",
                "lora_targets": ["q_proj", "v_proj"],
                "max_length": 256,
                "eval_steps": 20,
                "logging_steps": 5,
            },
        ),
        Preset(
            "towers-frozen-vs-trained",
            "Frozen towers vs trained towers",
            "Two alignment runs on the same captions: one trains only the projections and the temperature (both "
            "towers frozen: a cheap linear alignment of fixed features), the other trains the towers too. Overlay "
            "them: the frozen run moves quickly but plateaus lower, because MobileNetV2's ImageNet features and "
            "MiniLM's sentence features were never trained to agree on colours and positions.",
            {**SHAPES, "epochs": 2.0},
            {
                "towers frozen": {"vision_tower": "freeze", "text_tower": "freeze", "learning_rate": 1e-3},
                "towers trained": {"vision_tower": "train", "text_tower": "train"},
            },
        ),
    )
}
