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
