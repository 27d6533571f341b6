"""Candidate evaluation through Dagster's executors, and evaluators other than the embedded one.

- ``candidate_evaluations`` is a graph-backed asset whose scoring op fans out over chunks of candidates: run by
  the **multiprocess executor** (2 processes, chunks of 5 of the smoke stage's 9 models), it writes the rows the
  session's in-process run wrote; after a simulated kill (rows of 3 candidates gone, the stored scores of 2 of
  them gone too) a rerun scores only those 2.
- The ``command`` evaluator runs the plain ``lm_eval`` command line on a merged candidate written to disk by
  the streaming merge; its scores equal the embedded evaluator's (in-memory merge, same tasks) within 1e-6.
- The cluster evaluators' pod spec and RunTask request are tested like the trainers' (no cluster here).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mergemix_dagster.assets.evaluations import build_evaluation_assets
from mergemix_dagster.assets.partitions import build_partitions
from mergemix_dagster.core.errors import ConfigError, EvaluatorOutputError
from mergemix_dagster.core.evaluation.harness import TaskSpec
from mergemix_dagster.core.evaluation.lm_eval_results import read_lm_eval_scores
from mergemix_dagster.core.evaluation.workers import ProxyJob, ScorerSpec, open_scorer
from mergemix_dagster.core.settings import EvaluatorSettings, load_settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.evaluators import CommandEvaluator, evaluator_for
from mergemix_dagster.resources.pools import pools_from
from mergemix_dagster.resources.settings import PipelineSettings

KEY = ["candidate_id", "task", "metric"]
CONFIG_VAR = "MERGEMIX_TEST_FANOUT_CONFIG"


def fanout_job() -> dg.JobDefinition:
    """The evaluation asset's job, rebuilt in each process of the multiprocess executor (``reconstructable``)."""
    path = os.environ[CONFIG_VAR]
    s = load_settings(path)
    defs = dg.Definitions(
        assets=build_evaluation_assets(build_partitions(s), pools_from(s)),
        jobs=[dg.define_asset_job("fanout_job", selection=["candidate_evaluations"])],
        resources={"settings": PipelineSettings(config=path), "store": CheckpointStore(root=s.store_uri),
                   "database": EvaluationDatabase(path=s.database_path)},
    )
    return defs.resolve_job_def("fanout_job")


def _rows(database: EvaluationDatabase):
    frame = database.evaluations("s0")
    return frame[frame["kind"].isin(["seed", "base"])].sort_values(KEY).reset_index(drop=True)


def _same_rows(got, want) -> None:
    assert not got.duplicated(KEY).any()
    assert got[KEY].equals(want[KEY])
    assert (got["value"] - want["value"]).abs().max() <= 1e-9
    assert got["evaluation_fingerprint"].equals(want["evaluation_fingerprint"])
    assert got["model_fingerprint"].equals(want["model_fingerprint"])


@pytest.fixture
def fanout_config(smoke_run, pipeline_config, tmp_path) -> Path:
    """The smoke stage's store copied without its stored scores, a fresh database, chunks of 5 models."""
    settings, *_ = smoke_run
    store = tmp_path / "store"
    shutil.copytree(settings.store_uri, store, ignore=lambda folder, names: ["scores"] if "scores" in names else [])
    raw = yaml.safe_load(Path(pipeline_config).read_text())
    raw.update(home=str(tmp_path / "home"), store_root=str(store), database=str(tmp_path / "fanout.duckdb"))
    raw["evaluator"] = {"chunk_size": 5}
    path = tmp_path / "fanout.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_multiprocess_executor_writes_the_in_process_rows_and_a_rerun_scores_only_what_is_missing(
        smoke_run, fanout_config, tmp_path, monkeypatch):
    settings, *_ = smoke_run
    in_process = _rows(EvaluationDatabase(path=settings.database_path))
    s = load_settings(str(fanout_config))
    database, store = EvaluationDatabase(path=s.database_path), CheckpointStore(root=s.store_uri)
    monkeypatch.setenv(CONFIG_VAR, str(fanout_config))
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        instance.add_dynamic_partitions("stage", ["s0"])
        result = dg.execute_job(
            dg.build_reconstructable_job("tests.test_eval_fanout", "fanout_job",
                                         reconstructor_working_directory=str(Path(__file__).parents[1])), instance,
            run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}},
            tags={"dagster/partition": "s0"},
        )
        assert result.success
        events = instance.all_logs(result.run_id)
        assert any("multiprocess executor" in (e.user_message or "") for e in events)
        chunk_steps = {e.step_key for e in events if e.step_key and "score_candidate_chunk" in e.step_key}
        assert len(chunk_steps) == 2  # 9 models in chunks of 5: two steps the executor scheduled
        pids = {e.dagster_event.pid for e in events if e.step_key in chunk_steps and e.dagster_event
                and e.dagster_event.event_type_value == "STEP_START"}
        assert len(pids) == 2 and os.getpid() not in pids  # each chunk ran in a process of its own
        _same_rows(_rows(database), in_process)

        # a run killed in the middle of the fan-out: 3 candidates have no rows, 2 of them no stored scores
        lost = sorted(set(in_process["candidate_id"]) - {"base"})[:3]
        with database.connect() as con:
            con.execute("DELETE FROM evaluations WHERE candidate_id IN (SELECT unnest(?))", [lost])
        for cid in lost[:2]:
            for key in store.list_keys(f"stages/s0/scores/{cid}/"):
                os.remove(Path(s.store_uri) / key)
        again = dg.materialize(
            build_evaluation_assets(build_partitions(s)), partition_key="s0", instance=instance,
            resources={"settings": PipelineSettings(config=str(fanout_config)), "store": store, "database": database},
        )
        meta = again.asset_materializations_for_node("candidate_evaluations")[0].metadata
        assert meta["candidates_scored_now"].value == 2  # the third was scored before the kill: only written
        _same_rows(_rows(database), in_process)


