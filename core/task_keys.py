"""The task keys: the names a run config, a dataset spec and the task registry share.

A leaf module (it imports nothing) so that the config can refuse an unknown task, and a data or model
package can name the task it serves, without importing `core.tasks`, which imports them all.
`core.tasks.TASKS` registers one task per key, in this order (tests/core/test_layering.py checks).
"""

TEXT_CLASSIFICATION = "text_classification"
IMAGE_CLASSIFICATION = "image_classification"
TOKEN_CLASSIFICATION = "token_classification"
IMAGE_TEXT_CONTRASTIVE = "image_text_contrastive"
IMAGE_TEXT_FUSION = "image_text_fusion"
INSTRUCTION_TUNING = "instruction_tuning"

TASK_KEYS = (
    TEXT_CLASSIFICATION,
    IMAGE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    IMAGE_TEXT_CONTRASTIVE,
    IMAGE_TEXT_FUSION,
    INSTRUCTION_TUNING,
)

# What a task fills in where the common defaults (an encoder's) do not suit it: the Train page when the task is picked,
# and a run config that names the task but not these keys (`RunConfig.from_dict`). `Task.suggested` reads it.
TASK_SUGGESTIONS: dict[str, dict] = {
    INSTRUCTION_TUNING: {
        "model": "smollm2-135m",
        "dataset": "sentiment-instructions",
        "strategy": "lora",
        "lora_targets": ["q_proj", "v_proj"],
        "learning_rate": 2e-4,
        "max_length": 256,
        "batch_size": 8,
    },
}
