"""Merge methods, compatibility checks, and the three merge paths (state dicts, in-memory, streaming)."""

from __future__ import annotations

import pytest
import torch

from mergemix_dagster.core.errors import CheckpointMismatchError, ConfigError, NonFiniteWeightsError
from mergemix_dagster.core.merge import (
    InMemoryMerger,
    check_compatible,
    get_method,
    known_methods,
    merge_checkpoints,
    merge_state_dicts,
)
from mergemix_dagster.core.merge.methods.dare import keep_mask
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.model import (
    TinyModelSpec,
    load_checkpoint,
    load_state_dict,
    new_tiny_llama,
    save_checkpoint,
    train_tokenizer,
)

SPEC = TinyModelSpec(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=48,
                     max_position_embeddings=64)
DOMAINS = ("code", "math", "prose")
MIX = Mixture(("prose", "code", "math"), (0.5, 0.2, 0.3))  # not in sorted order on purpose


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["def f(x): return x + 1", "the cat sat on the mat", "1 + 2 = 3"] * 5, vocab_size=300)


def _expert_state(base_state: dict, seed: int, scale: float = 0.02) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: (v + scale * torch.randn(v.shape, generator=g)).to(v.dtype) for k, v in base_state.items()}


@pytest.fixture(scope="module")
def states(tokenizer):
    """Saved-checkpoint-style state dicts (no tied lm_head.weight) of a base and three experts."""
    base = new_tiny_llama(SPEC, tokenizer, seed=0)
    base_state = {k: v.clone() for k, v in base.state_dict().items() if k != "lm_head.weight"}
    experts = {d: _expert_state(base_state, seed=i + 1) for i, d in enumerate(DOMAINS)}
    return base_state, experts


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer, states):
    root = tmp_path_factory.mktemp("ckpts")
    base_state, experts = states
    dirs = {}
    for name, state in [("base", base_state), *experts.items()]:
        model = new_tiny_llama(SPEC, tokenizer, seed=0)
        model.load_state_dict(state, strict=False)  # lm_head is tied to embed_tokens
        dirs[name] = save_checkpoint(model, tokenizer, root / name)
    return dirs


def _formula(base: dict, experts: dict, mixture: Mixture) -> dict:
    """Θ_base + Σ_k α_k (Θ_k − Θ_base), in float32, terms summed in sorted domain order."""
    out = {}
    for k, b in base.items():
        b32 = b.float()
        total = None
        for d in sorted(experts):
            term = mixture[d] * (experts[d][k].float() - b32)
            total = term if total is None else total + term
        out[k] = (b32 + total).to(b.dtype)
    return out


# ---- registry ----------------------------------------------------------------------------------


def test_registry():
    assert {"linear", "ties", "dare"} <= set(known_methods())
    with pytest.raises(ConfigError, match="known methods: .*linear"):
        get_method("slerp")
    with pytest.raises(ConfigError, match="bad options"):
        get_method("linear", density=0.5)
    assert get_method("ties").density == 0.2 and get_method("dare").drop_rate == 0.5


# ---- linear ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_linear_equals_the_formula_exactly(states, dtype):
    base, experts = states
    base = {k: v.to(dtype) for k, v in base.items()}
    experts = {d: {k: v.to(dtype) for k, v in s.items()} for d, s in experts.items()}
    merged = merge_state_dicts(base, experts, MIX)
    want = _formula(base, experts, MIX)
    assert list(merged) == list(base)
    for k in base:
        assert merged[k].dtype == dtype
        assert torch.equal(merged[k], want[k]), k


def test_vertex_reproduces_the_expert_exactly(states):
    base, experts = states
    # an expert far smaller than the base: Θ_base + (Θ_k − Θ_base) is not Θ_k in floating point
    far = {d: {k: v * 1e-7 * (i + 1) for k, v in base.items()} for i, d in enumerate(DOMAINS)}
    naive = far["math"]["model.embed_tokens.weight"] - base["model.embed_tokens.weight"]
    assert not torch.equal(base["model.embed_tokens.weight"] + naive, far["math"]["model.embed_tokens.weight"])
    for exp in (experts, far):
        for d in DOMAINS:
            merged = merge_state_dicts(base, exp, Mixture.vertex(DOMAINS, d))
            assert all(torch.equal(merged[k], exp[d][k]) for k in base)