# ---- the command evaluator: plain lm_eval on a merged candidate on disk --------------------------------------

LM_EVAL = Path(sys.executable).with_name("lm_eval")
LM_EVAL_COMMAND = (
    f"env -C {{tasks_dir}} {LM_EVAL} --model hf --model_args pretrained={{model}},dtype=float32 --tasks {{tasks}} "
    "--include_path {tasks_dir} --limit {limit} --batch_size {batch_size} --device cpu --output_path {output} "
    "--log_samples"
)  # env -C: the bundled task YAML name their data files relative to their folder


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    from mergemix_dagster.core.training.model import TinyModelSpec, new_tiny_llama, save_checkpoint, train_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    tokenizer = train_tokenizer(["def f(x): return x + 1", "the cat sat on the mat", "1 + 2 = 3"] * 5, vocab_size=300)
    spec = TinyModelSpec(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=48,
                         max_position_embeddings=64)
    return {d: str(save_checkpoint(new_tiny_llama(spec, tokenizer, seed=i), tokenizer, root / d))
            for i, d in enumerate(("base", "code", "math"))}


def test_command_evaluator_runs_plain_lm_eval_and_finds_the_embedded_scores(tiny_checkpoints, tmp_path):
    dirs = tiny_checkpoints
    tasks = (TaskSpec("mm_facts", "knowledge", "gold_prob"), TaskSpec("mm_math", "math", "gold_prob"))
    spec = ScorerSpec(dirs["base"], {"code": dirs["code"], "math": dirs["math"]}, tasks, limit=5, device="cpu")
    job = ProxyJob("c0", {"code": 0.3, "math": 0.7}, str(tmp_path / "lm_eval" / "c0.json"))
    embedded = open_scorer(spec).score(ProxyJob("c0", job.alpha))

    evaluator = evaluator_for(EvaluatorSettings(kind="command", command=LM_EVAL_COMMAND))
    assert isinstance(evaluator, CommandEvaluator)

    @dg.op
    def score_with_command(context) -> list:
        return evaluator.score(context, spec, job, tmp_path / "work", "s0")

    result = dg.GraphDefinition("g", node_defs=[score_with_command]).execute_in_process()
    command = result.output_for_node("score_with_command")
    assert [(c.task, c.metric) for c in command] == [(e.task, e.metric) for e in embedded]
    for c, e in zip(command, embedded):
        assert abs(c.value - e.value) <= 1e-6, (c.task, c.value, e.value)
        assert c.stderr == pytest.approx(e.stderr, abs=1e-6)
        assert c.items is not None and c.items == pytest.approx(e.items, abs=1e-6)
    assert not (tmp_path / "work").exists()  # the merged candidate is removed after scoring
    kept = json.loads(Path(job.results_path).read_text())  # lm-eval's own results JSON, kept like the embedded one
    assert kept["results"]["mm_math"]["gold_prob,none"] == command[1].value


def _results(tmp_path: Path, results: dict) -> Path:
    out = tmp_path / "out" / "model"
    out.mkdir(parents=True)
    (out / "results_2026.json").write_text(json.dumps({"results": results}))
    return tmp_path / "out"


def test_results_are_validated_by_name(tmp_path):
    tasks = (TaskSpec("mm_facts", "knowledge", "gold_prob"), TaskSpec("mm_math", "math", "acc"))
    with pytest.raises(EvaluatorOutputError, match="no lm-eval results JSON"):
        read_lm_eval_scores(tmp_path / "nothing", tasks)
    good = {"mm_facts": {"gold_prob,none": 0.5, "gold_prob_stderr,none": 0.1}, "mm_math": {"acc,none": 0.25}}
    scores = read_lm_eval_scores(_results(tmp_path / "a", good), tasks)
    assert [(s.task, s.value, s.stderr) for s in scores] == [("mm_facts", 0.5, 0.1), ("mm_math", 0.25, None)]
    with pytest.raises(EvaluatorOutputError, match="task 'mm_math' is missing"):
        read_lm_eval_scores(_results(tmp_path / "b", {"mm_facts": good["mm_facts"]}), tasks)
    with pytest.raises(EvaluatorOutputError, match="has no metric 'acc'"):
        read_lm_eval_scores(_results(tmp_path / "c", good | {"mm_math": {"acc_norm,none": 0.3}}), tasks)
    with pytest.raises(EvaluatorOutputError, match="not a finite number"):
        read_lm_eval_scores(_results(tmp_path / "d", good | {"mm_math": {"acc,none": math.nan}}), tasks)


