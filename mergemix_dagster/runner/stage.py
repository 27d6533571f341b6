"""Run a whole stage through the jobs in plan order, in this process, recorded in a Dagster instance.

This is what ``mergemix run`` (and so ``make run``) does; the Dagster UI shows the same runs afterwards.
Each job is one run per partition, because Dagster runs cannot mix partitions definitions. The native
alternative, one asset backfill per new stage, needs the daemon (``defs/automation.py``); Dagster has no
public call that submits a backfill, and a backfill only progresses inside the daemon, so a command that
must work without one chains the jobs itself (docs/architecture.md, "what is native and what is not").

What to run is decided in ``plan.py`` only; this module holds the home's lock, marks runs of killed
``mergemix`` processes failed (``instance.py``), and executes plans until none is left.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import dagster as dg

from mergemix_dagster.core.settings import Settings
from mergemix_dagster.runner.instance import (
    OWNER_TAG,
    STAGE_TAG,
    check_known_stage,
    dagster_instance,
    fail_abandoned_runs,
    home_lock,
    owner_tag,
    register_stage,
)
from mergemix_dagster.runner.plan import PlanContext, PlannedRun, PlanState, Step, corpus_changes, plan, stage_steps

# the CLI and the sensors import these from here
__all__ = [
    "OWNER_TAG", "STAGE_TAG", "check_known_stage", "corpus_changes", "dagster_instance", "execute", "fail_abandoned_runs", "home_lock",
    "owner_tag", "register_stage", "run_report", "run_stage", "run_validation",
]


def execute(defs: dg.Definitions, instance: dg.DagsterInstance, job_name: str, partition, stage: str,
            log_level: str) -> dg.ExecuteInProcessResult:
    """One run of ``job_name`` in this process, tagged with its stage and owner; raises when it fails."""
    return defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        partition_key=partition,
        raise_on_error=True,
        tags={STAGE_TAG: stage, OWNER_TAG: owner_tag()},
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )


def run_stage(
    defs: dg.Definitions,
    settings: Settings,
    instance: dg.DagsterInstance,
    stage: str,
    on_step: Callable[[str, object, float], None] | None = None,
    max_layers: int = 12,
    log_level: str = "INFO",
    on_check_failed: Callable[[str], None] | None = None,
    steps: tuple[Step, ...] | None = None,
    on_plan: Callable[[PlannedRun], None] | None = None,
) -> dict[str, float]:
    """Materialize whatever ``stage`` is missing or stale, layer by layer; returns seconds per job.

    ``steps`` defaults to the flat stage (``plan.stage_steps``); ``run_hierarchy`` passes the hierarchical
    order. ``on_plan`` receives each planned run, with its reason, before it runs. ``on_check_failed``
    receives one line per failed asset check (e.g. a surrogate that cannot rank held-out candidates), so a
    run that exits 0 still says what its result should not be trusted for.

    Fresh partitions are skipped, so a rerun after an interruption picks up where it stopped and a
    second stage reuses the corpora and tokenizer of the first. Raises on the first failed run.
    """
    timings: dict[str, float] = {}
    check_known_stage(settings, stage)  # before the lock and before anything is registered
    with home_lock(settings):
        fail_abandoned_runs(instance)
        register_stage(instance, stage)
        state = PlanState(PlanContext(defs, settings, instance, stage), steps or stage_steps(settings, max_layers=max_layers))
        while layer := plan(state):
            for run in layer:
                logging.getLogger(__name__).info(f"planned {run}")
                if on_plan:
                    on_plan(run)
                start = time.perf_counter()
                result = execute(defs, instance, run.job, run.partition, stage, log_level)
                for check in result.get_asset_check_evaluations():
                    if not check.passed and on_check_failed:
                        on_check_failed(
                            f"check {check.check_name} of {check.asset_key.to_user_string()}[{run.partition}] failed: "
                            f"{getattr(check, 'description', None) or 'see the Dagster UI'}"
                        )
                elapsed = time.perf_counter() - start
                timings[run.job] = timings.get(run.job, 0.0) + elapsed
                if on_step:
                    on_step(run.job, run.partition, elapsed)
    return timings


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
    with home_lock(settings):
        run_stage(defs, settings, instance, stage, log_level=log_level)
        start = time.perf_counter()
        execute(defs, instance, "validate_job", stage, stage, log_level)
        return time.perf_counter() - start


def run_report(defs: dg.Definitions, instance: dg.DagsterInstance, log_level: str = "WARNING") -> None:
    """The cross-stage comparison (``report_job``); it belongs to no stage, so its run has no stage tag."""
    defs.resolve_job_def("report_job").execute_in_process(
        instance=instance,
        raise_on_error=True,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