def test_mixture_keys_must_match_experts(states):
    base, experts = states
    with pytest.raises(ConfigError, match="no expert for \\['sft'\\]"):
        merge_state_dicts(base, experts, Mixture.uniform(DOMAINS + ("sft",)))
    with pytest.raises(ConfigError, match="no weight for expert"):
        merge_state_dicts(base, experts, Mixture.uniform(DOMAINS[:2]))


# ---- ties and dare on hand-computed tensors ----------------------------------------------------

BASE = {"w": torch.ones(4)}
EXPERTS = {
    "a": {"w": torch.ones(4) + torch.tensor([3.0, -1.0, 0.5, 2.0])},
    "b": {"w": torch.ones(4) + torch.tensor([-2.0, -4.0, 1.0, 1.0])},
}


def test_ties_by_hand():
    # density 0.5 keeps 2 of 4: δ̂_a = [3, 0, 0, 2], δ̂_b = [-2, -4, 0, 0]
    half = Mixture(("a", "b"), (0.5, 0.5))
    # weighted [1.5,0,0,1] + [-1,-2,0,0] → signs [+,-,0,+]; disjoint means [3, -4, 0, 2]
    got = merge_state_dicts(BASE, EXPERTS, half, method="ties", density=0.5)["w"]
    assert torch.equal(got, torch.ones(4) + torch.tensor([3.0, -4.0, 0.0, 2.0]))
    skew = Mixture(("a", "b"), (0.25, 0.75))
    # weighted [.75,0,0,.5] + [-1.5,-3,0,0] → signs [-,-,0,+]; sums [-1.5,-3,0,.5] / [.75,.75,1,.25]
    got = merge_state_dicts(BASE, EXPERTS, skew, method="ties", density=0.5)["w"]
    assert torch.equal(got, torch.ones(4) + torch.tensor([-2.0, -4.0, 0.0, 2.0]))
    got = merge_state_dicts(BASE, EXPERTS, skew, method="ties", density=0.5, normalize=False)["w"]
    assert torch.equal(got, torch.ones(4) + torch.tensor([-1.5, -3.0, 0.0, 0.5]))
    # density 1: no trimming; at a vertex TIES gives the (untrimmed) expert
    got = merge_state_dicts(BASE, EXPERTS, Mixture(("a", "b"), (1.0, 0.0)), method="ties", density=1.0)["w"]
    assert torch.equal(got, EXPERTS["a"]["w"])


def test_dare_by_hand_and_seeded():
    base = {"w": torch.zeros(2000)}
    experts = {"a": {"w": torch.full((2000,), 0.5)}, "b": {"w": torch.full((2000,), -1.0)}}
    mix = Mixture(("a", "b"), (0.4, 0.6))
    got = merge_state_dicts(base, experts, mix, method="dare", drop_rate=0.5, seed=7)["w"]
    ma = keep_mask(torch.Size([2000]), 0.5, 7, "w", "a")
    mb = keep_mask(torch.Size([2000]), 0.5, 7, "w", "b")
    want = 0.4 * torch.where(ma, torch.tensor(1.0), torch.tensor(0.0)) + 0.6 * torch.where(mb, -2.0, 0.0)
    assert torch.equal(got, want)
    assert 0.45 < ma.float().mean() < 0.55 and not torch.equal(ma, mb)
    # deterministic under a seed, different with another one
    again = merge_state_dicts(base, experts, mix, method="dare", drop_rate=0.5, seed=7)["w"]
    other = merge_state_dicts(base, experts, mix, method="dare", drop_rate=0.5, seed=8)["w"]
    assert torch.equal(got, again) and not torch.equal(got, other)
    # drop_rate 0 is plain task arithmetic
    got = merge_state_dicts(BASE, EXPERTS, Mixture(("a", "b"), (0.25, 0.75)), method="dare", drop_rate=0.0)["w"]
    assert torch.equal(got, _formula(BASE, EXPERTS, Mixture(("a", "b"), (0.25, 0.75)))["w"])


# ---- compatibility checks ----------------------------------------------------------------------


