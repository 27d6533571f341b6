"""The validation study end to end on the smoke config: reference runs, fidelity, quality, checks, resume."""

from __future__ import annotations

import json
import math

import dagster as dg
import numpy as np
import pytest

from mergemix_dagster.runner.stage import run_validation
from mergemix_dagster.resources import EvaluationDatabase


def _latest(instance, key: str, partition: str):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
    ).records
    return records[0].asset_materialization


@pytest.fixture(scope="module")
def validated(smoke_run):
    settings, defs, instance, _ = smoke_run
    run_validation(defs, settings, instance, "s0")
    return settings, defs, instance


def test_reference_runs_and_proxies_are_stored_next_to_each_other(validated):
    settings, _, _ = validated
    v = settings.validation
    db = EvaluationDatabase(path=settings.database_path)
    n_tasks = len(settings.evaluation.tasks) + len(v.heldout_tasks)
    proxies = db.query("SELECT DISTINCT model_fingerprint FROM evaluations WHERE kind = 'validation_proxy'")
    assert len(proxies) == v.n_mixtures + len(v.dual_alphas)
    refs = db.query("SELECT candidate_id, count(*) AS n FROM evaluations WHERE kind = 'validation_trained' GROUP BY 1")
    assert (refs["n"] == n_tasks).all()  # every reference run scored on search + held-out tasks
    runs = db.training_runs("s0")
    fidelity_runs = runs[runs["study"] == "fidelity"]
    assert len(fidelity_runs) == v.n_mixtures
    assert (fidelity_runs["tokens"] >= settings.experts.tokens).all()  # the expert budget, not less
    assert set(runs["study"]) >= {"fidelity", "dual", "expert"}


def test_fidelity_figures_and_rank_check_are_reported(validated):
    settings, _, instance = validated
    meta = _latest(instance, "proxy_fidelity", "s0").metadata
    rho = meta["overall_spearman"].value
    assert -1.0 <= rho <= 1.0 or math.isnan(rho)
    fidelity = json.loads((settings.home_path / "validation" / "s0" / "fidelity.json").read_text())
    assert len(fidelity["mixtures"]) == settings.validation.n_mixtures
    assert fidelity["mixtures"][0]["tag"] == "chosen"
    assert (settings.home_path / "validation" / "s0" / "rank_fidelity.png").stat().st_size > 0
    assert (settings.home_path / "validation" / "s0" / "dual_capability.png").stat().st_size > 0
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("proxy_fidelity"), "rank_fidelity_above_threshold")]
    )
    evaluation = next(iter(check.values())).event.dagster_event.event_specific_data
    # the check says exactly what the asset measured against the configured threshold
    assert evaluation.passed == (rho >= settings.validation.min_spearman)
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR  # below the threshold the ranking is not trusted


def test_mixture_quality_trains_every_arm_on_every_seed(validated):
    settings, _, instance = validated
    quality = json.loads((settings.home_path / "validation" / "s0" / "quality.json").read_text())
    arms = {(r["arm"], r["seed"]) for r in quality["runs"]}
    assert arms == {(a, s) for a in ("uniform", "regmix", "best_single_domain", "chosen") for s in (0, 1)}
    assert all("heldout:mm_arith_words" in r for r in quality["runs"])
    # the best single-domain arm is a vertex; every arm is compared with the chosen one on the objective, per seed
    assert max(quality["arms"]["best_single_domain"].values()) == 1.0
    margins = _latest(instance, "mixture_quality", "s0").metadata["chosen_minus"].value
    assert set(margins) == {"uniform", "regmix", "best_single_domain"}
    by = {(r["arm"], r["seed"]): r["objective"] for r in quality["runs"]}
    for arm, m in margins.items():
        assert m["per_seed"] == pytest.approx([by[("chosen", s)] - by[(arm, s)] for s in (0, 1)], abs=1e-4)  # shown to 4 digits
    assert quality["chosen_beats_every_baseline"] == all(m["mean"] > quality["seed_noise"] for m in margins.values())
    for m in margins.values():  # paired noise: the spread of the per-seed margins (the arms share seeds)
        assert m["paired_noise"] == pytest.approx(float(np.std(m["per_seed"], ddof=1)), abs=2e-4)
    assert quality["chosen_beats_every_baseline_paired"] == all(m["mean"] > m["paired_noise"] for m in margins.values())
    report = (settings.home_path / "validation" / "s0" / "report.md").read_text()
    assert "Cost of the search" in report and "Task vectors" in report


def test_surrogate_cv_check_runs_with_the_optimize_job(validated):
    _, _, instance = validated
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("capability_surrogates"), "surrogate_cv_quality")]
    )
    record = next(iter(checks.values()))
    assert record.event.dagster_event.event_specific_data.severity == dg.AssetCheckSeverity.WARN


def test_second_validation_trains_nothing(validated):
    settings, defs, instance = validated
    db = EvaluationDatabase(path=settings.database_path)
    before = db.training_runs("s0")
    rows_before = len(db.evaluations("s0"))
    run_validation(defs, settings, instance, "s0")
    assert _latest(instance, "reference_models", "s0").metadata["trained_or_scored_now"].value == 0
    assert _latest(instance, "validation_proxies", "s0").metadata["scored_now"].value == 0
    after = db.training_runs("s0")
    assert list(after["finished_at"]) == list(before["finished_at"])  # nothing retrained or overwritten
    assert len(db.evaluations("s0")) == rows_before
