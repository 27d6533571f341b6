"""Framework-free core, by concern: ``data/``, ``training/``, ``merge/``, ``evaluation/``, ``search/``; at the
bottom the settings types (``settings/``), named errors and ``Mixture``; beside them the preflight check,
plots, the stage report and progress lines.

Nothing under ``core`` imports Dagster (an import-linter contract in pyproject.toml); the layers above call
these plain functions.
"""
