"""The one ``Definitions`` of the code location, assembled from ``defs/``: assets and jobs, sensors,
schedules, the new-stage automation, resources.

It is a function of the settings file (partitions, code versions and schedule times depend on it), and
loading it applies the settings that are process-wide by nature: Hugging Face offline mode
(``model.offline``), and silencing Dagster's BetaWarning about the multi-partition mappings we rely on.
"""

from __future__ import annotations

import warnings

import dagster as dg

# Before the partitions are imported: the domain×stage mappings are beta, and a warning on every command
# (CLI, UI, each run worker) tells a user nothing they can act on.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from mergemix_dagster.core.settings import Settings, load_settings  # noqa: E402
from mergemix_dagster.core.training.hub import set_offline  # noqa: E402
from mergemix_dagster.defs import assets, automation, resources, schedules, sensors  # noqa: E402


def build_definitions(settings: Settings | None = None, config: str = "") -> dg.Definitions:
    """Definitions for one settings file (``config``: path or bundled name; empty = $MERGEMIX_CONFIG)."""
    settings = settings or load_settings(config or None)
    set_offline(settings.model.offline)
    return dg.Definitions.merge(
        assets.definitions(settings),
        sensors.definitions(),
        automation.definitions(),
        schedules.definitions(settings),
        resources.definitions(settings, config),
    )


defs = build_definitions()