def test_mismatches_are_named(states):
    base, experts = states
    name = "model.layers.1.mlp.up_proj.weight"

    def with_math(change):
        bad = {k: v.clone() for k, v in experts["math"].items()}
        change(bad)
        return {**experts, "math": bad}

    with pytest.raises(CheckpointMismatchError, match=f"'math'.*shape.*{name}|'math'.*{name}.*shape"):
        check_compatible(base, with_math(lambda s: s.__setitem__(name, torch.zeros(3, 3))))
    with pytest.raises(CheckpointMismatchError, match=f"'math' lacks parameter '{name}'"):
        check_compatible(base, with_math(lambda s: s.pop(name)))
    with pytest.raises(CheckpointMismatchError, match="'math' has parameter 'extra.weight'"):
        check_compatible(base, with_math(lambda s: s.__setitem__("extra.weight", torch.zeros(1))))
    with pytest.raises(CheckpointMismatchError, match=f"'math'.*{name}.*dtype"):
        check_compatible(base, with_math(lambda s: s.__setitem__(name, s[name].half())))

    def nan(s):
        s[name][0, 0] = float("nan")

    with pytest.raises(NonFiniteWeightsError, match=f"'math'.*{name}"):
        check_compatible(base, with_math(nan))
    with pytest.raises(NonFiniteWeightsError):
        merge_state_dicts(base, with_math(nan), MIX)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32}
    with pytest.raises(CheckpointMismatchError, match="'code'.*hidden_size"):
        check_compatible(base, experts, cfg, {"code": {**cfg, "hidden_size": 64}, "math": cfg, "prose": cfg})
    with pytest.raises(CheckpointMismatchError, match="'code'.*model_type"):
        check_compatible(base, experts, cfg, {"code": {**cfg, "model_type": "mistral"}})


def test_streaming_rejects_other_architecture(tmp_path, checkpoints, tokenizer):
    other = new_tiny_llama(TinyModelSpec(**{**SPEC.__dict__, "num_layers": 1}), tokenizer)
    odd = save_checkpoint(other, tokenizer, tmp_path / "odd")
    dirs = {"code": checkpoints["code"], "math": odd, "prose": checkpoints["prose"]}
    with pytest.raises(CheckpointMismatchError, match="'math'.*num_hidden_layers"):
        merge_checkpoints(checkpoints["base"], dirs, MIX, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- the three paths agree ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,options", [("linear", {}), ("ties", {"density": 0.3}), ("dare", {"drop_rate": 0.5, "seed": 3})]
)
def test_streaming_in_memory_and_state_dict_paths_agree(tmp_path, checkpoints, states, method, options):
    base, experts = states
    expert_dirs = {d: checkpoints[d] for d in DOMAINS}
    out = merge_checkpoints(checkpoints["base"], expert_dirs, MIX, tmp_path / "merged", method=method,
                            max_shard_size="30KB", **options)
    assert (out / "model.safetensors.index.json").exists() and (out / "config.json").exists()
    assert (out / "tokenizer.json").exists()
    streamed = load_state_dict(out)
    in_dicts = merge_state_dicts(base, experts, MIX, method=method, **options)
    assert set(streamed) == set(in_dicts)
    assert all(torch.equal(streamed[k], in_dicts[k]) for k in in_dicts)

    model, _ = load_checkpoint(checkpoints["base"])
    merger = InMemoryMerger(model, load_state_dict(checkpoints["base"]),
                            {d: load_state_dict(p) for d, p in expert_dirs.items()}, method=method, **options)
    merger.apply(MIX)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[k], in_dicts[k]) for k in in_dicts)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_in_memory_forward_equals_loaded_merge(tmp_path, checkpoints, tokenizer):
    expert_dirs = {d: checkpoints[d] for d in DOMAINS}
    out = merge_checkpoints(checkpoints["base"], expert_dirs, MIX, tmp_path / "merged")
    loaded, _ = load_checkpoint(out)
    model, _ = load_checkpoint(checkpoints["base"])
    base_state = {k: v.clone() for k, v in model.state_dict().items()}  # has the tied lm_head alias
    merger = InMemoryMerger(model, base_state, {d: load_state_dict(p) for d, p in expert_dirs.items()})
    x = torch.tensor([tokenizer("the cat sat on the mat")["input_ids"]])
    with torch.no_grad():
        base_logits = model(input_ids=x).logits.clone()
        merger.apply(MIX)
        assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)
        merger.apply(Mixture.vertex(MIX.domains, "math"))
        math_model, _ = load_checkpoint(checkpoints["math"])
        assert torch.equal(model(input_ids=x).logits, math_model(input_ids=x).logits)
        merger.restore_base()
        assert torch.equal(model(input_ids=x).logits, base_logits)
    with pytest.raises(ConfigError):
        merger.apply(Mixture.uniform(("code", "math")))


