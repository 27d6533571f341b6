"""Framework-free core: mixtures, corpora, models, training, merging, evaluation, surrogates, search.

Nothing under ``core`` imports Dagster; the asset layer calls these plain functions.
"""
