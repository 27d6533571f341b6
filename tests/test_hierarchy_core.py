"""The hierarchy's plain parts (no pipeline run): flat configs untouched, the intra-domain objective,
proportional caps, coarse × fine, and the split domain's corpus at its natural proportions."""

from __future__ import annotations

import numpy as np
import pytest

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.search.hierarchy import (
    fine_objective,
    hierarchical_weights,
    natural_shares,
    proportional_caps,
    study_arms,
    uniform_fine,
)
from mergemix_dagster.core.search.objective import Objective, fit_score_scale, objective_values
from mergemix_dagster.core.settings import Settings, load_settings


def _keys_and_versions(defs) -> dict[str, str | None]:
    graph = defs.resolve_asset_graph()
    return {k.to_user_string(): graph.get(k).code_version for k in graph.get_all_asset_keys()}


@pytest.mark.parametrize("config", ["smoke", "default"])
def test_flat_config_has_the_same_assets_jobs_and_code_versions(config):
    import dagster as dg

    from mergemix_dagster.assets import build_assets
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.defs.jobs import ALL_JOBS
    from mergemix_dagster.assets.partitions import build_partitions
    from mergemix_dagster.assets.versions import with_settings_versions

    s = load_settings(config)
    assert "hierarchy" not in s.search.model_dump()  # the search settings hash (cache keys) is unchanged
    defs = build_definitions(s, config=config)
    old_wiring = with_settings_versions(build_assets(build_partitions(s)), s)
    before = dg.Definitions(assets=old_wiring, resources=defs.resources)
    assert _keys_and_versions(defs) == _keys_and_versions(before)
    assert {j.name for j in defs.resolve_all_job_defs()} - {"__ASSET_JOB"} == {j.name for j in ALL_JOBS}


def _split_settings(tmp_path, hierarchy="none") -> Settings:
    return Settings(
        home=str(tmp_path / "home"),
        domains=[
            {"name": "math", "capability": "math",
             "subdomains": [{"name": "facts", "paths": [str(tmp_path / "f.jsonl.gz")]},
                            {"name": "words", "paths": [str(tmp_path / "w.jsonl.gz")]}]},
            {"name": "code", "capability": "code"},
        ],
        search={"hierarchy": hierarchy},
    )


def test_split_config_adds_only_the_subdomain_family(tmp_path):
    from mergemix_dagster.definitions import build_definitions

    flat = set(_keys_and_versions(build_definitions(load_settings("smoke"), config="smoke")))
    none = set(_keys_and_versions(build_definitions(_split_settings(tmp_path), config="smoke")))
    assert none - flat == {"subdomain_corpus"}
    td = build_definitions(_split_settings(tmp_path, "top_down"), config="smoke")
    assert set(_keys_and_versions(td)) - flat == {
        "subdomain_corpus", "subdomain_expert", "subdomain_mixture", "hierarchical_mixture", "hierarchy_study"}
    partitions = td.resolve_assets_def("subdomain_corpus").partitions_def.get_partition_keys()
    assert partitions == ["math/facts", "math/words"]


def test_bottom_up_experts_of_split_domains_wait_for_their_fine_weights(tmp_path):
    import dagster as dg

    from mergemix_dagster.definitions import build_definitions

    defs = build_definitions(_split_settings(tmp_path, "bottom_up"), config="smoke")
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("subdomain_mixture") in graph.get(dg.AssetKey("expert_checkpoint")).parent_keys
    top_down = build_definitions(_split_settings(tmp_path, "top_down"), config="smoke").resolve_asset_graph()
    assert dg.AssetKey("subdomain_mixture") not in top_down.get(dg.AssetKey("expert_checkpoint")).parent_keys


def test_hierarchy_needs_a_split_domain():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs at least one domain with subdomains"):
        Settings(domains=[{"name": "math"}, {"name": "code"}], search={"hierarchy": "top_down"})


def test_proportional_caps_keep_every_part_and_its_share():
    sizes = [9000, 3000, 1000]
    caps = proportional_caps(sizes, 6500)
    assert sum(caps) <= 6500 and all(c > 0 for c in caps)
    assert np.allclose(np.array(caps) / sum(caps), np.array(sizes) / sum(sizes), atol=1e-3)
    assert proportional_caps([10, 20], 100) == [10, 20]  # under the cap: untouched


def test_fine_objective_optimizes_the_domains_own_capability():
    coarse = Objective(aggregate="min", directions={"code": "maximize"})
    prior = {"math/facts": 0.7, "math/words": 0.3}
    own = fine_objective(coarse, "math", ["math", "code"], prior, kl_weight=0.05)
    scores = {"math": np.array([0.2, 0.4]), "code": np.array([0.9, 0.1])}
    X = np.array([[0.7, 0.3], [0.7, 0.3]])
    values = objective_values(scores, own, fit_score_scale(scores), X, list(prior))
    assert values[1] > values[0]  # only math counts inside the math domain, whatever code does
    whole = fine_objective(coarse, None, ["math", "code"], prior)
    assert whole.aggregate == "min" and whole.kl_weight == 0.0


