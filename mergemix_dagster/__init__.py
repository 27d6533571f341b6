"""mergemix-dagster: choose LLM mid-training data mixtures by merging per-domain experts."""

__version__ = "0.1.0"