def test_merge_checkpoints_refuses_to_overwrite(tmp_path, checkpoints):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        merge_checkpoints(checkpoints["base"], {d: checkpoints[d] for d in DOMAINS}, MIX, tmp_path / "out")


# ---- the blocked streaming path ----------------------------------------------------------------


def _write_raw_checkpoint(directory, state: dict, shards: int = 2) -> None:
    """``state`` as ``shards`` safetensors files + index (no config.json), like a sharded HF save."""
    import json

    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    keys = sorted(state)
    parts = [keys[i::shards] for i in range(shards)]
    weight_map = {}
    for i, part in enumerate(parts, start=1):
        fname = f"model-{i:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k].contiguous() for k in part}, str(directory / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _raw_states(dtype):
    g = torch.Generator().manual_seed(11)
    base = {
        "a.weight": torch.randn(37, 29, generator=g),  # 1073 elements: many blocks + a remainder
        "b.bias": torch.randn(5, generator=g),  # shorter than one block
        "c.scale": torch.randn((), generator=g),  # 0-d
        "d.empty": torch.zeros(0, 3),  # no elements
    }
    base = {k: v.to(dtype) for k, v in base.items()}
    experts = {d: {k: (v.float() + 0.05 * torch.randn(v.shape, generator=g)).to(dtype) for k, v in base.items()}
               for d in DOMAINS}
    base["e.position_ids"] = torch.arange(7)  # not floating: copied from the base
    for s in experts.values():
        s["e.position_ids"] = torch.arange(7) + 1
    return base, experts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("block", [1, 64, 1 << 16])
def test_blocked_streaming_equals_the_formula(tmp_path, dtype, block):
    base, experts = _raw_states(dtype)
    _write_raw_checkpoint(tmp_path / "base", base)
    for d, s in experts.items():
        _write_raw_checkpoint(tmp_path / d, s, shards=3)
    out = merge_checkpoints(tmp_path / "base", {d: tmp_path / d for d in DOMAINS}, MIX, tmp_path / "out",
                            block_elements=block, max_shard_size="2KB")
    merged = load_state_dict(out)
    floats = {k: v for k, v in base.items() if v.is_floating_point()}
    float_experts = {d: {k: s[k] for k in floats} for d, s in experts.items()}
    c = torch.float64 if dtype == torch.float64 else torch.float32  # the computation dtype
    want = {}
    for k, b in floats.items():  # Θ_base + Σ_k α_k (Θ_k − Θ_base), terms summed in sorted domain order
        total = None
        for d in sorted(DOMAINS):
            term = MIX[d] * (experts[d][k].to(c) - b.to(c))
            total = term if total is None else total + term
        want[k] = (b.to(c) + total).to(dtype)
    in_memory = merge_state_dicts(floats, float_experts, MIX)
    assert set(merged) == set(base)
    for k, v in want.items():
        assert merged[k].dtype == dtype and merged[k].shape == v.shape
        bits = merged[k].reshape(-1).view(torch.uint8)
        assert torch.equal(bits, v.reshape(-1).view(torch.uint8)), k  # bit-identical, signed zeros included
        assert torch.equal(bits, in_memory[k].reshape(-1).view(torch.uint8)), k
    assert torch.equal(merged["e.position_ids"], base["e.position_ids"])
    # a vertex is the expert, bit for bit, through the blocked path too
    vert = merge_checkpoints(tmp_path / "base", {d: tmp_path / d for d in DOMAINS}, Mixture.vertex(DOMAINS, "math"),
                             tmp_path / "vertex", block_elements=block)
    got = load_state_dict(vert)
    assert all(torch.equal(got[k], experts["math"][k]) for k in floats)


