"""Hyperparameter sweeps: a spec (`spec`), the driver process that runs one with Optuna (`driver`), and what it
found (`results`). Every trial is an ordinary run in the run store that names its sweep."""
