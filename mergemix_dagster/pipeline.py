"""Run a whole stage through the jobs in dependency order, in this process, recorded in a Dagster instance.

This is what ``mergemix run`` (and so ``make run``) does; the Dagster UI shows the same runs afterwards.
Each job is one run per partition, because Dagster runs cannot mix partitions definitions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import dagster as dg

from .partitions import STAGE_PARTITIONS_NAME
from .settings import Settings
from .staleness import next_runs, stage_status

STAGE_TAG = "mergemix/stage"


def dagster_instance(settings: Settings) -> dg.DagsterInstance:
    """The instance under ``$DAGSTER_HOME``, or ``<home>/dagster`` when it is unset."""
    home = os.environ.get("DAGSTER_HOME") or str(settings.home_path / "dagster")
    Path(home).mkdir(parents=True, exist_ok=True)
    config = Path(home) / "dagster.yaml"
    if not config.exists():  # nothing here may phone home
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = home
    return dg.DagsterInstance.get()


def register_stage(instance: dg.DagsterInstance, stage: str) -> bool:
    """Add a stage partition; returns False when it was already there."""
    if instance.has_dynamic_partition(STAGE_PARTITIONS_NAME, stage):
        return False
    instance.add_dynamic_partitions(STAGE_PARTITIONS_NAME, [stage])
    return True


def run_stage(
    defs: dg.Definitions,
    settings: Settings,
    instance: dg.DagsterInstance,
    stage: str,
    on_step: Callable[[str, object, float], None] | None = None,
    max_layers: int = 12,
    log_level: str = "INFO",
) -> dict[str, float]:
    """Materialize whatever ``stage`` is missing or stale, layer by layer; returns seconds per job.

    Fresh partitions are skipped, so a rerun after an interruption picks up where it stopped and a
    second stage reuses the corpora and tokenizer of the first. Raises on the first failed run.
    """
    import time

    register_stage(instance, stage)
    timings: dict[str, float] = {}
    for _ in range(max_layers):
        plan = next_runs(stage_status(instance, defs, settings.domain_names, stage))
        if not plan:
            return timings
        for job_name, partition in plan:
            start = time.perf_counter()
            job = defs.resolve_job_def(job_name)
            job.execute_in_process(
                instance=instance,
                partition_key=partition,
                raise_on_error=True,
                tags={STAGE_TAG: stage},
                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            )
            elapsed = time.perf_counter() - start
            timings[job_name] = timings.get(job_name, 0.0) + elapsed
            if on_step:
                on_step(job_name, partition, elapsed)
    raise RuntimeError(f"stage {stage!r} still not fresh after {max_layers} layers: {stage_status(instance, defs, settings.domain_names, stage).not_fresh()}")


def run_validation(
    defs: dg.Definitions,
    settings: Settings,
    instance: dg.DagsterInstance,
    stage: str,
    log_level: str = "WARNING",
) -> float:
    """Bring ``stage`` up to date (``run_stage``), then run its validation study; returns seconds.

    Finished reference runs and scored proxies are kept in the store and DuckDB, so a rerun after an
    interruption trains only what is missing and a finished study costs a few seconds.
    """
    import time

    run_stage(defs, settings, instance, stage, log_level=log_level)
    start = time.perf_counter()
    defs.resolve_job_def("validate_job").execute_in_process(
        instance=instance,
        partition_key=stage,
        raise_on_error=True,
        tags={STAGE_TAG: stage},
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
    return time.perf_counter() - start


def run_report(defs: dg.Definitions, instance: dg.DagsterInstance, log_level: str = "WARNING") -> None:
    defs.resolve_job_def("report_job").execute_in_process(
        instance=instance,
        raise_on_error=True,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
