"""The one ``Definitions`` of the code location: assets, resources, jobs, schedules, sensors.

Loading them applies the settings that are process-wide by nature: Hugging Face offline mode
(``model.offline``), and silencing Dagster's BetaWarning about the multi-partition mappings we rely on.
"""

from __future__ import annotations

import warnings

import dagster as dg

# Before .partitions is imported: the domain×stage mappings are beta, and a warning on every command
# (CLI, UI, each run worker) tells a user nothing they can act on.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from mergemix_dagster.assets import build_assets  # noqa: E402
from mergemix_dagster.assets.hierarchy import with_hierarchy  # noqa: E402
from mergemix_dagster.resources.pools import pools_from  # noqa: E402
from mergemix_dagster.defs.automation import stage_automation_sensor, with_stage_automation  # noqa: E402
from mergemix_dagster.core.training.hub import set_offline  # noqa: E402
from mergemix_dagster.defs.jobs import ALL_JOBS  # noqa: E402
from mergemix_dagster.assets.partitions import build_partitions  # noqa: E402
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase  # noqa: E402
from mergemix_dagster.resources.settings import PipelineSettings  # noqa: E402
from mergemix_dagster.defs.schedules import build_schedules  # noqa: E402
from mergemix_dagster.defs.sensors import build_sensors  # noqa: E402
from mergemix_dagster.core.settings import Settings, load_settings  # noqa: E402
from mergemix_dagster.assets.versions import with_settings_versions  # noqa: E402


def build_definitions(settings: Settings | None = None, config: str = "") -> dg.Definitions:
    """Definitions for one settings file (``config``: path or bundled name; empty = $MERGEMIX_CONFIG)."""
    settings = settings or load_settings(config or None)
    set_offline(settings.model.offline)
    parts = build_partitions(settings)
    defs_ref: list[dg.Definitions] = []  # sensors and schedules read the asset graph for staleness
    # sub-domains, if any
    assets, jobs = with_hierarchy(build_assets(parts, pools_from(settings)), ALL_JOBS, parts, settings)
    defs = dg.Definitions(
        assets=with_stage_automation(with_settings_versions(assets, settings)),
        jobs=jobs,
        sensors=[*build_sensors(defs_ref), stage_automation_sensor()],
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
