"""A domain added to a finished stage: only its expert is trained, only the missing design points are scored,
earlier evaluations are reused where they are the same merged models, and mixture.json says which."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml

OLD = ["math", "code", "web"]


def _config(tmp: Path, domains: list[str], name: str) -> Path:
    from mergemix_dagster.core.settings import resolve_config_path

    raw = yaml.safe_load(resolve_config_path("smoke").read_text())
    raw["domains"] = [d for d in raw["domains"] if d["name"] in domains]
    raw["home"] = str(tmp / "home")
    raw["search"] |= {"n_candidates": 6, "rounds": [2], "n_samples": 500, "ensemble": 2}
    raw["evaluation"]["limit"] = 8
    raw["pretrain"]["tokens"] = raw["experts"]["tokens"] = 4000
    raw["validation"]["dual_pair"] = ["math", "code"]
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def added_domain(tmp_path_factory):
    """s0 over three domains, then the same home with ``sft`` added, both on one Dagster instance."""
    from mergemix_dagster.core.report import render_markdown
    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
    from mergemix_dagster.runner.report import stage_report
    from mergemix_dagster.runner.stage import run_stage

    tmp = tmp_path_factory.mktemp("i20-reuse")
    os.makedirs(tmp / "dagster")
    out = {}
    with dg.instance_for_test(temp_dir=str(tmp / "dagster")) as instance:
        for label, domains in (("before", OLD), ("after", [*OLD, "sft"])):
            path = _config(tmp, domains, f"{label}.yaml")
            settings = load_settings(str(path))
            started = datetime.now(timezone.utc).replace(tzinfo=None)
            run_stage(build_definitions(settings, config=str(path)), settings, instance, "s0")
            database = EvaluationDatabase(path=settings.database_path, store_root=settings.store_uri)
            store = CheckpointStore(root=settings.store_uri)
            out[label] = {"settings": settings, "started": started, "rows": database.evaluations("s0"),
                          "runs": database.training_runs("s0"),
                          "design": store.get_json(layout.candidates_key("s0")),
                          "mixture": store.get_json(layout.mixture_key("s0")),
                          "report": render_markdown(stage_report(settings, instance, "s0"))}
    return out


def _scored_after(rows, started) -> set[str]:
    fresh = rows[rows["evaluated_at"] >= started]
    return set(fresh[fresh["kind"].isin(["seed"]) | fresh["kind"].str.startswith("round")]["candidate_id"])


def test_only_the_new_expert_is_trained(added_domain):
    after = added_domain["after"]
    runs = after["runs"]
    trained_now = runs[(runs["study"] == "expert") & (runs["finished_at"] >= after["started"])]
    assert len(trained_now) == 1
    assert dict(trained_now["alpha"].iloc[0]) == {"sft": 1.0}


def test_only_missing_design_points_are_scored_and_the_new_domain_is_measured(added_domain):
    before, after = added_domain["before"], added_domain["after"]
    design = after["design"]
    evidence = design["evidence"]
    assert evidence["origin"] == "extended" and evidence["new_domains"] == ["sft"]
    ids = {c["candidate_id"]: c for c in design["candidates"]}
    old_seed = {c["candidate_id"] for c in before["design"]["candidates"]}
    reused = {r["candidate_id"] for r in evidence["reused"]}
    assert old_seed <= reused  # every 3-domain seed point is a point of the 4-domain simplex, same model
    assert any(r["from"]["kind"] == "round1" for r in evidence["reused"])  # earlier round mixtures kept too
    new = set(evidence["new"])
    assert new and not new & reused and set(ids) == new | reused
    assert all(ids[c]["alpha"]["sft"] > 0 for c in new)  # only points that move the new domain are new
    assert any(ids[c]["alpha"]["sft"] == 1.0 for c in new)  # its expert alone
    assert sum(ids[c]["alpha"]["sft"] == 0.5 for c in new) == 3  # its midpoints with each other domain
    assert sum(all(w > 0 for w in ids[c]["alpha"].values()) for c in new) >= 2  # interior points
    scored_seed = {c for c in _scored_after(after["rows"], after["started"]) if not c.startswith("r")}
    assert scored_seed == new  # the reused ones were copied, not merged and scored again
    seed_rows = after["rows"][after["rows"]["candidate_id"].isin(reused)]
    assert set(seed_rows["model_fingerprint"]) == {ids[c]["fingerprint"] for c in reused}


def test_mixture_json_names_reused_and_new_evidence(added_domain):
    after = added_domain["after"]
    evidence = after["mixture"]["evidence"]
    assert evidence["counts"]["reused"] == len(evidence["reused"]) == len(after["design"]["evidence"]["reused"])
    assert evidence["counts"]["new"] == len(evidence["new"]) >= len(after["design"]["evidence"]["new"])
    assert set(after["design"]["evidence"]["new"]) <= set(evidence["new"])
    assert after["mixture"]["weights"].keys() == {*OLD, "sft"}
    before = added_domain["before"]["mixture"]["evidence"]
    assert before["counts"]["reused"] == 0 and before["origin"] == "seed"
    assert "evidence" not in added_domain["before"]["design"]  # a design as before stores what it stored
    report = after["report"]
    assert f"Evidence: {evidence['counts']['reused']} measured mixtures reused" in report
    r = next(r for r in evidence["reused"] if r["from"]["kind"] == "round1")
    assert f"{r['candidate_id']} <- {r['from']['candidate_id']} (round1)" in report
    assert "Evidence:" not in added_domain["before"]["report"]


def test_experts_beat_base_scores_the_new_expert(added_domain):
    from mergemix_dagster.assets.evaluations import expert_vs_base_frame
    from mergemix_dagster.resources.artifacts import configured_rows

    after = added_domain["after"]
    rows = configured_rows(after["rows"], after["settings"])
    ids = [c["candidate_id"] for c in after["design"]["candidates"]] + ["base"]
    versus = expert_vs_base_frame(after["settings"], rows[rows["candidate_id"].isin(ids)])
    assert set(versus["domain"]) == {*OLD, "sft"}
