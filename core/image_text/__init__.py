"""Joint image-text training (CLIP-style dual encoders): data, model and retrieval metrics.

Work in progress towards the image-text task: the synthetic shapes set, retrieval metrics and the
dual encoder built offline from the two built-in towers. The task module is not registered yet.
"""
