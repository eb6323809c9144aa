"""Registry of tasks: one module per task, one line here."""

from core.tasks.base import Prepared, Task
from core.tasks.image_classification import ImageClassification
from core.tasks.image_text_contrastive import ImageTextContrastive
from core.tasks.image_text_fusion import ImageTextFusion
from core.tasks.instruction_tuning import InstructionTuning
from core.tasks.text_classification import TextClassification
from core.tasks.token_classification import TokenClassification

TASKS: dict[str, Task] = {
    task.key: task
    for task in (
        TextClassification(),
        ImageClassification(),
        TokenClassification(),
        ImageTextContrastive(),
        ImageTextFusion(),
        InstructionTuning(),
    )
}

__all__ = ["TASKS", "Prepared", "Task"]
