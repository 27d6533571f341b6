"""The experts' task vectors reported by every optimize run (steps/task_vectors.py): read lazily from the store,
the same numbers as the validation study's in-memory computation, and printed in the stage report."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from mergemix_dagster.core.evaluation.fidelity import task_vector_diagnostics
from mergemix_dagster.core.report import StageReport, render_markdown
from mergemix_dagster.core.training.model import checkpoint_fingerprint, load_state_dict
from mergemix_dagster.resources import CheckpointStore, layout
from mergemix_dagster.steps.task_vectors import as_json, markdown, stage_task_vectors


def _save(model, path, store, key, pointer):
    model.save_pretrained(path, safe_serialization=True)
    store.put_dir(path, key)
    store.put_json(pointer, {"key": key, "fingerprint": checkpoint_fingerprint(store.get_dir(key))}, overwrite=True)
    return store.get_dir(key)


def test_stage_task_vectors_match_the_in_memory_diagnostics(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config)
    store = CheckpointStore(root=str(tmp_path / "store"))
    dirs = {"base": _save(base, tmp_path / "b", store, "stages/s0/base/v1", layout.base_pointer("s0"))}
    domains = ("math", "code", "web")
    code_params: list[torch.Tensor] = []
    for i, d in enumerate(domains):
        expert = LlamaForCausalLM(config)
        expert.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in expert.parameters():
                p.add_(torch.randn_like(p) * 0.01 * (i + 1))
            if d == "web":  # web's update is code's, reversed: cosine -1 with code
                for p, q, b in zip(expert.parameters(), code_params, base.parameters()):
                    p.copy_(2 * b - q)
        if d == "code":
            code_params = [p.detach().clone() for p in expert.parameters()]
        dirs[d] = _save(expert, tmp_path / d, store, f"stages/s0/experts/{d}/v1", layout.expert_pointer("s0", d))

    lazy = stage_task_vectors(store, "s0", domains)
    eager = task_vector_diagnostics(load_state_dict(dirs["base"]), {d: load_state_dict(dirs[d]) for d in domains})
    assert lazy.domains == domains
    assert lazy.cosine == pytest.approx(eager.cosine, abs=1e-12)
    assert lazy.relative_update == pytest.approx(eager.relative_update, abs=1e-12)
    assert lazy.cosine[1, 2] == pytest.approx(-1.0, abs=1e-9)
    assert lazy.relative_update["code"] == pytest.approx(lazy.relative_update["web"], rel=1e-6)
    assert lazy.relative_update["code"] > lazy.relative_update["math"] > 0

    payload = as_json(lazy)
    table = markdown(payload)
    assert table.splitlines()[0] == "| | math | code | web | ‖Δ‖/‖base‖ |"
    assert "| code | " in table and "-1.000" in table
    assert math.isclose(float(table.splitlines()[2].split("|")[-2]), lazy.relative_update["math"], rel_tol=1e-3)
    text = render_markdown(StageReport("s0", pd.DataFrame(), {}, pd.DataFrame(), task_vectors=table))
    assert "## Task vectors (expert − base)" in text and table in text
    assert "Task vectors" not in render_markdown(StageReport("s0", pd.DataFrame(), {}, pd.DataFrame()))
