"""Periodic re-optimization: bring the latest stage up to date, rerunning only missing or stale partitions.

A Dagster schedule launches runs of one job, and each layer of a stage is its own job (runs cannot mix
partitions definitions). So there is one schedule per layer; each requests its layer's missing/stale
partitions of the latest stage only when every layer before it is fresh. The layers fire
``LAYER_OFFSET_MINUTES`` apart after ``stages.schedule`` (not all at the same minute, where every layer
but the first would always find an earlier layer still running and skip): with short layers one night's
ticks carry a stage through; ``latest_stage_sensor`` chains the layers as soon as runs finish.
Each tick reads the asset graph from its context's ``repository_def``; only the cron comes from the settings.
"""

from __future__ import annotations

import dagster as dg

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.defs.sensors import STAGE_LAYER_JOBS, stage_run_requests
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.runner.staleness import latest_stage

#: Every job ``stage_run_requests`` can plan, foundation included: a layer without its schedule would leave
#: a fresh instance waiting on it forever. Five layers fit in an hour at 12 minutes apart.
LAYER_JOBS = STAGE_LAYER_JOBS
LAYER_OFFSET_MINUTES = 12


def staggered_cron(cron: str, minutes: int) -> str:
    """``cron`` moved ``minutes`` later (0 <= minutes < 60). The minute field must be a number (hour carried
    when the hour field is one too) or ``*/N`` with ``minutes < N``; anything else is refused, not guessed."""
    fields = cron.split()
    if len(fields) != 5:
        raise ConfigError(f"stages.schedule {cron!r}: expected 5 cron fields (minute hour day month weekday)")
    minute, hour = fields[0], fields[1]
    if minute.isdigit():
        total = int(minute) + minutes
        if total >= 60 and hour.isdigit():
            hour = str((int(hour) + total // 60) % 24)
        fields[0], fields[1] = str(total % 60), hour
    elif minute.startswith("*/") and minute[2:].isdigit() and minutes < int(minute[2:]):
        fields[0] = f"{minutes}-59/{minute[2:]}" if minutes else minute
    else:
        raise ConfigError(
            f"stages.schedule {cron!r}: give the minute as a number or */N so the layer schedules can be "
            f"staggered by {minutes} minutes"
        )
    return " ".join(fields)


def _layer_schedule(job, cron: str) -> dg.ScheduleDefinition:
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
        requests, why = stage_run_requests(context.instance, context.repository_def, settings.get(), stage, "schedule")
        mine = [r for r in requests if r.job_name == job.name]
        if not mine:
            return dg.SkipReason(why or f"{layer} of stage {stage!r} waits for an earlier layer or is fresh")
        return mine

    return _schedule


def build_schedules(settings: Settings) -> list[dg.ScheduleDefinition]:
    """One schedule per layer, ``LAYER_OFFSET_MINUTES`` apart after ``stages.schedule``."""
    return [
        _layer_schedule(job, staggered_cron(settings.stages.schedule, i * LAYER_OFFSET_MINUTES))
        for i, job in enumerate(LAYER_JOBS)
    ]


def definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(schedules=build_schedules(settings))
