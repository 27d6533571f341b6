"""The search stages on a real Dagster instance: DeMix rounds, the token bound, the chosen mixture's checks."""

from __future__ import annotations

import dagster as dg
import numpy as np

from mergemix_dagster.resources.artifacts import base_checkpoint, corpus_documents
from mergemix_dagster.steps.search_inputs import constraints_from
from mergemix_dagster.core.data.corpora import tokenize_documents
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase


def _latest(instance, key: str, partition: str):
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
    ).records[0].asset_materialization


def _round_rows(db: EvaluationDatabase):
    return db.query("SELECT candidate_id, task, metric, kind FROM evaluations WHERE stage = 's0' AND kind LIKE 'round%'")


def test_rounds_are_rows_tagged_with_their_round(smoke_run):
    settings, _, instance, _ = smoke_run
    rows = _round_rows(EvaluationDatabase(path=settings.database_path))
    assert not rows.empty and set(rows["kind"]) <= {"round1", "round2"}
    assert "round1" in set(rows["kind"])
    assert not rows.duplicated(["candidate_id", "task", "metric"]).any()
    per_round = rows.groupby("kind")["candidate_id"].nunique().to_dict()
    assert per_round["round1"] == settings.search.round_sizes[0]
    meta = _latest(instance, "search_rounds", "s0").metadata
    assert meta["rounds_run"].value >= 1
    assert meta["rounds"].value.records[0].data["round"] == 1


def test_an_interrupted_round_resumes_without_duplicates(smoke_run):
    settings, defs, instance, _ = smoke_run
    db = EvaluationDatabase(path=settings.database_path)
    before = _round_rows(db)
    lost = sorted(set(before[before["kind"] == "round1"]["candidate_id"]))[-1]
    with db.connect() as con:  # a kill after the other proposals of the round were written
        con.execute("DELETE FROM evaluations WHERE stage = 's0' AND candidate_id = ?", [lost])
    result = defs.resolve_job_def("optimize_job").execute_in_process(instance=instance, partition_key="s0")
    assert result.success
    assert _latest(instance, "search_rounds", "s0").metadata["candidates_scored_now"].value == 1
    after = _round_rows(db)
    assert len(after) == len(before) and not after.duplicated(["candidate_id", "task", "metric"]).any()
    assert sorted(after["candidate_id"]) == sorted(before["candidate_id"])


def test_token_bound_uses_the_real_corpus_token_counts(smoke_run, pipeline_config):
    from mergemix_dagster.definitions import build_definitions

    settings, defs, instance, _ = smoke_run
    store = CheckpointStore(root=settings.store_uri)
    design = store.get_json("stages/s0/candidates.json")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_checkpoint(store, "s0")[0]))
    counted = {d: len(tokenize_documents(corpus_documents(store, d)[0], tokenizer)) for d in settings.domain_names}
    assert design["available_tokens"] == counted
    # a target run 2x the largest corpus, 1 epoch: every domain is capped at N_d / T
    target = 2 * max(counted.values())
    capped = settings.model_copy(update={"target": settings.target.model_copy(update={"tokens": target,
                                                                                      "max_epochs": 1.0})})
    bounds = constraints_from(capped, counted)
    np.testing.assert_allclose(bounds.upper, [counted[d] / target for d in settings.domain_names])
    import yaml

    raw = yaml.safe_load(pipeline_config.read_text())
    raw["target"] = {"tokens": target, "max_epochs": 1.0}
    capped_config = pipeline_config.parent / "pipeline-capped.yaml"
    capped_config.write_text(yaml.safe_dump(raw))
    edited = build_definitions(capped, config=str(capped_config))
    result = edited.resolve_job_def("optimize_job").execute_in_process(
        instance=instance, partition_key="s0", asset_selection=[dg.AssetKey("chosen_mixture")]
    )
    assert result.success
    mixture = store.get_json("stages/s0/mixture.json")
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"mixture_not_degenerate", "capabilities_resolved"}
    assert checks["mixture_not_degenerate"].passed == (max(mixture["weights"].values()) < 0.9)
    reasons = [r["reason"] for r in mixture["resolution"].values()]
    assert checks["capabilities_resolved"].passed == (not all(r.endswith("no target is resolved") for r in reasons))
    for d, w in mixture["weights"].items():
        assert w * target <= counted[d] * 1.0 + 1e-6  # α_d · T ≤ E · N_d, exactly
    assert mixture["unconstrained_optimum"] is not None
    assert any("token availability" in r for r in mixture["constraint_reasons"].values())
    # back to the session's settings so later tests see a fresh stage
    assert defs.resolve_job_def("optimize_job").execute_in_process(
        instance=instance, partition_key="s0", asset_selection=[dg.AssetKey("chosen_mixture")]).success


