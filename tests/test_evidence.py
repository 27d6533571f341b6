"""Which earlier evaluations stay evidence when a stage's domains change (steps/evidence.py), without Dagster runs."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.designs import seed_design
from mergemix_dagster.resources.layout import candidate_fingerprint, face_fingerprint
from mergemix_dagster.steps.evidence import (
    Evidence,
    copy_reused_rows,
    earlier_evidence,
    stage_design,
)

OLD = ("a", "b", "c")
RECIPE = {"base": "B", "method": "linear", "experts": {"a": "A1", "b": "B1", "c": "C1"}}


def _settings(domains):
    return SimpleNamespace(domain_names=tuple(domains), search=SimpleNamespace(n_candidates=6, seed=0))


def _previous():
    """A finished 3-domain stage: its stored design and every point's evidence."""
    prior = Mixture.from_dict({"a": 0.2, "b": 0.3, "c": 0.5}, OLD)
    candidates, _ = stage_design(_settings(OLD), RECIPE, None, [], prior, set())
    design = RECIPE | {"domains": list(OLD), "candidates": candidates}
    evidence = [Evidence(c["candidate_id"], c["fingerprint"], "seed", c["alpha"], face_fingerprint(RECIPE, c["alpha"]))
                for c in candidates]
    return design, evidence


def test_a_revised_expert_invalidates_only_the_points_that_weigh_it():
    previous, evidence = _previous()
    revised = RECIPE | {"experts": {"a": "A1", "b": "B1", "c": "C2"}}  # c's corpus changed: a new expert
    prior = Mixture.from_dict({"a": 0.2, "b": 0.3, "c": 0.5}, OLD)
    candidates, summary = stage_design(_settings(OLD), revised, previous, evidence, prior, set())
    assert [c["alpha"] for c in candidates] == [c["alpha"] for c in previous["candidates"]]  # same seed design
    for c in candidates:
        assert ("reused" in c) == (c["alpha"]["c"] == 0)  # a point that weighs c is another model now
        assert c["fingerprint"] == candidate_fingerprint(revised, c["alpha"])
    assert summary["origin"] == "seed" and len(summary["reused"]) == 2  # the a and b vertices
    assert {e["why"] for e in summary["not_used"]} == {"merged from an earlier expert of ['c']"}
    assert len(summary["not_used"]) == len(candidates) - 2


def test_a_removed_domain_keeps_the_points_off_it_and_fills_the_smaller_simplex():
    previous, evidence = _previous()
    now = RECIPE | {"experts": {"a": "A1", "b": "B1"}}
    prior = Mixture.from_dict({"a": 0.4, "b": 0.6}, ("a", "b"))
    candidates, summary = stage_design(_settings(("a", "b")), now, previous, evidence, prior, {"c000", "c007"})
    kept = [c for c in previous["candidates"] if c["alpha"]["c"] == 0]
    assert summary["origin"] == "extended" and summary["removed_domains"] == ["c"]
    assert {r["candidate_id"] for r in summary["reused"]} == {c["candidate_id"] for c in kept}
    assert all(e["why"] == "weighs removed domain(s) ['c']" for e in summary["not_used"])
    assert len(summary["not_used"]) == len(previous["candidates"]) - len(kept)
    assert all(set(c["alpha"]) == {"a", "b"} for c in candidates)
    assert len(candidates) >= 6 and min(int(cid[1:]) for cid in summary["new"]) == 8  # ids never used before
    stored = now | {"domains": ["a", "b"], "candidates": candidates, "origin": "extended"}
    again, second = stage_design(_settings(("a", "b")), now, stored, [], prior, set())
    assert again == candidates and second["reused"] == summary["reused"]  # a rerun: the same design, same record


def test_rows_are_trusted_only_where_the_stored_recipe_reproduces_them(tmp_path):
    from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout

    s = load_settings("smoke")
    domains = s.domain_names
    store = CheckpointStore(root=str(tmp_path / "store"))
    db = EvaluationDatabase(path=str(tmp_path / "db.duckdb"))
    recipe = {"base": "B", "method": "linear", "experts": {d: d.upper() for d in domains}}
    points = seed_design(domains, 6, seed=0)
    candidates = [{"candidate_id": f"c{i:03d}", "alpha": m.as_dict(), "fingerprint": candidate_fingerprint(recipe, m.as_dict())}
                  for i, m in enumerate(points)]
    candidates[1]["fingerprint"] = "not-from-this-recipe"  # rows of an unknown recipe: never evidence
    store.put_json(layout.candidates_key("s0"), recipe | {"domains": list(domains), "candidates": candidates})
    fps = evaluation_fingerprints(s)
    db.upsert_evaluations(pd.DataFrame([
        {"stage": "s0", "candidate_id": c["candidate_id"], "kind": "seed", "alpha": c["alpha"], "task": t.name,
         "metric": t.metric, "value": 0.5, "capability": t.capability, "model_fingerprint": c["fingerprint"],
         "evaluation_fingerprint": fps[t.name]}
        for c in candidates for t in s.evaluation.tasks]))
    found = earlier_evidence(store, db, "s0", s)
    assert [e.candidate_id for e in found] == [c["candidate_id"] for i, c in enumerate(candidates) if i != 1]
    # a new domain at 0: the same models, rows copied under the new candidates' ids and fingerprints
    wider = recipe | {"experts": recipe["experts"] | {"new": "NEW"}}
    moved = [{"candidate_id": f"c{i + 10:03d}", "alpha": e.alpha | {"new": 0.0},
              "fingerprint": candidate_fingerprint(wider, e.alpha | {"new": 0.0}), "reused": e.source()}
             for i, e in enumerate(found[:2])]
    assert copy_reused_rows(db, "s0", s, moved) == ["c010", "c011"]
    rows = db.evaluations("s0")
    copied = rows[rows["candidate_id"] == "c010"]
    assert len(copied) == len(s.evaluation.tasks) and set(copied["model_fingerprint"]) == {moved[0]["fingerprint"]}
    assert copy_reused_rows(db, "s0", s, moved) == []  # done: nothing copied twice


def test_the_face_fingerprint_ignores_only_domains_at_weight_zero():
    alpha = {"a": 0.5, "b": 0.5, "c": 0.0}
    same = face_fingerprint(RECIPE, alpha)
    assert face_fingerprint(RECIPE | {"experts": RECIPE["experts"] | {"c": "C2", "d": "D"}}, alpha | {"d": 0.0}) == same
    assert face_fingerprint(RECIPE, {"a": 0.5, "b": 0.5}) == same
    for other in (RECIPE | {"base": "B2"}, RECIPE | {"method": "ties"},
                  RECIPE | {"experts": RECIPE["experts"] | {"b": "B2"}}):
        assert face_fingerprint(other, alpha) != same
    assert face_fingerprint(RECIPE, {"a": 0.4, "b": 0.6, "c": 0.0}) != same
