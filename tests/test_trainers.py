"""Trainers: an expert trained by a team's own command through Dagster Pipes, and the checks that guard it.

The command is ``tests/team_trainer.py`` (plain HF + torch, not the project's loop), run as a real
subprocess by ``PipesSubprocessClient`` inside a real Dagster materialization of ``expert_checkpoint``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import pytest
import torch
import yaml

from mergemix_dagster.resources import layout
from mergemix_dagster.assets.experts import build_expert_assets
from mergemix_dagster.core.data.corpora import corpus_fingerprint, write_corpus
from mergemix_dagster.core.errors import ConfigError, TrainerOutputError
from mergemix_dagster.core.training.model import (
    TinyModelSpec, checkpoint_fingerprint, load_state_dict, new_tiny_llama, save_checkpoint, train_tokenizer,
)
from mergemix_dagster.core.training.trained_checkpoint import add_base_tokenizer, validate_trained_checkpoint
from mergemix_dagster.assets.partitions import build_partitions
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.resources.trainers import render_command
from mergemix_dagster.core.settings import TrainerSettings, load_settings

TEAM_TRAINER = Path(__file__).with_name("team_trainer.py")
SPEC = TinyModelSpec(vocab_size=320, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                     max_position_embeddings=64)
DOCS = {
    "math": [f"{a} + {b} = {a + b}." for a in range(60) for b in range(6)],
    "code": [f"def f{i}(x):\n    return x * {i}\n" for i in range(300)],
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store holding a stage-s0 base and two domain corpora, as the upstream assets leave them."""
    root = tmp_path_factory.mktemp("trainers")
    store = CheckpointStore(root=str(root / "store"))
    tokenizer = train_tokenizer([d for docs in DOCS.values() for d in docs], vocab_size=320)
    base = save_checkpoint(new_tiny_llama(SPEC, tokenizer, seed=0), tokenizer, root / "base")
    store.put_dir(base, layout.base_key("s0", "tiny"))
    store.put_json(layout.base_pointer("s0"), {"key": layout.base_key("s0", "tiny"), "fingerprint": checkpoint_fingerprint(base)})
    for domain, docs in DOCS.items():
        fp = corpus_fingerprint(docs)
        write_corpus(docs, root / f"{domain}.jsonl.gz")
        store.put_file(root / f"{domain}.jsonl.gz", layout.corpus_key(domain, fp))
        store.put_json(layout.corpus_pointer(domain), {"key": layout.corpus_key(domain, fp), "fingerprint": fp})
    return root, store, base


