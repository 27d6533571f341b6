"""Dagster's own machinery: sensor targets, schedule times, staleness on public APIs, declarative automation.

Fast: the definitions of the smoke config and tiny stand-in assets on an ephemeral instance; no training.
"""

from __future__ import annotations

import pytest

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.schedules import LAYER_OFFSET_MINUTES, staggered_cron
from mergemix_dagster.staleness import StageStatus, Status, next_runs


@pytest.fixture(scope="module")
def defs():
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.settings import load_settings

    return build_definitions(load_settings("smoke"), config="smoke")


def _plannable_jobs() -> set[str]:
    """Every job ``next_runs`` can plan: one stage status per layer with that layer missing."""
    fresh, missing = Status.FRESH, Status.MISSING
    layers = [
        StageStatus("s", {"general_corpus": missing}, {"math": fresh}, fresh, {"math": fresh}, {"x": fresh}),
        StageStatus("s", {"general_corpus": fresh}, {"math": missing}, fresh, {"math": fresh}, {"x": fresh}),
        StageStatus("s", {"general_corpus": fresh}, {"math": fresh}, missing, {"math": fresh}, {"x": fresh}),
        StageStatus("s", {"general_corpus": fresh}, {"math": fresh}, fresh, {"math": missing}, {"x": fresh}),
        StageStatus("s", {"general_corpus": fresh}, {"math": fresh}, fresh, {"math": fresh}, {"x": missing}),
    ]
    return {job for status in layers for job, _ in next_runs(status)}


def test_each_sensor_targets_exactly_the_jobs_it_requests(defs):
    targets = {s.name: {j.name for j in s.jobs} for s in defs.sensors if s.name != "stage_automation_sensor"}
    assert targets["stage_checkpoint_sensor"] == {"stage_base_job"}
    assert targets["corpus_change_sensor"] == {"corpora_job"}
    assert targets["latest_stage_sensor"] == _plannable_jobs()
    assert "validate_job" not in _plannable_jobs() and "report_job" not in _plannable_jobs()


def test_layer_schedules_fire_at_different_minutes_in_layer_order(defs):
    schedules = sorted(defs.schedules, key=lambda s: s.name)
    crons = {s.name: s.cron_schedule for s in schedules}
    assert len(set(crons.values())) == len(crons) == 4
    minutes = [int(crons[f"reoptimize_{layer}"].split()[0]) for layer in ("corpora", "stage_base", "experts", "optimize")]
    assert minutes == [0, 15, 30, 45]  # smoke config: stages.schedule "0 3 * * *"


def test_staggered_cron_carries_into_the_next_hour_and_keeps_steps():
    assert staggered_cron("0 3 * * *", 0) == "0 3 * * *"
    assert staggered_cron("50 23 * * 1", LAYER_OFFSET_MINUTES) == "5 0 * * 1"
    assert staggered_cron("*/30 * * * *", 15) == "15-59/30 * * * *"
    with pytest.raises(ConfigError, match="minute as a number"):
        staggered_cron("0,30 3 * * *", 15)
    with pytest.raises(ConfigError, match="5 cron fields"):
        staggered_cron("@daily", 15)