def test_hierarchical_weights_are_coarse_times_fine():
    flat = hierarchical_weights({"math": 0.6, "code": 0.4}, {"math": {"facts": 0.25, "words": 0.75}}, ["math"])
    assert flat == pytest.approx({"math/facts": 0.15, "math/words": 0.45, "code": 0.4})
    with pytest.raises(ConfigError, match="no sub-domain weights"):
        hierarchical_weights({"math": 0.6, "code": 0.4}, {}, ["math"])
    assert uniform_fine({"code": ["a", "b"]}) == {"code": {"a": 0.5, "b": 0.5}}
    arms = study_arms({"math": 0.6, "code": 0.4}, {"math": {"facts": 0.25, "words": 0.75}}, {"math": ["facts", "words"]})
    assert arms["mergemix_mergemix"] == pytest.approx(flat)
    assert arms["mergemix_uniform"] == pytest.approx({"math/facts": 0.3, "math/words": 0.3, "code": 0.4})
    assert arms["uniform_uniform"] == pytest.approx({"math/facts": 0.25, "math/words": 0.25, "code": 0.5})
    assert natural_shares({"a": 3, "b": 1}) == {"a": 0.75, "b": 0.25}


def test_split_domain_corpus_is_its_subdomains_at_natural_proportions(tmp_path):
    from mergemix_dagster.assets.corpora import read_domain_documents, source_fingerprint
    from mergemix_dagster.core.data.corpora import write_corpus
    from mergemix_dagster.resources import CheckpointStore

    write_corpus(["fact " * 40] * 30, tmp_path / "f.jsonl.gz")  # 6000 characters
    write_corpus(["word " * 40] * 10, tmp_path / "w.jsonl.gz")  # 2000 characters
    s = _split_settings(tmp_path)
    cfg = s.domain("math").model_copy(update={"max_chars": 7000})
    docs, source = read_domain_documents(cfg, CheckpointStore(root=str(tmp_path / "store")), seed=0)
    facts = sum(len(d) for d in docs if d.startswith("fact"))
    words = sum(len(d) for d in docs if d.startswith("word"))
    assert facts + words <= 7000 and facts == 5250 and words == 1750  # 3:1 as in the files, none dropped
    assert "facts:" in source and "words:" in source
    before = source_fingerprint(cfg)
    write_corpus(["word " * 40] * 11, tmp_path / "w.jsonl.gz")
    assert source_fingerprint(cfg) != before  # a sub-domain file edit re-reads the domain corpus too


def test_embedded_subdomains_are_disjoint_kinds_of_their_domain():
    from mergemix_dagster.core.data.defaults.arithmetic import NAMES
    from mergemix_dagster.core.data.defaults.subdomains import EMBEDDED_SUBDOMAINS, build_subdomain_documents, code_area

    assert len(EMBEDDED_SUBDOMAINS) >= 8
    blocks = {k: [b for d in build_subdomain_documents(f"math/{k}", 20_000) for b in d.split("\n\n")]
              for k in ("facts", "words", "twostep")}
    assert all(not any(n in b for n in NAMES) and "The answer is" not in b for b in blocks["facts"])
    assert all(any(n in b for n in NAMES) for b in blocks["words"])
    assert all("The answer is" in b for b in blocks["twostep"])
    assert code_area("asyncio/tasks.py") == "io" and code_area("idlelib/editor.py") == "tools"
    assert code_area("functools.py") == "core"
    currencies = build_subdomain_documents("sft/currencies", 5_000)
    assert currencies and all("currency" in d.lower() or "ISO 4217" in d for d in currencies)
    assert sum(map(len, build_subdomain_documents("code/io", 50_000))) >= 50_000


def test_subdomain_weights_set_the_default_intra_domain_mix(tmp_path):
    from mergemix_dagster.assets.corpora import read_domain_documents
    from mergemix_dagster.core.data.corpora import write_corpus
    from mergemix_dagster.core.search.hierarchy import weighted_caps
    from mergemix_dagster.resources import CheckpointStore

    assert weighted_caps([6000, 2000], [1, 1], 7000) == [2000, 2000]  # the smaller part decides, used whole
    assert weighted_caps([6000, 2000], [1, 3], 2000) == [500, 1500]  # the cap decides
    write_corpus(["fact " * 40] * 30, tmp_path / "f.jsonl.gz")
    write_corpus(["word " * 40] * 10, tmp_path / "w.jsonl.gz")
    base = _split_settings(tmp_path).domain("math")
    subs = [sub.model_copy(update={"weight": 1.0}) for sub in base.subdomains]
    cfg = base.model_copy(update={"subdomains": subs, "max_chars": 7000})
    docs, _ = read_domain_documents(cfg, CheckpointStore(root=str(tmp_path / "store")), seed=0)
    assert sum(len(d) for d in docs if d.startswith("fact")) == sum(len(d) for d in docs if d.startswith("word"))
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="weight"):
        Settings(domains=[{"name": "math", "subdomains": [{"name": "a", "weight": 1}, {"name": "b"}]},
                 {"name": "code"}])