def test_chosen_mixture_reports_intervals_and_degeneracy(smoke_run):
    settings, _, instance, _ = smoke_run
    store = CheckpointStore(root=settings.store_uri)
    mixture = store.get_json("stages/s0/mixture.json")
    for c, (lo, hi) in mixture["predicted_interval"].items():
        assert lo <= mixture["predicted"][c] + 1e-4 and mixture["predicted"][c] <= hi + 1e-4
    max_weight = max(mixture["weights"].values())
    assert (mixture["degenerate"] is None) == (max_weight < 0.9)
    meta = _latest(instance, "chosen_mixture", "s0").metadata
    assert meta["capabilities"].value.records and meta["mixture"].value.records


def test_stage_explorer_page_is_linked_and_rebuilt_from_the_store(smoke_run, pipeline_config, tmp_path):
    """chosen_mixture links the explorer page it wrote; `mergemix explore --stage` rebuilds the same data from
    the store and DuckDB (same surrogates, measured mixtures, bounds, markers)."""
    import json
    import re
    from pathlib import Path

    from mergemix_dagster.cli import main

    settings, _, instance, _ = smoke_run
    written = Path(str(_latest(instance, "chosen_mixture", "s0").metadata["explorer"].value))
    assert written.exists()
    rebuilt = tmp_path / "explorer.html"
    assert main(["explore", "--stage", "s0", "--config", str(pipeline_config), "-o", str(rebuilt)]) == 0

    def data(path):
        text = path.read_text()
        return json.loads(re.search(r'<script id="mm-data" type="application/json">(.*?)</script>', text,
                                    re.DOTALL).group(1))

    a, b = data(written), data(rebuilt)
    for key in ("domains", "capabilities", "lower", "upper", "quantile", "models", "measured", "markers", "references"):
        assert a[key] == b[key], key
    assert a["markers"][0]["name"] == "chosen" and len(a["measured"]["ids"]) >= len(settings.domain_names)


def test_capabilities_moved_less_than_their_noise_are_reported_not_optimized(smoke_run):
    settings, _, instance, _ = smoke_run
    db = EvaluationDatabase(path=settings.database_path)
    base = db.query("SELECT capability, stderr FROM evaluations WHERE stage = 's0' AND kind = 'base'")
    assert base["stderr"].notna().all() and (base["stderr"] > 0).all()  # lm-eval's stderr is kept with the base
    mixture = CheckpointStore(root=settings.store_uri).get_json("stages/s0/mixture.json")
    threshold = settings.search.objective.min_spread_in_noise
    resolution = mixture["resolution"]
    assert set(resolution) == set(settings.capabilities)
    for c, r in resolution.items():
        # the rule, recomputed from the stored figures (rounded to 4 digits in mixture.json)
        if abs(r["spread"] - threshold * r["noise"]) > 1e-3:
            assert r["optimized"] == (r["spread"] >= threshold * r["noise"]) or "no target is resolved" in r["reason"]
        assert (c in mixture["not_optimized"]) == (not r["optimized"])
    records = _latest(instance, "chosen_mixture", "s0").metadata["capabilities"].value.records
    assert {r.data["capability"]: r.data["optimized"] for r in records} == {c: r["optimized"] for c, r in resolution.items()}


def test_degenerate_mixture_is_flagged():
    from mergemix_dagster.core.search.choose import degenerate, effective_domains

    assert "sft holds 95%" in degenerate({"math": 0.05, "sft": 0.95})
    assert degenerate({"math": 0.3, "code": 0.3, "sft": 0.4}) is None
    assert effective_domains({"a": 1.0, "b": 0.0}) == 1.0
    assert abs(effective_domains({"a": 0.5, "b": 0.5}) - 2.0) < 1e-12
