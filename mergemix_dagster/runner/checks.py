"""The asset checks of a stage as the instance recorded them: what ``mergemix run`` and the report print.

A rerun skips fresh partitions, so the latest evaluation of each check over all runs of the stage (tagged
``mergemix/stage``) is the stage's current state, whichever run produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from mergemix_dagster.runner.instance import STAGE_TAG


@dataclass(frozen=True)
class CheckResult:
    asset: str
    check: str
    passed: bool
    severity: str  # WARN or ERROR
    description: str
    run_id: str


def latest_check_results(instance: dg.DagsterInstance, stage: str, limit_runs: int = 200) -> list[CheckResult]:
    """The latest evaluation of every asset check in the runs of ``stage``, sorted by asset and check."""
    latest: dict[tuple[str, str], tuple[float, CheckResult]] = {}
    for record in instance.get_run_records(filters=dg.RunsFilter(tags={STAGE_TAG: stage}), limit=limit_runs):
        run_id = record.dagster_run.run_id
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            data = entry.dagster_event.event_specific_data
            key = (data.asset_key.to_user_string(), data.check_name)
            result = CheckResult(
                asset=key[0], check=key[1], passed=bool(data.passed), severity=data.severity.value,
                description=data.description or "", run_id=run_id,
            )
            if key not in latest or entry.timestamp > latest[key][0]:
                latest[key] = (entry.timestamp, result)
    return [latest[k][1] for k in sorted(latest)]


__all__ = ["CheckResult", "latest_check_results"]
