"""Run a stage with a hierarchical search: the flat pipeline and the sub-domain assets, in the order the
direction needs (``plan.stage_steps``), running only partitions that are missing or stale.

- top-down: sub-domain corpora → the flat pipeline (coarse mixture over domain experts trained on the natural
  sub-domain mix) → sub-domain experts → the search inside each split domain → coarse × fine;
- bottom-up: sub-domain corpora → foundation and stage base → sub-domain experts → the search inside each
  split domain → the flat pipeline (a split domain's expert is the consolidated merge) → coarse × fine.
"""

from __future__ import annotations

from typing import Callable

import dagster as dg

from mergemix_dagster.core.settings import Settings
from mergemix_dagster.runner.plan import PlannedRun, stage_steps
from mergemix_dagster.runner.stage import execute, run_stage


def run_hierarchy(
    defs: dg.Definitions,
    settings: Settings,
    instance: dg.DagsterInstance,
    stage: str,
    on_step: Callable[[str, object, float], None] | None = None,
    log_level: str = "INFO",
    on_check_failed: Callable[[str], None] | None = None,
    max_layers: int = 8,
    on_plan: Callable[[PlannedRun], None] | None = None,
) -> dict[str, float]:
    """Materialize what a hierarchical ``stage`` is missing or has stale; returns seconds per job.
    ``max_layers`` bounds each sub-domain step (the flat steps keep ``run_stage``'s bound)."""
    return run_stage(defs, settings, instance, stage, on_step=on_step, log_level=log_level,
                     on_check_failed=on_check_failed, on_plan=on_plan,
                     steps=stage_steps(settings, hierarchical=True, subdomain_layers=max_layers))


def run_study(defs: dg.Definitions, instance: dg.DagsterInstance, stage: str, log_level: str = "INFO") -> None:
    """The trained ⟨MergeMix, MergeMix⟩ / ⟨MergeMix, uniform⟩ / ⟨uniform, uniform⟩ comparison of ``stage``."""
    execute(defs, instance, "hierarchy_study_job", stage, stage, log_level)
