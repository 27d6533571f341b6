"""Declarative automation: a new stage is built as ONE native asset backfill, by Dagster's own daemon.

When a stage partition is added (``mergemix stage add``, ``stage_checkpoint_sensor``), every partition of
that stage is newly missing: ``stage_base[s]``, ``expert_checkpoint[*|s]``, ``merge_candidates[s]`` …
``chosen_mixture[s]``. ``NEW_STAGE_CONDITION`` requests each of them in the same tick, once what the stage
reads from outside (tokenizer, corpora) is there, and
``stage_automation_sensor`` (``emit_backfills=True``) hands that request to the daemon as one asset
backfill: the UI shows one backfill with per-asset, per-partition progress, ordered by the graph across
the three partitions definitions (stage, domain × stage, stage).

What stays hand-written (``runner/staleness.py``, ``latest_stage_sensor``, the ``reoptimize_*`` schedules): rerunning
*stale* partitions of the latest stage only. ``eager()``/``any_deps_updated()`` would also retrain every
older stage after a corpus edit, and no condition selects "the last dynamic partition".

Foundation, corpora and validation carry no condition: the foundation and corpora of a home are built
by ``mergemix run`` (or their jobs), and a validation study costs many full training runs, so it is
never launched automatically. The sensor is off by default; turn it on in the UI (Automation tab) and
leave ``latest_stage_sensor`` off, or both will launch the new stage (each skips what the other has in
flight, but a backfill that is requested and not yet started is not seen by the sensor).
"""

from __future__ import annotations

import dagster as dg

from mergemix_dagster.assets.groups import EXPERT_ASSETS, OPTIMIZE_ASSETS, STAGE_BASE_ASSETS

#: Assets that make up a stage, built by the automation when a stage partition appears.
STAGE_ASSETS = (*STAGE_BASE_ASSETS, *EXPERT_ASSETS, *OPTIMIZE_ASSETS)
AUTOMATION_SENSOR = "stage_automation_sensor"

#: Missing since the stage was added (not handled since), nothing missing upstream outside the stage, neither
#: it nor an upstream partition being run (e.g. ``stage_base_job`` from ``stage_checkpoint_sensor``, or
#: ``mergemix run``; the rest is requested once that run ends): requested once. Unlike ``on_missing()``, a missing
#: dependency *inside* the stage does not hold a partition back: ``will_be_requested`` does not cross
#: partitions definitions, so ``on_missing()`` would request the stage base, then the experts, then the
#: rest on three ticks; requested together, they form one backfill that the daemon runs in graph order.
NEW_STAGE_CONDITION = (
    dg.AutomationCondition.missing().newly_true().since_last_handled()
    & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.missing()).ignore(
        dg.AssetSelection.assets(*STAGE_ASSETS)
    )
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_in_progress()
).with_label("new stage partition")


def with_stage_automation(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """``assets`` with ``NEW_STAGE_CONDITION`` on the assets of a stage (others unchanged)."""

    def conditioned(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.key.to_user_string() not in STAGE_ASSETS:
            return spec
        return spec.replace_attributes(automation_condition=NEW_STAGE_CONDITION)

    return [a.map_asset_specs(conditioned) for a in assets]


def stage_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.assets(*STAGE_ASSETS),
        emit_backfills=True,
        minimum_interval_seconds=30,
        description="Builds each new stage as one asset backfill (stage base, experts, optimization).",
    )


def definitions() -> dg.Definitions:
    return dg.Definitions(sensors=[stage_automation_sensor()])
