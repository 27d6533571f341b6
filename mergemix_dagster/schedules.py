"""Periodic re-optimization: bring the latest stage up to date, rerunning only missing or stale partitions.

A Dagster schedule launches runs of one job, and each layer of a stage is its own job (runs cannot mix
partitions definitions). So there is one schedule per layer, all on the same cron; each requests its
layer's missing/stale partitions of the latest stage only when every layer before it is fresh. On a tick
the earliest stale layer runs; ``latest_stage_sensor`` chains the following layers as runs finish.
"""

from __future__ import annotations

import dagster as dg

from .jobs import corpora_job, experts_job, optimize_job, stage_base_job
from .resources.settings import PipelineSettings
from .sensors import stage_run_requests
from .settings import Settings
from .staleness import latest_stage

LAYER_JOBS = (corpora_job, stage_base_job, experts_job, optimize_job)


def _layer_schedule(job, defs_ref: list, cron: str) -> dg.ScheduleDefinition:
    layer = job.name.removesuffix("_job")

    @dg.schedule(
        name=f"reoptimize_{layer}",
        cron_schedule=cron,
        job=job,
        description=f"Re-optimization of the latest stage: {layer} partitions that are missing or stale.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext, settings: PipelineSettings):
        stage = latest_stage(context.instance)
        if stage is None:
            return dg.SkipReason("no stage registered yet")
        requests, why = stage_run_requests(context.instance, defs_ref[0], settings.get(), stage, "schedule")
        mine = [r for r in requests if r.job_name == job.name]
        if not mine:
            return dg.SkipReason(why or f"{layer} of stage {stage!r} waits for an earlier layer or is fresh")
        return mine

    return _schedule


def build_schedules(defs_ref: list, settings: Settings) -> list[dg.ScheduleDefinition]:
    return [_layer_schedule(job, defs_ref, settings.stages.schedule) for job in LAYER_JOBS]
