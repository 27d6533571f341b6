"""Candidate evaluation over W worker processes, task vectors kept on CPU, and the concurrency pools.

The worker test materializes the real ``candidate_evaluations`` asset with ``evaluation.workers: 2`` (two
spawned processes) against the session's smoke stage, whose rows were written with one worker.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import torch
import yaml

from mergemix_dagster.assets.evaluations import build_evaluation_assets
from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.evaluation.workers import ScorerSpec, worker_devices
from mergemix_dagster.core.merge import InMemoryMerger
from mergemix_dagster.core.merge.offloaded import OffloadedMerger
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.model import TinyModelSpec, new_tiny_llama, train_tokenizer
from mergemix_dagster.assets.partitions import build_partitions
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.core.settings import load_settings

KEY = ["candidate_id", "task", "metric"]


# ---- task vectors in CPU memory ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    tokenizer = train_tokenizer(["def f(x): return x + 1", "the cat sat on the mat", "1 + 2 = 3"] * 5, vocab_size=300)
    spec = TinyModelSpec(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=48,
                         max_position_embeddings=64)
    base = {k: v.clone() for k, v in new_tiny_llama(spec, tokenizer, seed=0).state_dict().items()
            if k != "lm_head.weight"}
    experts = {}
    for i, d in enumerate(("code", "math", "prose")):
        g = torch.Generator().manual_seed(i + 1)
        experts[d] = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    return spec, tokenizer, base, experts


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_task_vectors_on_cpu_give_the_same_weights_bit_for_bit(tiny, method):
    spec, tokenizer, base, experts = tiny
    on_device, offloaded = new_tiny_llama(spec, tokenizer, seed=5), new_tiny_llama(spec, tokenizer, seed=6)
    a = InMemoryMerger(on_device, base, experts, method=method)
    b = OffloadedMerger(offloaded, base, experts, method=method)
    assert all(slot[2].device.type == "cpu" for slot in b._slots)
    for weights in [(0.2, 0.3, 0.5), (1.0, 0.0, 0.0), (0.0, 0.5, 0.5)]:
        mixture = Mixture(("code", "math", "prose"), weights)
        a.apply(mixture)
        b.apply(mixture)
        for (name, x), (_, y) in zip(on_device.named_parameters(), offloaded.named_parameters()):
            assert torch.equal(x, y), (name, weights)
    b.restore_base()
    assert torch.equal(offloaded.model.embed_tokens.weight, base["model.embed_tokens.weight"])


def test_worker_devices():
    assert worker_devices("cpu", 3) == ["cpu"] * 3
    assert worker_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]
    expected = [f"cuda:{w % torch.cuda.device_count()}" for w in range(3)] if torch.cuda.is_available() else ["cpu"] * 3
    assert worker_devices("auto", 3) == expected
    with pytest.raises(RuntimeError):
        worker_devices("gpu7", 1)
    with pytest.raises(ConfigError):
        ScorerSpec("b", {}, (), task_vectors="disk")


def test_a_worker_failure_reaches_the_caller_by_name(tmp_path):
    from mergemix_dagster.core.errors import StoreError
    from mergemix_dagster.core.evaluation.harness import DEFAULT_TASKS
    from mergemix_dagster.core.evaluation.workers import ProxyJob, score_proxies

    spec = ScorerSpec(str(tmp_path), {"math": str(tmp_path)}, DEFAULT_TASKS, device="cpu")  # no checkpoint there
    scored = []
    with pytest.raises(StoreError, match="no config.json"):
        score_proxies(spec, [ProxyJob("a", {"math": 1.0}), ProxyJob("b", {"math": 1.0})],
                      lambda *args: scored.append(args), workers=2)
    assert scored == []


# ---- the asset over two worker processes -------------------------------------------------------------------


def _settings_file(pipeline_config: Path, tmp: Path, **evaluation) -> Path:
    import shutil

    raw = yaml.safe_load(Path(pipeline_config).read_text())
    raw.setdefault("evaluation", {}).update(evaluation)
    raw["database"] = str(tmp / "workers.duckdb")  # the smoke stage's store, a fresh evaluations table
    store = tmp / "store"  # ... copied without the scores its run stored, so every model is scored again
    shutil.copytree(load_settings(str(pipeline_config)).store_uri, store,
                    ignore=lambda folder, names: ["scores"] if "scores" in names else [])
    raw["store_root"] = str(store)
    path = tmp / "workers.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _materialize(path: Path, instance) -> dg.ExecuteInProcessResult:
    s = load_settings(str(path))
    return dg.materialize(
        build_evaluation_assets(build_partitions(s)),
        partition_key="s0",
        resources={"settings": PipelineSettings(config=str(path)), "store": CheckpointStore(root=s.store_uri),
                   "database": EvaluationDatabase(path=s.database_path)},
        instance=instance,
    )


def _rows(database: EvaluationDatabase):
    frame = database.evaluations("s0")
    return frame[frame["kind"].isin(["seed", "base"])].sort_values(KEY).reset_index(drop=True)


def test_two_workers_write_the_rows_of_one_and_resume(smoke_run, pipeline_config, tmp_path):
    settings, *_ = smoke_run
    one_worker = _rows(EvaluationDatabase(path=settings.database_path))
    path = _settings_file(pipeline_config, tmp_path, workers=2)
    database = EvaluationDatabase(path=str(tmp_path / "workers.duckdb"))
    n = one_worker["candidate_id"].nunique() - 1  # seed candidates; the base is scored too
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("stage", ["s0"])
        result = _materialize(path, instance)
        meta = result.asset_materializations_for_node("candidate_evaluations")[0].metadata
        assert meta["candidates_scored_now"].value == n
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
        assert any("2 worker process(es)" in m for m in logs)
        assert any(f"candidates {n}/{n}" in m for m in logs)  # progress i/N still reported

        two_workers = _rows(database)
        assert not two_workers.duplicated(KEY).any()
        assert two_workers[KEY].equals(one_worker[KEY])
        assert (two_workers["value"] - one_worker["value"]).abs().max() <= 1e-9
        assert two_workers["evaluation_fingerprint"].equals(one_worker["evaluation_fingerprint"])

        # rows lost from DuckDB after their models were scored: written again from the stored scores, not
        # rescored (a kill between scoring and writing; tests/test_eval_fanout.py kills in the fan-out)
        lost = sorted(set(two_workers["candidate_id"]) - {"base"})[:3]
        with database.connect() as con:
            con.execute("DELETE FROM evaluations WHERE candidate_id IN (SELECT unnest(?))", [lost])
        again = _materialize(path, instance)
        meta = again.asset_materializations_for_node("candidate_evaluations")[0].metadata
        assert meta["candidates_scored_now"].value == 0
        resumed = _rows(database)
        assert not resumed.duplicated(KEY).any() and resumed[KEY].equals(one_worker[KEY])
        assert (resumed["value"] - one_worker["value"]).abs().max() <= 1e-9


# ---- concurrency pools -------------------------------------------------------------------------------------


def test_definitions_carry_the_configured_pools(pipeline_config, tmp_path):
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.assets.versions import SETTINGS_READ_BY

    raw = yaml.safe_load(Path(pipeline_config).read_text())
    raw["trainer"] = {"pool": "team_gpus"}
    raw.setdefault("evaluation", {})["pool"] = "eval_gpus"
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump(raw))
    custom = load_settings(str(path))
    defs = build_definitions(custom, config=str(path))
    graph = defs.resolve_asset_graph()
    pools = {key.to_user_string(): next(iter(graph.get(key).pools or {None}))  # one pool per asset
             for key in graph.get_all_asset_keys()}
    assert {k for k, p in pools.items() if p == "team_gpus"} == {"expert_checkpoint", "reference_models",
                                                                  "mixture_quality"}
    assert {k for k, p in pools.items() if p == "eval_gpus"} == {"candidate_evaluations", "search_rounds",
                                                                 "validation_proxies"}
    default = build_definitions(load_settings(str(pipeline_config)), config=str(pipeline_config))
    assert default.resolve_assets_def("expert_checkpoint").op.pool == "mergemix_training"
    assert default.resolve_asset_graph().get(dg.AssetKey("candidate_evaluations")).pools == {"mergemix_evaluation"}
    # where and how many processes evaluate is not part of any version: nothing goes stale
    placement = raw | {"evaluation": raw["evaluation"] | {"workers": 4, "threads": 1, "task_vectors": "cpu",
                                                          "device": "cpu"}}
    path.write_text(yaml.safe_dump(placement))
    moved = load_settings(str(path))
    for name, read in SETTINGS_READ_BY.items():
        assert read(moved) == read(custom), name


def test_per_item_values_cross_the_worker_processes(tiny, tmp_path, capfd):
    """Scores from spawned workers carry their items, equal to the in-process ones and averaging to the value.

    The workers also keep the caller's choice of no transformers progress bars: spawned with transformers'
    defaults, they printed one "Loading weights" bar per checkpoint each (found by `make run` with
    evaluation.workers: 2)."""
    import math

    from transformers.utils import logging as hf_logging

    from mergemix_dagster.core.evaluation.harness import TaskSpec
    from mergemix_dagster.core.evaluation.workers import ProxyJob, score_proxies
    from mergemix_dagster.core.training.model import load_checkpoint, save_checkpoint

    spec, tokenizer, _, _ = tiny
    dirs = {}
    for i, d in enumerate(("base", "code", "math")):
        dirs[d] = save_checkpoint(new_tiny_llama(spec, tokenizer, seed=i), tokenizer, tmp_path / d)
    hf_logging.enable_progress_bar()
    load_checkpoint(dirs["base"], device="cpu")
    assert "Loading weights" in capfd.readouterr().err  # the bar a worker would print
    scorer = ScorerSpec(str(dirs["base"]), {"code": str(dirs["code"]), "math": str(dirs["math"])},
                        (TaskSpec("mm_facts", "knowledge", "gold_prob"),), limit=5, device="cpu", threads=1)
    jobs = [ProxyJob("c0", {"code": 0.3, "math": 0.7}), ProxyJob("c1", {"code": 1.0, "math": 0.0})]
    scored: dict[int, dict] = {1: {}, 2: {}}
    hf_logging.disable_progress_bar()
    try:
        for workers in (1, 2):
            score_proxies(scorer, jobs, lambda job, scores, _s: scored[workers].update({job.candidate_id: scores[0]}),
                          workers=workers)
    finally:
        hf_logging.enable_progress_bar()
    assert "Loading weights" not in capfd.readouterr().err
    for cid in ("c0", "c1"):
        one, two = scored[1][cid], scored[2][cid]
        assert two.items is not None and len(two.items) == 5
        assert two.items == pytest.approx(one.items, abs=1e-6)
        assert abs(math.fsum(two.items) / 5 - two.value) < 1e-9

