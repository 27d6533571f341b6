"""Which capabilities the mixture resolves (paired permutation test on per-item scores) and how the unresolved
ones are protected (score floor at base − 2 paired SE, their domains at natural shares); no pipeline runs:
a seed design's evaluation rows are written to a real store and DuckDB file with known truth."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from mergemix_dagster.core.errors import UnresolvedProtectionError
from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
from mergemix_dagster.core.evaluation.harness import BenchmarkScore, default_tasks_dir, task_file_contents, task_yaml_paths
from mergemix_dagster.core.search.objective import resolve_targets
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.artifacts import configured_rows
from mergemix_dagster.steps.proxy_scoring import finished_fingerprints, score_rows
from mergemix_dagster.steps.search_inputs import (
    base_noise,
    constraints_from,
    stage_search_inputs,
    target_resolution,
)

STAGE = "s0"
DOMAINS = {"math": "math", "code": "code", "web": "language", "sft": "knowledge"}
TOKENS = {"math": 3000, "code": 2000, "web": 4000, "sft": 1000}  # natural shares 0.3 / 0.2 / 0.4 / 0.1
N_SEED = 41
N_ITEMS = 250


def _settings(tmp_path, **search) -> Settings:
    return Settings(home=str(tmp_path), domains=[{"name": d, "capability": c} for d, c in DOMAINS.items()],
                    search=search)


def _capability_items(rng, X: np.ndarray) -> dict[str, np.ndarray]:
    """(mixtures × items) per capability; the last row is the base (α = 0). Item difficulty is shared."""
    m = X.shape[0]
    out = {}
    # math, knowledge: large effects of their domain's weight
    for cap, d in (("math", 0), ("knowledge", 3)):
        out[cap] = rng.normal(0.4, 0.2, N_ITEMS)[None, :] + 0.2 * X[:, [d]] + rng.normal(0, 0.03, (m, N_ITEMS))
    # code: a small real effect (0.02 over the design) under large item variance — the unpaired rule misses it
    out["code"] = rng.normal(0.5, 0.3, N_ITEMS)[None, :] + 0.02 * X[:, [1]] + rng.normal(0, 0.03, (m, N_ITEMS))
    # language: pure noise — every mixture's items are drawn from the same distribution around the same items
    out["language"] = rng.normal(0.5, 0.3, N_ITEMS)[None, :] + rng.normal(0, 0.03, (m, N_ITEMS))
    return out


@pytest.fixture()
def seeded(tmp_path):
    """A stage with a 41-mixture seed design and the base scored on the four default benchmarks, with items."""
    s = _settings(tmp_path)
    rng = np.random.default_rng(7)
    X = np.vstack([np.eye(4), rng.dirichlet(np.ones(4), N_SEED - 4), np.zeros((1, 4))])
    items = _capability_items(rng, X)
    store, db = CheckpointStore(root=s.store_uri), EvaluationDatabase(path=s.database_path)
    ids = [f"c{i:03d}" for i in range(N_SEED)]
    store.put_json(layout.candidates_key(STAGE), {"candidates": [
        {"candidate_id": cid, "fingerprint": f"fp-{cid}", "alpha": dict(zip(DOMAINS, X[i]))}
        for i, cid in enumerate(ids)], "available_tokens": TOKENS}, overwrite=True)
    fps = evaluation_fingerprints(s)
    for i, cid in enumerate(ids + ["base"]):
        scores = []
        for t in s.evaluation.tasks:
            v = items[t.capability][i]
            scores.append(BenchmarkScore(t.name, t.metric, float(v.mean()), t.capability,
                                         float(v.std(ddof=1) / math.sqrt(v.size)), tuple(v)))
        rows = score_rows(STAGE, cid, "base" if cid == "base" else "seed", dict(zip(DOMAINS, X[i])), scores,
                          "base-fp" if cid == "base" else f"fp-{cid}")
        rows["evaluation_fingerprint"] = [fps[t] for t in rows["task"]]
        db.upsert_evaluations(rows)
    return s, store, db, items


def _drop_items(db: EvaluationDatabase, task: str | None = None) -> None:
    with db.connect() as con:
        con.execute("UPDATE evaluations SET item_values = NULL" + (" WHERE task = ?" if task else ""),
                    [task] if task else [])


def test_score_rows_store_each_scores_items():
    scores = [BenchmarkScore("mm_math", "gold_prob", 0.5, "math", 0.1, (0.25, 0.75)),
              BenchmarkScore("mm_ppl", "perplexity", 9.0, "language", None, None)]
    rows = score_rows("s0", "c0", "seed", {"math": 1.0}, scores, "fp")
    assert rows["item_values"].tolist() == [(0.25, 0.75), None]


def test_paired_rule_resolves_a_small_real_effect_the_old_rule_misses(seeded):
    s, store, db, items = seeded
    res = target_resolution(s, store, db, STAGE)
    code = res["code"]
    assert code.resolved and code.p_value < 0.01 and code.paired_se == code.noise
    assert "paired noise" in code.reason and "p = " in code.reason
    # the old rule: spread of the 42 means against the base's unpaired stderr × 2.77 calls it noise
    means = {c: items[c].mean(axis=1) for c in items}
    old = resolve_targets(means, base_noise(s, db, STAGE), 2.77)
    assert not old["code"].resolved
    assert code.paired_se < old["code"].noise / 5  # item difficulty cancels in a difference
    assert res["math"].resolved and res["knowledge"].resolved


def test_pure_noise_is_unresolved_then_protected(seeded):
    s, store, db, items = seeded
    inputs = stage_search_inputs(s, store, db, STAGE, TOKENS)
    lang = inputs.resolution["language"]
    assert not lang.resolved and lang.p_value >= 0.01 and "within noise" in lang.reason
    assert "language" in inputs.objective.excluded and "code" not in inputs.objective.excluded
    base = float(items["language"][-1].mean())
    assert inputs.objective.floors["language"] == pytest.approx(base - 2 * lang.paired_se)
    assert set(inputs.objective.floors) == {"language"}  # only the unresolved capability gets a floor
    share = dict(zip(inputs.constraints.domains, inputs.constraints.lower))
    assert share == pytest.approx({"math": 0.0, "code": 0.0, "web": 0.4, "sft": 0.0})  # web's natural share
    assert "language" in inputs.constraints.reasons["web"]
    assert set(inputs.protections) == {"language"}
    assert "web ≥ 0.4" in inputs.protections["language"] and "base" in inputs.protections["language"]
    # the plain callers' pair (stage_objective + constraints_from with the resolution) gives the same bounds
    assert constraints_from(s, TOKENS, inputs.resolution).lower == inputs.constraints.lower
    assert constraints_from(s, TOKENS).lower == (0.0,) * 4  # without the resolution: the settings' bounds only


def test_protection_combines_with_min_weight_and_can_be_turned_off(seeded, tmp_path):
    s, store, db, _ = seeded
    higher = _settings(tmp_path, min_weight={"web": 0.5, "math": 0.1})
    lower = dict(zip(DOMAINS, stage_search_inputs(higher, store, db, STAGE, TOKENS).constraints.lower))
    assert lower == pytest.approx({"math": 0.1, "code": 0.0, "web": 0.5, "sft": 0.0})
    capped = _settings(tmp_path, max_weight={"web": 0.3})
    assert dict(zip(DOMAINS, stage_search_inputs(capped, store, db, STAGE, TOKENS).constraints.lower))["web"] == 0.3
    off = _settings(tmp_path, objective={"protect_unresolved": False})
    inputs = stage_search_inputs(off, store, db, STAGE, TOKENS)
    assert inputs.constraints.lower == (0.0,) * 4 and "language" not in inputs.objective.floors
    assert "not protected" in inputs.protections["language"]


def test_infeasible_protection_is_a_named_error(seeded, tmp_path):
    s, store, db, _ = seeded
    pinned = _settings(tmp_path, pinned={"math": 0.7})  # 0.7 + web's natural 0.4 > 1
    with pytest.raises(UnresolvedProtectionError, match=r"(?s)web.*pinned.*protect_unresolved"):
        stage_search_inputs(pinned, store, db, STAGE, TOKENS)


def test_rows_without_items_fall_back_to_the_unpaired_rule(seeded):
    s, store, db, _ = seeded
    _drop_items(db, next(t.name for t in s.evaluation.tasks if t.capability == "code"))
    res = target_resolution(s, store, db, STAGE)
    assert res["code"].reason.startswith("no per-item scores: unpaired rule")
    assert res["code"].p_value is None and not res["code"].resolved  # the old rule misses it
    assert res["math"].p_value is not None  # the others stay paired
    _drop_items(db)
    res = target_resolution(s, store, db, STAGE)
    assert all(r.reason.startswith("no per-item scores: unpaired rule") for r in res.values())
    # the fallback's SE for the floor is √2 × the unpaired stderr of the base
    inputs = stage_search_inputs(s, store, db, STAGE, TOKENS)
    for c in inputs.objective.excluded:
        assert "√2 × stderr" in inputs.protections[c]


def _fingerprint_before_items(s: Settings) -> dict[str, str]:
    """``evaluation_fingerprints`` as it was before rows kept their items (no row format in the hash)."""
    index = task_yaml_paths(default_tasks_dir())
    out = {}
    for t in s.evaluation.tasks:
        h = hashlib.sha256(repr((t.name, t.metric, s.evaluation.limit)).encode())
        for blob in task_file_contents(index[t.name]):
            h.update(blob)
        out[t.name] = h.hexdigest()[:16]
    return out


def test_rows_stored_before_items_are_stale_and_rescored(seeded):
    from mergemix_dagster.runner.plan import stale_evaluation_rows

    s, store, db, _ = seeded
    old = _fingerprint_before_items(s)
    assert all(old[t] != fp for t, fp in evaluation_fingerprints(s).items())
    assert stale_evaluation_rows(s, STAGE) == 0 and len(finished_fingerprints(db, STAGE, s)) == N_SEED + 1
    with db.connect() as con:
        for t, fp in old.items():
            con.execute("UPDATE evaluations SET evaluation_fingerprint = ?, item_values = NULL WHERE task = ?", [fp, t])
    assert stale_evaluation_rows(s, STAGE) == (N_SEED + 1) * len(s.evaluation.tasks)
    assert configured_rows(db.evaluations(STAGE), s).empty and finished_fingerprints(db, STAGE, s) == {}


def test_resolution_p_level_is_a_documented_setting():
    from mergemix_dagster.core.settings.search import ObjectiveSettings

    fields = ObjectiveSettings.model_fields
    assert fields["max_resolution_p"].default == 0.01 and fields["protect_unresolved"].default is True
    assert "FALLBACK ONLY" in fields["min_spread_in_noise"].description