# ---- settings: named errors at load, the evaluator in the fingerprint -----------------------------------------


def test_evaluator_settings_fail_at_load_and_enter_the_fingerprint_only_when_not_embedded(pipeline_config, tmp_path):
    from mergemix_dagster.assets.versions import SETTINGS_READ_BY
    from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints

    from typing import get_args

    from mergemix_dagster.core.settings import EvaluatorKind
    from mergemix_dagster.resources.evaluators import EVALUATORS

    assert sorted(get_args(EvaluatorKind)) == sorted([*EVALUATORS, "embedded"])  # every kind has its evaluator
    with pytest.raises(ValueError, match="needs evaluator.command"):
        EvaluatorSettings(kind="command")
    with pytest.raises(ValueError, match=r"must use \{model\} and \{output\}"):
        EvaluatorSettings(kind="command", command="lm_eval --tasks {tasks}")
    with pytest.raises(ValueError, match="unknown placeholders"):
        EvaluatorSettings(kind="command", command="run {model} {output} {gpu}")
    with pytest.raises(ValueError, match="needs evaluator.kubernetes.image"):
        EvaluatorSettings(kind="kubernetes", command="run {model} {output}")

    raw = yaml.safe_load(Path(pipeline_config).read_text())
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw | {"evaluator": {"kind": "command"}}))
    with pytest.raises(ConfigError, match="needs evaluator.command"):  # when the settings load: before training
        load_settings(str(path))

    default = load_settings(str(pipeline_config))
    assert "evaluator" not in default.model_dump()  # the default dumps nothing: cache keys of old homes hold
    variants = {}
    for name, evaluator in {"chunks": {"chunk_size": 2},
                            "command": {"kind": "command", "command": "lm_eval {model} {output}"}}.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw | {"evaluator": evaluator}))
        variants[name] = load_settings(str(path))
    assert evaluation_fingerprints(variants["chunks"], True) == evaluation_fingerprints(default, True)
    assert SETTINGS_READ_BY["candidate_evaluations"](variants["chunks"]) == SETTINGS_READ_BY["candidate_evaluations"](default)
    command = evaluation_fingerprints(variants["command"], True)
    assert all(command[t] != fp for t, fp in evaluation_fingerprints(default, True).items())
    assert SETTINGS_READ_BY["candidate_evaluations"](variants["command"]) != SETTINGS_READ_BY["candidate_evaluations"](default)


# ---- cluster evaluators: specs only (no cluster here) -----------------------------------------------------------


def test_kubernetes_evaluator_pod_spec():
    from dagster_k8s.pipes import build_pod_body

    from mergemix_dagster.resources.trainers import k8s_pod_spec

    e = EvaluatorSettings(kind="kubernetes", command="lm_eval --model vllm --model_args pretrained={model} "
                          "--tasks {tasks} --output_path {output}",
                          kubernetes={"image": "team/eval:1", "gpus": 1, "node_selector": {"pool": "h100"},
                                      "service_account": "evaluator"})
    pod = build_pod_body("mm-eval", e.kubernetes.image, ["lm_eval", "--model", "vllm"], {}, None, k8s_pod_spec(e.kubernetes))
    container = pod.spec.containers[0]
    assert container.image == "team/eval:1" and container.resources.limits == {"nvidia.com/gpu": "1"}
    assert pod.spec.node_selector == {"pool": "h100"} and pod.spec.service_account_name == "evaluator"
    assert e.identity() == {"kind": "kubernetes", "command": e.command, "image": "team/eval:1"}


def test_ecs_evaluator_run_task_request_is_valid_for_the_ecs_api(tmp_path):
    import boto3
    from botocore.validate import ParamValidator

    from mergemix_dagster.resources.trainers import ecs_run_task_params

    e = EvaluatorSettings(kind="ecs", command="lm_eval --model_args pretrained={model} --output_path {output}",
                          ecs={"cluster": "gpu", "task_definition": "team-eval:2", "container_name": "eval",
                               "subnets": ["subnet-1"], "security_groups": ["sg-1"]})
    params = ecs_run_task_params(e.ecs, ["lm_eval", "--output_path", "s3://b/o"], {"HF_HUB_OFFLINE": "1"})
    shape = boto3.session.Session(region_name="us-east-1").client("ecs")._service_model.operation_model("RunTask").input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()
    assert params["overrides"]["containerOverrides"][0]["name"] == "eval"

    spec = ScorerSpec("b", {}, (TaskSpec("mm_math", "math"),))
    with pytest.raises(ConfigError, match="s3:// store_root"):
        evaluator_for(e, CheckpointStore(root=str(tmp_path / "store"))).score(None, spec, ProxyJob("c", None), tmp_path / "w", "s0")
