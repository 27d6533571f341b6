"""Model, tokenizer, checkpoints and the training loop (tiny models, CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mergemix_dagster.core.errors import ConfigError, CorpusError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.model import (
    TinyModelSpec,
    checkpoint_fingerprint,
    load_checkpoint,
    load_state_dict,
    new_tiny_llama,
    resolve_device,
    save_checkpoint,
    train_tokenizer,
)
from mergemix_dagster.core.training.loop import TrainRecipe, get_batch, progress_interval, sample_domains, train

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "def add(a, b):\n    return a + b\n",
    "2 + 2 = 4; 3 * 7 = 21; 10 / 5 = 2.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Ünïcödé text — with émojis 🙂 and tabs\tand newlines\n",
] * 4
SPEC = TinyModelSpec(vocab_size=320, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                     max_position_embeddings=64)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=320)


@pytest.fixture()
def tiny(tokenizer):
    return new_tiny_llama(SPEC, tokenizer, seed=0)


def _cpu(recipe_kwargs=None, **kw) -> TrainRecipe:
    base = dict(tokens=8 * 16 * 40, seq_len=16, batch_size=8, learning_rate=3e-3, device="cpu", seed=0)
    base.update(kw)
    return TrainRecipe(**base)


# ---- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_round_trips_and_has_special_tokens(tokenizer):
    for text in TEXTS[:5] + ["unseen wörds 12345 ∑"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == "<|eos|>" and tokenizer.eos_token_id is not None
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.pad_token_id is not None
    assert tokenizer.bos_token_id is not None and tokenizer.unk_token_id is not None
    assert len({tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id}) == 3
    assert len(tokenizer) <= 320


def test_tokenizer_is_deterministic(tokenizer):
    again = train_tokenizer(iter(TEXTS), vocab_size=320)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert again("capital of France")["input_ids"] == tokenizer("capital of France")["input_ids"]


# ---- model and checkpoints ---------------------------------------------------------------------


def test_new_tiny_llama_is_seeded(tokenizer):
    a, b, c = (new_tiny_llama(SPEC, tokenizer, seed=s) for s in (0, 0, 1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])
    assert a.lm_head.weight is a.model.embed_tokens.weight  # tied
    assert a.config.eos_token_id == tokenizer.eos_token_id


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_checkpoint_round_trip_and_fingerprint(tiny, tokenizer, tmp_path):
    d = save_checkpoint(tiny, tokenizer, tmp_path / "ckpt")
    assert (d / "config.json").exists() and (d / "model.safetensors").exists()
    fp = checkpoint_fingerprint(d)
    assert fp == checkpoint_fingerprint(d) and len(fp) == 64
    assert checkpoint_fingerprint(save_checkpoint(tiny, tokenizer, tmp_path / "again")) == fp

    model, tok = load_checkpoint(d)
    want = tiny.state_dict()
    got = model.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert tok.get_vocab() == tokenizer.get_vocab() and tok.eos_token_id == tokenizer.eos_token_id

    state = load_state_dict(d)
    assert "lm_head.weight" not in state  # tied: stored once
    assert set(state) == set(want) - {"lm_head.weight"}
    assert all(torch.equal(state[k], want[k]) for k in state)

    with pytest.raises(FileExistsError):
        save_checkpoint(tiny, tokenizer, d)


def test_sharded_checkpoint(tiny, tokenizer, tmp_path):
    d = save_checkpoint(tiny, tokenizer, tmp_path / "sharded", max_shard_size="20KB")
    assert (d / "model.safetensors.index.json").exists()
    assert len(list(d.glob("*.safetensors"))) > 1
    state = load_state_dict(d)
    want = tiny.state_dict()
    assert all(torch.equal(state[k], want[k]) for k in state)
    checkpoint_fingerprint(d)
    model, _ = load_checkpoint(d)
    assert torch.equal(model.model.norm.weight, tiny.model.norm.weight)


def test_interrupted_save_leaves_nothing(tiny, tokenizer, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(tokenizer), "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tiny, tokenizer, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind either


# ---- training ----------------------------------------------------------------------------------


def _pattern_stream(low: int, n: int = 4000, period: int = 7) -> np.ndarray:
    return (np.arange(n) % period + low).astype(np.int32)


def test_train_constant_lr_lowers_loss(tiny):
    seen = []
    report = train(tiny, {"a": _pattern_stream(10)}, Mixture(("a",), (1.0,)), _cpu(),
                   progress=lambda step, loss: seen.append(step))
    assert report.steps == 40 and report.tokens == 40 * 8 * 16 and len(report.losses) == 40
    assert seen == list(range(1, 41))
    assert np.mean(report.losses[-5:]) < 0.5 * np.mean(report.losses[:3])
    assert report.final_loss == pytest.approx(np.mean(report.losses[-10:]))
    assert report.tokens_per_second > 0
    assert not tiny.training


def test_train_is_deterministic(tokenizer):
    streams = {"a": _pattern_stream(10), "b": _pattern_stream(40, period=5)}
    mix = Mixture(("a", "b"), (0.3, 0.7))
    runs = []
    for seed in (0, 0, 1):
        model = new_tiny_llama(SPEC, tokenizer, seed=0)
        report = train(model, streams, mix, _cpu(tokens=8 * 16 * 5, seed=seed))
        runs.append((report.losses, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    assert runs[0][0] != runs[2][0]


def test_mixture_sampler_draws_in_proportion():
    mix = Mixture(("a", "b", "c"), (0.5, 0.3, 0.2))
    draws = sample_domains(mix, 20_000, np.random.default_rng(0))
    freq = {d: draws.count(d) / len(draws) for d in mix.domains}
    for d, w in mix.as_dict().items():
        assert abs(freq[d] - w) < 0.015
    assert "b" not in sample_domains(Mixture(("a", "b"), (1.0, 0.0)), 1000, np.random.default_rng(0))


def test_get_batch_windows_come_from_the_drawn_domain():
    streams = {"a": _pattern_stream(10, n=300), "b": _pattern_stream(100, n=50)}
    rng = np.random.default_rng(0)
    x, y = get_batch(streams, Mixture(("a", "b"), (0.0, 1.0)), 32, 20, rng)
    assert x.shape == y.shape == (32, 20) and x.dtype == torch.int64
    assert bool((x >= 100).all()) and torch.equal(x[:, 1:], y[:, :-1])
    x, _ = get_batch(streams, Mixture(("a", "b"), (0.5, 0.5)), 64, 20, rng)
    from_b = (x >= 100).all(dim=1)
    assert 0 < int(from_b.sum()) < 64 and bool(((x < 100).all(dim=1) | from_b).all())


def test_short_stream_raises(tiny):
    short = {"a": np.arange(16, dtype=np.int32), "b": _pattern_stream(10)}
    with pytest.raises(CorpusError, match="'a'.*16 tokens"):
        train(tiny, short, Mixture(("a", "b"), (0.5, 0.5)), _cpu(tokens=100))
    # a zero-weight domain may be short (or absent)
    train(tiny, short, Mixture(("a", "b"), (0.0, 1.0)), _cpu(tokens=100))
    with pytest.raises(ConfigError, match="no token stream"):
        train(tiny, {"b": _pattern_stream(10)}, Mixture(("a", "b"), (0.5, 0.5)), _cpu(tokens=100))
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        train(tiny, short, Mixture(("a", "b"), (0.0, 1.0)), _cpu(tokens=100, seq_len=128))


def test_grad_accumulation_matches_one_full_batch(tokenizer):
    streams = {"a": _pattern_stream(10), "b": _pattern_stream(40, period=5)}
    mix = Mixture(("a", "b"), (0.3, 0.7))
    states = []
    for accum in (1, 4):
        model = new_tiny_llama(SPEC, tokenizer, seed=0)
        train(model, streams, mix, _cpu(tokens=8 * 16 * 4, grad_accum_steps=accum))
        states.append(model.state_dict())
    assert max(float((states[0][k] - states[1][k]).abs().max()) for k in states[0]) < 1e-5
    with pytest.raises(ConfigError, match="multiple of world size"):
        train(new_tiny_llama(SPEC, tokenizer, seed=0), streams, mix, _cpu(tokens=100, grad_accum_steps=3))


def test_interrupted_run_resumes_to_the_same_weights(tokenizer, tmp_path):
    """A run that dies after step 7 (last state saved at step 6) and is rerun ends bit-identical to one
    that never stopped, with every step's loss once."""
    streams = {"a": _pattern_stream(10), "b": _pattern_stream(40, period=5)}
    mix = Mixture(("a", "b"), (0.5, 0.5))
    recipe = _cpu(tokens=8 * 16 * 12)
    whole = new_tiny_llama(SPEC, tokenizer, seed=0)
    expected = train(whole, streams, mix, recipe)

    class Killed(Exception):
        pass

    def die_at_7(step, loss):
        if step == 7:
            raise Killed

    with pytest.raises(Killed):
        train(new_tiny_llama(SPEC, tokenizer, seed=0), streams, mix, recipe, progress=die_at_7,
              state_dir=tmp_path, save_every=3)
    lines = []
    resumed = new_tiny_llama(SPEC, tokenizer, seed=0)
    report = train(resumed, streams, mix, recipe, on_log=lines.append, state_dir=tmp_path, save_every=3)
    assert report.resumed_from_step == 6 and report.tokens == expected.tokens
    assert report.losses == expected.losses
    want, got = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert [p.step for p in lines] == list(range(7, 13)) and lines[-1].eta_seconds == 0
    assert "step 12/12" in lines[-1].line() and lines[-1].tokens == expected.tokens
    with pytest.raises(ConfigError, match="another recipe"):  # a state is never resumed by another run
        train(new_tiny_llama(SPEC, tokenizer, seed=0), streams, mix, _cpu(tokens=8 * 16 * 12, seed=5),
              state_dir=tmp_path)


def test_progress_interval_gives_lines_for_short_and_long_runs():
    assert progress_interval(1) == 1 and progress_interval(16) == 1
    assert progress_interval(1000) == 50
