"""The validation study end to end on the smoke config: reference runs, fidelity, quality, checks, resume."""

from __future__ import annotations

import json
import math

import dagster as dg
import numpy as np
import pytest
import yaml

from mergemix_dagster.runner.stage import run_validation
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.layout import design_key


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


def test_mixture_quality_trains_every_arm_on_every_protocol_seed(validated):
    settings, _, instance = validated
    p = settings.validation.protocol
    quality = json.loads((settings.home_path / "validation" / "s0" / "quality.json").read_text())
    assert {(r["arm"], r["seed"]) for r in quality["runs"]} == {(a, s) for a in p.arms for s in p.seeds}
    assert set(p.arms) == {"uniform", "natural", "regmix", "best_single_domain", "chosen"} and len(p.seeds) >= 3
    caps = list(settings.capabilities)
    for r in quality["runs"]:  # every run: the declared metric, every capability, every held-out task, the hash
        assert r["protocol_hash"] == quality["protocol"]["hash"]
        assert r["metric"] == pytest.approx(np.mean([r[c] for c in caps]))  # macro-average, all maximized
        assert all(c in r for c in caps) and all(f"heldout:{t.name}" in r for t in settings.validation.heldout_tasks)
    assert max(quality["arms"]["best_single_domain"].values()) == 1.0
    assert quality["arms"]["natural"] == pytest.approx(quality["natural_prior"])
    # RegMix proper: its own swarm, trained, never the chosen mixture, none of the validation design
    design = CheckpointStore(root=settings.store_uri).get_json(design_key("s0"))
    swarm = quality["regmix"]
    assert len(swarm["runs"]) == p.regmix_runs
    chosen = quality["arms"]["chosen"]
    assert all(sum(abs(m[d] - chosen[d]) for d in chosen) >= 0.05 for m in swarm["mixtures"])
    runs = EvaluationDatabase(path=settings.database_path).training_runs("s0")
    assert set(swarm["runs"]) <= set(runs[runs["study"] == "regmix_swarm"]["run_id"])
    assert not set(swarm["runs"]) & set(runs[runs["study"].isin(["fidelity", "dual"])]["run_id"])
    assert all(m != d["alpha"] for m in swarm["mixtures"] for d in design["fidelity"] + design["dual"])
    # margins: chosen minus each arm on the declared metric, paired by seed, with the t-interval's verdict
    by = {(r["arm"], r["seed"]): r["metric"] for r in quality["runs"]}
    assert set(quality["margins"]) == set(p.arms) - {"chosen"}
    for arm, m in quality["margins"].items():
        assert m["per_seed"] == pytest.approx([by[("chosen", s)] - by[(arm, s)] for s in sorted(p.seeds)])
        assert m["low"] <= m["mean"] <= m["high"] and m["beats"] == (m["low"] > 0)
    assert quality["beats_every_arm"] == all(m["beats"] for m in quality["margins"].values())
    assert set(quality["heldout_vs_uniform"]) == {f"heldout:{t.name}" for t in settings.validation.heldout_tasks}
    assert {"heldout:mm_arith_words", "heldout:mm_prose"} <= set(quality["heldout_vs_uniform"])  # smoke: the defaults
    meta = _latest(instance, "mixture_quality", "s0").metadata
    assert meta["protocol_hash"].value == quality["protocol"]["hash"]
    assert quality["attempt"]["number"] == 1 and quality["attempt"]["judged_at"]


def test_report_header_carries_the_protocol_and_its_hash(validated):
    settings, _, instance = validated
    quality = json.loads((settings.home_path / "validation" / "s0" / "quality.json").read_text())
    report = (settings.home_path / "validation" / "s0" / "report.md").read_text()
    header = report.split("## Mixture quality")[0]
    assert f"Protocol hash: **`{quality['protocol']['hash']}`**" in header
    assert "metric: **macro_average**" in header and "seeds: 7001, 7002, 7003" in header
    assert "Cost of the search" in report and f"RegMix proper ({settings.validation.protocol.regmix_runs} swarm runs)" in report and "Task vectors" in report
    assert _latest(instance, "validation_report", "s0").metadata["protocol_hash"].value == quality["protocol"]["hash"]


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


def test_judging_the_same_runs_on_another_metric_is_refused_or_a_new_attempt(validated, pipeline_config, tmp_path):
    """Runs last in this module: it adds a second attempt to the stage's ledger."""
    from mergemix_dagster.cli.errors import named_error
    from mergemix_dagster.core.errors import ProtocolChangedError
    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.definitions import build_definitions

    settings, _, instance = validated
    db = EvaluationDatabase(path=settings.database_path)
    before = db.training_runs("s0")

    def validate_with(protocol: dict):
        raw = yaml.safe_load(pipeline_config.read_text())
        raw["validation"]["protocol"] = raw["validation"].get("protocol", {}) | protocol  # only the metric changes
        path = tmp_path / f"protocol-{len(protocol)}.yaml"
        path.write_text(yaml.safe_dump(raw))
        edited = load_settings(str(path))
        run_validation(build_definitions(edited, config=str(path)), edited, instance, "s0")
        return edited

    with pytest.raises(Exception) as refused:
        validate_with({"metric": "capability:math"})
    assert isinstance(named_error(refused.value), ProtocolChangedError)
    validate_with({"metric": "capability:math", "new_attempt": "math alone, decided after attempt 1"})
    quality = json.loads((settings.home_path / "validation" / "s0" / "quality.json").read_text())
    assert quality["attempt"]["number"] == 2 and quality["attempt"]["reason"].startswith("math alone")
    assert [a["number"] for a in quality["attempts"]] == [1, 2] and quality["attempts"][0]["judged_at"]
    assert all(r["metric"] == pytest.approx(r["math"]) for r in quality["runs"])
    report = (settings.home_path / "validation" / "s0" / "report.md").read_text()
    assert "Other attempts on this stage" in report and "attempt 1" in report
    after = db.training_runs("s0")
    kept = after[after["run_id"].isin(before["run_id"])]
    assert list(kept["finished_at"]) == list(before["finished_at"])  # the same runs, judged again, none retrained
    # only an arm the metric decides may add runs: the best single domain is the best expert on the metric
    assert set(after[~after["run_id"].isin(before["run_id"])]["study"]) <= {"quality:best_single_domain"}
