"""The one ``Definitions`` of the code location: assets, resources, jobs, schedules, sensors."""

from __future__ import annotations

import dagster as dg

from .assets import build_assets
from .jobs import ALL_JOBS
from .partitions import build_partitions
from .resources import CheckpointStore, EvaluationDatabase
from .resources.settings import PipelineSettings
from .schedules import build_schedules
from .sensors import build_sensors
from .settings import Settings, load_settings
from .versions import with_settings_versions


def build_definitions(settings: Settings | None = None, config: str = "") -> dg.Definitions:
    """Definitions for one settings file (``config``: path or bundled name; empty = $MERGEMIX_CONFIG)."""
    settings = settings or load_settings(config or None)
    parts = build_partitions(settings)
    defs_ref: list[dg.Definitions] = []  # sensors and schedules read the asset graph for staleness
    defs = dg.Definitions(
        assets=with_settings_versions(build_assets(parts), settings),
        jobs=ALL_JOBS,
        sensors=build_sensors(defs_ref),
        schedules=build_schedules(defs_ref, settings),
        resources={
            "settings": PipelineSettings(config=config),
            "store": CheckpointStore(root=settings.store_uri),
            "database": EvaluationDatabase(path=settings.database_path),
        },
    )
    defs_ref.append(defs)
    return defs


defs = build_definitions()
