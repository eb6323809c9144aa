"""Instruction tuning data and encoding: prompt/response pairs a causal language model learns to answer.

`data` holds the splits, the built-in sets and uploads (a kind of the dataset registry, registered by `kind`);
`encoding`, `generation` and `scores` turn the pairs into training examples, answers and their scores. The task
itself is `core.tasks.instruction_tuning`. Nothing is imported here, so importing one module stays light.
"""