def test_blocked_streaming_never_reads_a_whole_tensor(tmp_path, checkpoints, states, monkeypatch):
    from mergemix_dagster.core.merge import streaming

    def whole(self, key):
        raise AssertionError(f"whole-tensor read of {key}")

    monkeypatch.setattr(streaming._Checkpoint, "tensor", whole)
    out = merge_checkpoints(checkpoints["base"], {d: checkpoints[d] for d in DOMAINS}, MIX, tmp_path / "m",
                            block_elements=100)
    base, experts = states
    want = merge_state_dicts(base, experts, MIX)
    got = load_state_dict(out)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_sharded_output_is_a_valid_checkpoint(tmp_path, checkpoints, tokenizer):
    import json

    from safetensors import safe_open

    out = merge_checkpoints(checkpoints["base"], {d: checkpoints[d] for d in DOMAINS}, MIX, tmp_path / "m",
                            max_shard_size="20KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and sorted(p.name for p in out.glob("*.safetensors")) == files
    total = 0
    for f in files:
        with safe_open(str(out / f), framework="pt") as h:
            assert h.metadata() == {"format": "pt"}
            for k in h.keys():
                assert index["weight_map"][k] == f
                total += h.get_tensor(k).numel() * 4
    assert index["metadata"]["total_size"] == total
    model, _ = load_checkpoint(out)  # transformers loads it
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not list(tmp_path.glob(".m.tmp-*"))


@pytest.mark.parametrize("method", ["linear", "ties", "dare"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_streaming_rejects_non_finite_by_name(tmp_path, method, bad):
    base, experts = _raw_states(torch.float32)
    experts["math"]["a.weight"][3, 4] = bad
    _write_raw_checkpoint(tmp_path / "base", base)
    for d, s in experts.items():
        _write_raw_checkpoint(tmp_path / d, s)
    dirs = {d: tmp_path / d for d in DOMAINS}
    with pytest.raises(NonFiniteWeightsError, match="expert 'math': parameter 'a.weight' has 1 non-finite"):
        merge_checkpoints(tmp_path / "base", dirs, MIX, tmp_path / "out", method=method, block_elements=64)
    # also at a vertex of another expert (the bad one does not reach the output there)
    with pytest.raises(NonFiniteWeightsError, match="'math'.*'a.weight'"):
        merge_checkpoints(tmp_path / "base", dirs, Mixture.vertex(DOMAINS, "code"), tmp_path / "out", method=method)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))
    merge_checkpoints(tmp_path / "base", dirs, MIX, tmp_path / "out", method=method, check_finite=False)


def test_streaming_rejects_a_truncated_file(tmp_path):
    base, experts = _raw_states(torch.float32)
    _write_raw_checkpoint(tmp_path / "base", base)
    for d, s in experts.items():
        _write_raw_checkpoint(tmp_path / d, s)
    shard = sorted((tmp_path / "code").glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-16])
    with pytest.raises(CheckpointMismatchError, match="outside the file"):
        merge_checkpoints(tmp_path / "base", {d: tmp_path / d for d in DOMAINS}, MIX, tmp_path / "out")
    with pytest.raises(ConfigError, match="block_elements"):
        merge_checkpoints(tmp_path / "base", {d: tmp_path / d for d in DOMAINS}, MIX, tmp_path / "o2", block_elements=0)


def test_streaming_accepts_finite_inputs_whose_sums_overflow(tmp_path):
    # every block sum overflows float32, but every input is finite: the exact check lets it through
    big = {"w": torch.full((300,), 3.0e38)}
    experts = {d: {"w": torch.full((300,), 3.0e38 - i * 1e31)} for i, d in enumerate(DOMAINS)}
    _write_raw_checkpoint(tmp_path / "base", big, shards=1)
    for d, s in experts.items():
        _write_raw_checkpoint(tmp_path / d, s, shards=1)
    dirs = {d: tmp_path / d for d in DOMAINS}
    for i, mix in enumerate([MIX, Mixture.vertex(DOMAINS, "math")]):
        out = merge_checkpoints(tmp_path / "base", dirs, mix, tmp_path / f"out{i}", block_elements=64)
        assert torch.equal(load_state_dict(out)["w"], merge_state_dicts(big, experts, mix)["w"])


@pytest.mark.parametrize("method,options", [("ties", {"density": 0.3}), ("dare", {"drop_rate": 0.4, "seed": 5})])
def test_chunked_combine_equals_one_piece(states, monkeypatch, method, options):
    from mergemix_dagster.core.merge.methods import dare
    from mergemix_dagster.core.merge.methods import ties

    base, experts = states
    whole = merge_state_dicts(base, experts, MIX, method=method, **options)
    for module in (ties, dare):
        monkeypatch.setattr(module, "chunk_elements", lambda t: 7)  # many chunks + a remainder
    chunked = merge_state_dicts(base, experts, MIX, method=method, **options)
    assert all(torch.equal(chunked[k].view(-1).view(torch.uint8), whole[k].view(-1).view(torch.uint8)) for k in whole)
