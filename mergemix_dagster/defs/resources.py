"""The resources every asset, sensor and schedule asks for by name: the settings file, the store, DuckDB."""

from __future__ import annotations

import dagster as dg

from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.settings import PipelineSettings


def definitions(settings: Settings, config: str) -> dg.Definitions:
    """``config`` is what the settings were loaded from (run workers load it again; empty: $MERGEMIX_CONFIG)."""
    return dg.Definitions(resources={
        "settings": PipelineSettings(config=config),
        "store": CheckpointStore(root=settings.store_uri),
        "database": EvaluationDatabase(path=settings.database_path, store_root=settings.store_uri),
    })