def config(root: Path, name: str, extra: str = "") -> Path:
    command = (f"{sys.executable} {TEAM_TRAINER} --init {{base}} --mixture {{mixture_json}} --tokens {{tokens}} "
               f"--lr {{learning_rate}} --out {{output}} {extra}")
    raw = {
        "home": str(root / "home"),
        "store_root": str(root / "store"),
        "domains": [{"name": "math"}, {"name": "code"}],
        "experts": {"tokens": 384, "seq_len": 32, "batch_size": 4, "learning_rate": 0.05, "device": "cpu"},
        "trainer": {"kind": "command", "command": command},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def materialize_expert(path: Path, store: CheckpointStore, instance, domain: str):
    settings = load_settings(str(path))
    assets = build_expert_assets(build_partitions(settings))
    return dg.materialize(
        assets,
        partition_key=dg.MultiPartitionKey({"domain": domain, "stage": "s0"}),
        resources={"settings": PipelineSettings(config=str(path)), "store": store,
                   "database": EvaluationDatabase(path=settings.database_path)},
        instance=instance,
        raise_on_error=False,
    )


def test_expert_trains_through_a_team_command_via_pipes(stored, tmp_path):
    root, store, base = stored
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("stage", ["s0"])
        good = materialize_expert(config(root, "good"), store, instance, "math")
        assert good.success
        messages = [e.user_message for e in instance.all_logs(good.run_id)]
        progress = [m for m in messages if "team step" in m]
        assert progress and "team step 3/3 tokens 384" in progress[-1]  # the command's Pipes logs, in the event log
        meta = good.asset_materializations_for_node("expert_checkpoint")[0].metadata
        assert meta["trainer"].value == "command" and meta["tokens_trained"].value == 384
        assert meta["final_loss"].value > 0 and meta["tokenizer_from_base"].value is True
        pointer = store.get_json(layout.expert_pointer("s0", "math"))
        expert = store.get_dir(pointer["key"])
        assert (expert / "tokenizer.json").exists()  # the command wrote none: the base's was added
        trained, start = load_state_dict(expert), load_state_dict(base)
        assert any(not torch.equal(trained[k], start[k]) for k in start)  # the command's weights, not the base

        bad = materialize_expert(config(root, "nan", "--corrupt nan"), store, instance, "code")
        assert not bad.success
        error = bad.get_step_failure_events()[0].event_specific_data.error
        text = str(error.to_string() if hasattr(error, "to_string") else error)
        assert "TrainerOutputError" in text and "non-finite" in text
        assert not store.exists(layout.expert_pointer("s0", "code"))  # nothing was accepted


def test_rejects_wrong_shapes_nan_and_missing_output(stored, tmp_path):
    _, _, base = stored
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    model.resize_token_embeddings(SPEC.vocab_size + 8)
    model.save_pretrained(tmp_path / "shape")
    with pytest.raises(TrainerOutputError, match="CheckpointMismatchError"):
        validate_trained_checkpoint(tmp_path / "shape", base)

    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[1, 2] = float("inf")
    model.save_pretrained(tmp_path / "inf")
    with pytest.raises(TrainerOutputError, match="up_proj.*non-finite"):
        validate_trained_checkpoint(tmp_path / "inf", base)
    with pytest.raises(TrainerOutputError, match="no checkpoint directory"):
        validate_trained_checkpoint(tmp_path / "nothing", base)

    good = tmp_path / "good"
    AutoModelForCausalLM.from_pretrained(base).save_pretrained(good)
    validate_trained_checkpoint(good, base)
    assert "tokenizer.json" in add_base_tokenizer(good, base) and add_base_tokenizer(good, base) == []


def test_command_template_contract():
    argv = render_command("torchrun --nproc_per_node 8 train.py --init {base} --out {output}",
                          {"base": "/my models/base", "output": "/o"})
    assert argv == ["torchrun", "--nproc_per_node", "8", "train.py", "--init", "/my models/base", "--out", "/o"]
    with pytest.raises(ValueError, match="unknown placeholders"):
        TrainerSettings(kind="command", command="t --init {base} --mixture {mixture_json} --out {output} {gpu}")
    with pytest.raises(ValueError, match="needs trainer.command"):
        TrainerSettings(kind="command")
    with pytest.raises(ValueError, match=r"must use \{base\}"):
        TrainerSettings(kind="command", command="train.py --out {output}")
    assert TrainerSettings().kind == "embedded"


def test_embedded_trainer_is_the_default_and_trains_in_process(stored, tmp_path):
    root, store, base = stored
    path = config(root, "embedded")
    raw = yaml.safe_load(path.read_text())
    del raw["trainer"]
    raw["home"] = str(tmp_path / "home")
    path.write_text(yaml.safe_dump(raw))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("stage", ["s0"])
        result = materialize_expert(path, store, instance, "code")
        assert result.success
        meta = result.asset_materializations_for_node("expert_checkpoint")[0].metadata
        assert meta["trainer"].value == "embedded" and meta["tokens_trained"].value == 384
        assert build_expert_assets(build_partitions(load_settings(str(path))))[0].op.pool == "mergemix_training"
        assert meta["final_loss"].value < meta["first_loss"].value
        lines = [e.user_message for e in instance.all_logs(result.run_id) if "code step" in e.user_message]
        assert lines and "step 3/3 tokens 384" in lines[-1] and "ETA" in lines[-1]


# ---- cluster trainers: specs only (no cluster here) ----------------------------------------------


def test_kubernetes_pod_spec_from_settings():
    from dagster_k8s.pipes import build_pod_body

    from mergemix_dagster.resources.trainers import k8s_pod_spec
    from mergemix_dagster.core.settings import KubernetesTrainerSettings

    k = KubernetesTrainerSettings(image="team/trainer:1", gpus=8, memory="900Gi", node_selector={"pool": "h100"},
                                  tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                                  service_account="trainer")
    pod = build_pod_body("mm-expert", k.image, ["torchrun", "train.py"], {"A": "1"}, None, k8s_pod_spec(k))
    container = pod.spec.containers[0]
    assert container.image == "team/trainer:1"
    assert [*(container.command or []), *(container.args or [])] == ["torchrun", "train.py"]
    assert container.resources.limits == {"nvidia.com/gpu": "8", "memory": "900Gi"}
    assert pod.spec.node_selector == {"pool": "h100"} and pod.spec.service_account_name == "trainer"
    assert pod.spec.tolerations[0].key == "gpu" and pod.spec.restart_policy == "Never"


def test_ecs_run_task_request_is_valid_for_the_ecs_api():
    import boto3
    from botocore.validate import ParamValidator

    from mergemix_dagster.resources.trainers import ecs_run_task_params
    from mergemix_dagster.core.settings import EcsTrainerSettings

    e = EcsTrainerSettings(cluster="gpu", task_definition="trainer:3", subnets=["subnet-1"], security_groups=["sg-1"],
                           gpus=4)
    params = ecs_run_task_params(e, ["torchrun", "train.py", "--out", "s3://b/x"], {"NCCL_DEBUG": "WARN"})
    shape = boto3.session.Session(region_name="us-east-1").client("ecs")._service_model.operation_model("RunTask").input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()
    override = params["overrides"]["containerOverrides"][0]
    assert override["command"][-1] == "s3://b/x" and override["resourceRequirements"] == [{"type": "GPU", "value": "4"}]


def test_cluster_trainers_need_an_s3_store(stored, tmp_path):
    from mergemix_dagster.core.training.loop import TrainRecipe
    from mergemix_dagster.resources.trainers import TrainJob, trainer_for

    _, store, base = stored
    settings = TrainerSettings(kind="kubernetes", command="t --init {base} --mixture {mixture_json} --out {output}",
                               kubernetes={"image": "team/trainer:1"})
    job = TrainJob("r", base, {"math": 1.0}, {"math": tmp_path / "m.jsonl.gz"}, TrainRecipe(tokens=10), uris={"base": "x"})
    with pytest.raises(ConfigError, match="s3:// store_root"):
        trainer_for(settings, store).train(None, job, tmp_path)


def test_every_trainer_kind_has_one_registered_trainer():
    """A kind named in the settings (core) has its module in resources/trainers/, and the other way round."""
    from typing import get_args

    from mergemix_dagster.core.settings import TrainerKind
    from mergemix_dagster.resources.trainers import known_kinds

    assert sorted(get_args(TrainerKind)) == known_kinds()
