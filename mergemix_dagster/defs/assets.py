"""The assets of one settings file, and the jobs that run them.

Partitions (domains), pools and code versions depend on the settings, and a config with sub-domains adds
the sub-domain assets and their jobs (``assets/hierarchy/``), so assets and jobs are built together.
Stage assets carry the new-stage automation condition (``automation.py``).
"""

from __future__ import annotations

import dagster as dg

from mergemix_dagster.assets import build_assets
from mergemix_dagster.assets.hierarchy import with_hierarchy
from mergemix_dagster.assets.partitions import build_partitions
from mergemix_dagster.assets.versions import with_settings_versions
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.defs.automation import with_stage_automation
from mergemix_dagster.defs.jobs import ALL_JOBS
from mergemix_dagster.resources.pools import pools_from


def definitions(settings: Settings) -> dg.Definitions:
    parts = build_partitions(settings)
    assets, jobs = with_hierarchy(build_assets(parts, pools_from(settings)), ALL_JOBS, parts, settings)
    return dg.Definitions(assets=with_stage_automation(with_settings_versions(assets, settings)), jobs=jobs)
