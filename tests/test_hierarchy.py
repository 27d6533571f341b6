"""Sub-domains in the pipeline and the hierarchical search, run as real Dagster materializations.

A tiny config with 2 domains × 2 sub-domains (math: bare facts / word problems; code: two sets of stdlib
files) runs top-down and bottom-up end to end on their own homes and instances; what ran is read back from
the instance's event log, like tests/test_stages.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mergemix_dagster.core.data.corpora import read_corpus, write_corpus
from mergemix_dagster.core.data.defaults import build_domain_documents
from mergemix_dagster.core.data.defaults.arithmetic import NAMES

LEAVES = ("math/facts", "math/words", "code/a", "code/b")
STAGE_ASSETS = {"merge_candidates", "candidate_evaluations", "capability_surrogates", "search_rounds", "chosen_mixture"}


def _materializations(instance, after: int = 0) -> list[tuple[str, str | None, int]]:
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION, after_cursor=after), limit=10_000
    )
    return [(r.asset_key.to_user_string(), r.partition_key, r.storage_id) for r in records]


def _last_storage_id(instance) -> int:
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION), limit=1, ascending=False
    )
    return records[0].storage_id if records else 0


def _split_math(docs: list[str]) -> tuple[list[str], list[str]]:
    """Question blocks with a person in them are word problems; the rest are bare facts."""
    facts, words = [], []
    for doc in docs:
        for block in doc.split("\n\n"):
            (words if any(n in block for n in NAMES) else facts).append(block)
    return facts, words


def _write_sources(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    facts, words = _split_math(build_domain_documents("math", max_chars=80_000, seed=0))
    code = build_domain_documents("code", max_chars=120_000, seed=0)
    parts = {"math/facts": facts, "math/words": words, "code/a": code[0::2], "code/b": code[1::2]}
    paths = {}
    for leaf, docs in parts.items():
        assert docs, leaf
        paths[leaf] = root / f"{leaf.replace('/', '_')}.jsonl.gz"
        write_corpus(docs, paths[leaf])
    return paths


def _config(root: Path, hierarchy: str) -> Path:
    paths = _write_sources(root / "data")
    smoke = yaml.safe_load((Path(__file__).parents[1] / "mergemix_dagster/configs/smoke.yaml").read_text())
    raw = {
        "home": str(root / "home"),
        "domains": [
            {"name": "math", "capability": "math", "max_chars": 60_000,
             "subdomains": [{"name": "facts", "paths": [str(paths["math/facts"])]},
                            {"name": "words", "paths": [str(paths["math/words"])]}]},
            {"name": "code", "capability": "code", "max_chars": 60_000,
             "subdomains": [{"name": "a", "paths": [str(paths["code/a"])]},
                            {"name": "b", "paths": [str(paths["code/b"])]}]},
        ],
        "model": smoke["model"],
        "pretrain": smoke["pretrain"] | {"tokens": 8000},
        "experts": smoke["experts"] | {"tokens": 4000},
        "evaluation": {"limit": 12, "tasks": [{"name": "mm_math", "capability": "math", "metric": "gold_prob"},
                                              {"name": "mm_code", "capability": "code", "metric": "gold_prob"}]},
        "search": {"n_candidates": 5, "n_samples": 1500, "cv_folds": 2, "rounds": [2], "ensemble": 3,
                   "hierarchy": hierarchy},
        "target": {"tokens": 200_000, "max_epochs": 50},
    }
    path = root / f"{hierarchy}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(tmp_path_factory, hierarchy: str):
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.runner.hierarchy import run_hierarchy
    from mergemix_dagster.core.settings import load_settings

    root = tmp_path_factory.mktemp(hierarchy)
    config = _config(root, hierarchy)
    settings = load_settings(str(config))
    defs = build_definitions(settings, config=str(config))
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        start = time.perf_counter()
        run_hierarchy(defs, settings, instance, "s0", log_level="WARNING")
        yield settings, defs, instance, time.perf_counter() - start


@pytest.fixture(scope="module")
def top_down(tmp_path_factory):
    yield from _run(tmp_path_factory, "top_down")


@pytest.fixture(scope="module")
def bottom_up(tmp_path_factory):
    yield from _run(tmp_path_factory, "bottom_up")


def _store(settings):
    from mergemix_dagster.resources import CheckpointStore

    return CheckpointStore(root=settings.store_uri)


def _check_final_mixture(settings) -> dict:
    from mergemix_dagster.core.data.subdomains import flatten_weights

    mixture = _store(settings).get_json("stages/s0/mixture.json")
    assert set(mixture["weights"]) == set(LEAVES)
    assert abs(sum(mixture["weights"].values()) - 1) < 1e-9
    assert mixture["weights"] == pytest.approx(flatten_weights(mixture["coarse_weights"], mixture["fine_weights"]))
    assert set(mixture["coarse_weights"]) == {"math", "code"}
    assert set(mixture["coarse"]["weights"]) == {"math", "code"}  # the coarse search's own payload is kept
    tokens = (settings.home_path / "exports" / "s0" / "megatron_blend.txt").read_text().split()
    blend = {prefix.removeprefix("UNSET/"): float(w) for w, prefix in zip(tokens[0::2], tokens[1::2])}
    nonzero = {leaf: w for leaf, w in mixture["weights"].items() if round(w, 8) > 0}
    assert blend == pytest.approx(nonzero, abs=1e-7)  # the trainer file is flat over sub-domains
    return mixture


def _made(instance) -> set[tuple[str, str | None]]:
    return {(a, p) for a, p, _ in _materializations(instance)}


def test_top_down_runs_end_to_end(top_down):
    settings, defs, instance, seconds = top_down
    made = _made(instance)
    assert {("subdomain_corpus", leaf) for leaf in LEAVES} <= made
    assert {("subdomain_expert", f"s0|{leaf}") for leaf in LEAVES} <= made
    assert {("subdomain_mixture", f"{d}|s0") for d in ("math", "code")} <= made
    assert ("hierarchical_mixture", "s0") in made and ("chosen_mixture", "s0") in made
    # top-down: the coarse level uses domain experts trained on the natural sub-domain mix
    expert = _store(settings).get_json("stages/s0/experts/math/current.json")
    assert "consolidated_from" not in expert
    for d in ("math", "code"):  # the sub-domain choice is judged on paired item noise, like the coarse one
        fine = _store(settings).get_json(f"stages/s0/subdomains/{d}/mixture.json")
        decision = fine["comparison"].get("decision", "")
        assert decision.startswith(("verified search choice kept", "measured mixture chosen")), fine["comparison"]
        if "measured_candidate" in fine["comparison"]:
            assert "paired bootstrap" in fine["comparison"]["margin"], fine["comparison"]
        assert (fine["chosen_from"] == "search") == (fine["weights"] == fine["search_choice"])
    mixture = _check_final_mixture(settings)
    print(f"top-down end to end: {seconds:.0f} s; flat {mixture['weights']}")


def test_bottom_up_consolidates_before_the_coarse_search(bottom_up):
    settings, defs, instance, seconds = bottom_up
    events = _materializations(instance)
    first = {}
    for asset, partition, sid in events:
        first.setdefault((asset, partition), sid)
    for d in ("math", "code"):
        assert first[("subdomain_mixture", f"{d}|s0")] < first[("expert_checkpoint", f"{d}|s0")]
        fine = _store(settings).get_json(f"stages/s0/subdomains/{d}/mixture.json")["weights"]
        expert = _store(settings).get_json(f"stages/s0/experts/{d}/current.json")
        assert expert["consolidated_from"] == pytest.approx(fine)
    assert first[("expert_checkpoint", "code|s0")] < first[("merge_candidates", "s0")]
    mixture = _check_final_mixture(settings)
    print(f"bottom-up end to end: {seconds:.0f} s; flat {mixture['weights']}")


def test_rerun_of_a_fresh_hierarchy_materializes_nothing(top_down):
    from mergemix_dagster.runner.hierarchy import run_hierarchy

    settings, defs, instance, _ = top_down
    before = _last_storage_id(instance)
    run_hierarchy(defs, settings, instance, "s0", log_level="WARNING")
    assert _materializations(instance, before) == []


def test_a_coarse_rerun_is_followed_by_coarse_times_fine_again(top_down):
    """``chosen_mixture`` rewrites mixture.json with coarse weights; even when it chose the same weights (so
    Dagster sees nothing stale), the next run writes the flat mixture back."""
    from mergemix_dagster.runner.hierarchy import run_hierarchy

    settings, defs, instance, _ = top_down
    job = defs.resolve_job_def("optimize_job")
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    assert job.execute_in_process(instance=instance, partition_key="s0", run_config=quiet,
                                  asset_selection=[dg.AssetKey("chosen_mixture")]).success
    assert "hierarchy" not in _store(settings).get_json("stages/s0/mixture.json")
    before = _last_storage_id(instance)
    run_hierarchy(defs, settings, instance, "s0", log_level="WARNING")
    assert [(a, p) for a, p, _ in _materializations(instance, before)] == [("hierarchical_mixture", "s0")]
    _check_final_mixture(settings)


def test_changed_subdomain_data_reruns_only_that_domain(top_down):
    from mergemix_dagster.runner.hierarchy import run_hierarchy

    settings, defs, instance, _ = top_down
    path = Path(settings.domain("code").subdomains[0].paths[0])
    docs = read_corpus(path)
    time.sleep(0.01)
    write_corpus(docs[: max(1, len(docs) // 2)], path)
    before = _last_storage_id(instance)
    run_hierarchy(defs, settings, instance, "s0", log_level="WARNING")
    made = [(a, p) for a, p, _ in _materializations(instance, before)]
    sub_level = {(a, p) for a, p in made if a.startswith("subdomain_")}
    assert sub_level == {("subdomain_corpus", "code/a"), ("subdomain_expert", "s0|code/a"),
                         ("subdomain_mixture", "code|s0")}
    domain_level = {(a, p) for a, p in made if a in ("domain_corpus", "expert_checkpoint")}
    assert domain_level == {("domain_corpus", "code"), ("expert_checkpoint", "code|s0")}
    assert {a for a, _ in made} <= {"subdomain_corpus", "subdomain_expert", "subdomain_mixture", "domain_corpus",
                                    "expert_checkpoint", "hierarchical_mixture", *STAGE_ASSETS}
    assert len(made) == len(set(made))  # nothing twice
    _check_final_mixture(settings)


def test_study_trains_each_arm_at_each_seed_once(bottom_up):
    """The Table-3 study at toy scale: 3 arms × 2 seeds trained through the validation reference runs."""
    from mergemix_dagster.resources.layout import study_key
    from mergemix_dagster.runner.hierarchy import run_study
    from mergemix_dagster.resources import EvaluationDatabase

    settings, defs, instance, _ = bottom_up
    run_study(defs, instance, "s0", log_level="WARNING")
    study = _store(settings).get_json(study_key("s0"))
    mixture = _store(settings).get_json("stages/s0/mixture.json")
    assert set(study["arms"]) == {"mergemix_mergemix", "mergemix_uniform", "uniform_uniform"}
    assert study["arms"]["mergemix_mergemix"] == pytest.approx(mixture["weights"])
    assert study["arms"]["uniform_uniform"] == pytest.approx({leaf: 0.25 for leaf in LEAVES})
    for by_seed in study["scores"].values():
        assert len(by_seed) == 2 and all({"math", "code"} <= set(sc) for sc in by_seed.values())
    db = EvaluationDatabase(path=settings.database_path)
    count = "SELECT count(*) AS n FROM training_runs WHERE study = 'hierarchy_study'"
    assert int(db.query(count)["n"][0]) == 6
    run_study(defs, instance, "s0", log_level="WARNING")  # finished runs are reused, not trained again
    assert int(db.query(count)["n"][0]) == 6


def test_mergemix_run_drives_both_levels(bottom_up, capsys, monkeypatch):
    """``mergemix run`` on a hierarchical config uses run_hierarchy and prints the flat mixture (its own
    Dagster instance under the home: finished work is found in the store and DuckDB, nothing retrains)."""
    from mergemix_dagster.cli import main
    from mergemix_dagster.resources import EvaluationDatabase

    settings, _, _, _ = bottom_up
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # `mergemix run` sets it to the home's instance
    config = settings.home_path.parent / "bottom_up.yaml"
    runs = "SELECT count(*) AS n FROM training_runs"
    trained = int(EvaluationDatabase(path=settings.database_path).query(runs)["n"][0])
    assert main(["run", "--config", str(config), "--log-level", "WARNING"]) == 0
    out = capsys.readouterr().out
    assert "subdomain_mixture_job" in out and all(leaf in out for leaf in LEAVES)
    assert int(EvaluationDatabase(path=settings.database_path).query(runs)["n"][0]) == trained
