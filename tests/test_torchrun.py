"""The training loop under ``torchrun`` (gloo, 2 CPU ranks): data-parallel correctness, kill -9 and resume.

Real ``torchrun`` subprocesses on a tiny Llama; the single-rank reference is the in-process loop the
``embedded`` trainer runs, so these tests also prove both share one loop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from mergemix_dagster.core.data.corpora import write_corpus
from mergemix_dagster.core.training.mixture_file import read_mixture_file, write_mixture_file
from mergemix_dagster.core.training.model import TinyModelSpec, load_checkpoint, load_state_dict, new_tiny_llama, save_checkpoint, train_tokenizer
from mergemix_dagster.core.training.loop import STATE_FILE, TrainRecipe, train
from mergemix_dagster.core.training.ddp import token_streams

SPEC = TinyModelSpec(vocab_size=320, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                     max_position_embeddings=32)
DOCS = {
    "math": [f"{a} + {b} = {a + b}. {a} * {b} = {a * b}." for a in range(40) for b in range(5)],
    "prose": [f"The {w} walked to the {v} and saw {n} birds." for w in ("cat", "dog", "fox", "owl")
              for v in ("river", "market", "hill") for n in range(15)],
}
RECIPE = dict(seq_len=16, batch_size=8, learning_rate=3e-3, schedule="constant", seed=3, device="cpu")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny base checkpoint, two corpora and a mixture file, written once for the module."""
    root = tmp_path_factory.mktemp("torchrun")
    tokenizer = train_tokenizer([d for docs in DOCS.values() for d in docs], vocab_size=320)
    base = save_checkpoint(new_tiny_llama(SPEC, tokenizer, seed=0), tokenizer, root / "base")
    paths = {}
    for domain, docs in DOCS.items():
        write_corpus(docs, root / f"{domain}.jsonl.gz")
        paths[domain] = [str(root / f"{domain}.jsonl.gz")]
    mixture = write_mixture_file(root / "mixture.json", {"math": 0.6, "prose": 0.4}, paths, RECIPE)
    return root, base, mixture


def torchrun(nproc: int, base: Path, mixture: Path, out: Path, tokens: int, *extra: str, wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "mergemix_dagster.core.training.ddp", "--init", str(base), "--mixture", str(mixture),
           "--out", str(out), "--tokens", str(tokens), *extra]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def kill_tree(pid: int) -> None:
    """kill -9 the torchrun agent and its workers at once (torchrun starts workers in their own sessions)."""
    agent = psutil.Process(pid)
    for proc in [agent, *agent.children(recursive=True)]:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def in_process(base: Path, mixture: Path, tokens: int) -> dict[str, torch.Tensor]:
    """One rank, in this process: the loop the embedded trainer runs."""
    model, tokenizer = load_checkpoint(base)
    spec = read_mixture_file(mixture)
    train(model, token_streams(spec, tokenizer), spec.mixture, TrainRecipe(tokens=tokens, **RECIPE))
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_ranks_match_one_rank(job):
    root, base, mixture = job
    tokens = 6 * 8 * 16  # 6 steps of the same global batch (8 rows x 16 tokens)
    done = torchrun(2, base, mixture, root / "ddp", tokens)
    assert "with 2 rank(s)" in done.stdout and "step 6/6" in done.stdout
    two = load_state_dict(root / "ddp")
    one = in_process(base, mixture, tokens)
    start = load_state_dict(base)
    assert max_difference(two, one) < 1e-5
    assert max_difference(one, start) > 1e-3  # the weights moved: the comparison is not of two untouched bases
    report = json.loads((root / ".ddp.state" / "report.json").read_text())
    assert report["world_size"] == 2 and report["tokens"] == tokens and report["steps"] == 6


def test_kill_and_resume_finishes_the_same_run(job):
    root, base, mixture = job
    steps = 60
    tokens = steps * 8 * 16
    out, state = root / "resumed", root / ".resumed.state"
    run = torchrun(2, base, mixture, out, tokens, "--save-every", "5", wait=False)
    saved = -1
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:  # kill -9 once a state past step 5 is saved
        if (state / STATE_FILE).exists():
            try:
                saved = torch.load(state / STATE_FILE, weights_only=True)["step"]
            except Exception:  # noqa: BLE001 - replaced while we read it; look again
                continue
            if saved >= 5:
                kill_tree(run.pid)
                break
        time.sleep(0.02)
    run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL, run.stdout.read().decode()
    time.sleep(0.5)
    assert 5 <= saved < steps and not out.exists()  # killed mid-run, before the checkpoint was written

    done = torchrun(2, base, mixture, out, tokens, "--save-every", "5")
    report = json.loads((state / "report.json").read_text())
    assert report["resumed_from_step"] >= saved and "resumed from step" in done.stdout
    assert report["tokens"] == tokens and report["steps"] == steps and len(report["losses"]) == steps
    resumed = load_state_dict(out)
    uninterrupted = in_process(base, mixture, tokens)
    assert max_difference(resumed, uninterrupted) < 1e-5


def test_fsdp_two_ranks_match_one_rank(job):
    """FSDP2 (``--fsdp``: parameters, gradients and optimiser state sharded over 2 gloo ranks), with gradient
    accumulation, ends where the unsharded single-rank loop ends."""
    root, base, mixture = job
    tokens = 6 * 8 * 16
    done = torchrun(2, base, mixture, root / "fsdp", tokens, "--fsdp", "--grad-accum", "2")
    assert "with 2 rank(s) (FSDP)" in done.stdout and "step 6/6" in done.stdout
    sharded = load_state_dict(root / "fsdp")
    one = in_process(base, mixture, tokens)
    assert max_difference(sharded, one) < 1e-5
    assert max_difference(one, load_state_dict(base)) > 1e-3
