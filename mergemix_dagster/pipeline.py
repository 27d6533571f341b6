"""Run a whole stage through the jobs in dependency order, in this process, recorded in a Dagster instance.

This is what ``mergemix run`` (and so ``make run``) does; the Dagster UI shows the same runs afterwards.
Each job is one run per partition, because Dagster runs cannot mix partitions definitions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import dagster as dg

from .partitions import STAGE_PARTITIONS_NAME, expert_partition_key
from .settings import Settings


def dagster_instance(settings: Settings) -> dg.DagsterInstance:
    """The instance under ``$DAGSTER_HOME``, or ``<home>/dagster`` when it is unset."""
    home = os.environ.get("DAGSTER_HOME") or str(settings.home_path / "dagster")
    Path(home).mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = home
    return dg.DagsterInstance.get()


def register_stage(instance: dg.DagsterInstance, stage: str) -> bool:
    """Add a stage partition; returns False when it was already there."""
    if instance.has_dynamic_partition(STAGE_PARTITIONS_NAME, stage):
        return False
    instance.add_dynamic_partitions(STAGE_PARTITIONS_NAME, [stage])
    return True


def stage_plan(settings: Settings, stage: str, include_foundation: bool = True) -> list[tuple[str, object]]:
    """(job name, partition key) pairs that materialize everything a stage needs, in order."""
    plan: list[tuple[str, object]] = []
    if include_foundation:
        plan.append(("foundation_job", None))
        plan += [("corpora_job", d) for d in settings.domain_names]
    plan.append(("stage_base_job", stage))
    plan += [("experts_job", expert_partition_key(d, stage)) for d in settings.domain_names]
    plan.append(("optimize_job", stage))
    return plan


def run_stage(
    defs: dg.Definitions,
    settings: Settings,
    instance: dg.DagsterInstance,
    stage: str,
    on_step: Callable[[str, object, float], None] | None = None,
) -> dict[str, float]:
    """Materialize every asset of ``stage``; returns seconds per job. Raises on the first failed run."""
    import time

    register_stage(instance, stage)
    timings: dict[str, float] = {}
    for job_name, partition in stage_plan(settings, stage):
        start = time.perf_counter()
        job = defs.resolve_job_def(job_name)
        result = job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=True)
        if not result.success:  # pragma: no cover - raise_on_error raises first
            raise RuntimeError(f"{job_name} [{partition}] failed")
        elapsed = time.perf_counter() - start
        timings[job_name] = timings.get(job_name, 0.0) + elapsed
        if on_step:
            on_step(job_name, partition, elapsed)
    return timings
