"""One training loop for everything: base pre-training, domain experts, reference runs.

Read ``train`` from top to bottom; it is the whole story (nanoGPT style):

1. validate the streams against the mixture,
2. build AdamW (weight decay on matrices only) and the LR schedule,
3. each step: draw a batch with the mixture sampler (each row picks a domain with probability
   ``mixture[domain]``, then a random window of ``seq_len + 1`` tokens from that domain's flat
   token stream), compute next-token cross-entropy, backward, clip, step,
4. leave the model in eval mode and return a ``TrainReport``.

MergeMix experts use a *vertex* mixture (all weight on one domain, or domain + general data) and a
constant learning rate with no decay: the expert stays in the same linear basin as its base so
that task-vector merging is meaningful. Reference runs train on any data ratio λ.

Multi-GPU: this loop is single-process on purpose. Data-parallel training would plug in with
``torchrun``: ``torch.distributed.init_process_group`` at the top, wrap the model in
``DistributedDataParallel``, seed the batch generator with ``seed + rank`` so ranks draw
different windows, divide ``steps`` by the world size, all-reduce the logged loss, and save only
on rank 0. Nothing else in the loop changes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, CorpusError
from .mixture import Mixture
from .model import resolve_device


@dataclass(frozen=True)
class TrainRecipe:
    """How to train: token budget, batch geometry, optimiser and schedule."""

    tokens: int
    seq_len: int = 256
    batch_size: int = 16
    learning_rate: float = 1e-3
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        """Optimiser steps: ``ceil(tokens / (batch_size * seq_len))``, at least 1."""
        return max(1, math.ceil(self.tokens / self.tokens_per_step))


@dataclass
class TrainReport:
    steps: int
    tokens: int
    seconds: float
    tokens_per_second: float
    final_loss: float  # mean training loss of the last min(10, steps) steps
    losses: list[float] = field(default_factory=list)  # one per step


# --------------------------------------------------------------------------------------------
# data: the mixture sampler
# --------------------------------------------------------------------------------------------


def sample_domains(mixture: Mixture, n: int, rng: np.random.Generator) -> list[str]:
    """Draw ``n`` domain names i.i.d. with probabilities ``mixture.weights`` (zero-weight never drawn)."""
    p = np.clip(mixture.as_array(), 0.0, None)
    p = p / p.sum()
    idx = rng.choice(len(p), size=n, p=p)
    return [mixture.domains[i] for i in idx]


def get_batch(
    streams: Mapping[str, np.ndarray], mixture: Mixture, batch_size: int, seq_len: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch ``(x, y)`` of shape ``(batch_size, seq_len)``: ``y`` is ``x`` shifted by one token.

    Row ``i`` comes from domain ``sample_domains(...)[i]``, starting at a uniform random offset.
    """
    rows = []
    for domain in sample_domains(mixture, batch_size, rng):
        stream = streams[domain]
        start = int(rng.integers(0, len(stream) - seq_len))  # window [start, start + seq_len] inclusive
        rows.append(stream[start : start + seq_len + 1])
    windows = torch.from_numpy(np.stack(rows).astype(np.int64))
    return windows[:, :-1], windows[:, 1:]


def validate_streams(streams: Mapping[str, np.ndarray], mixture: Mixture, seq_len: int) -> None:
    """Every positive-weight domain needs a stream of at least ``seq_len + 1`` tokens."""
    for domain, weight in zip(mixture.domains, mixture.weights):
        if weight <= 0:
            continue
        if domain not in streams:
            raise ConfigError(
                f"mixture gives domain {domain!r} weight {weight:g} but no token stream was provided "
                f"(streams: {sorted(streams)})"
            )
        n = len(streams[domain])
        if n < seq_len + 1:
            raise CorpusError(
                f"token stream of domain {domain!r} has {n} tokens; at least seq_len + 1 = {seq_len + 1} are needed"
            )


# --------------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------------


def learning_rate_at(step: int, recipe: TrainRecipe) -> float:
    """Linear warmup over ``warmup_steps``, then constant, or cosine decay to 10% at the last step."""
    lr = recipe.learning_rate
    if step < recipe.warmup_steps:
        return lr * (step + 1) / recipe.warmup_steps
    if recipe.schedule == "constant":
        return lr
    min_lr = 0.1 * lr
    decay_steps = max(1, recipe.steps - 1 - recipe.warmup_steps)
    progress = min(1.0, (step - recipe.warmup_steps) / decay_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, recipe: TrainRecipe) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (dim >= 2), none on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=recipe.learning_rate, betas=(0.9, 0.95), eps=1e-8)


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def train(
    model: torch.nn.Module,
    streams: Mapping[str, np.ndarray],
    mixture: Mixture,
    recipe: TrainRecipe,
    progress: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Train ``model`` in place on windows drawn from ``streams`` with ratios ``mixture``.

    ``streams``: domain -> flat int32 token array (documents separated by EOS). Mixture domains
    with positive weight must be stream keys; zero-weight domains may be absent.
    ``progress(step, loss)`` is called after every step (1-based step).
    The model is moved to ``recipe.device`` (resolved) and returned in eval mode on that device.
    Deterministic on CPU for a fixed seed. ``precision="bf16"`` autocasts the forward pass to
    bfloat16 on CUDA only (weights and optimiser stay fp32); on CPU it trains in fp32, because
    CPU bf16 autocast was measured far slower than fp32 on our machines.
    """
    # 1. inputs
    if recipe.tokens <= 0 or recipe.seq_len <= 0 or recipe.batch_size <= 0:
        raise ConfigError(f"tokens, seq_len and batch_size must be positive: {recipe}")
    if recipe.schedule not in ("constant", "cosine"):
        raise ConfigError(f"unknown schedule {recipe.schedule!r}: use 'constant' or 'cosine'")
    if recipe.precision not in ("fp32", "bf16"):
        raise ConfigError(f"unknown precision {recipe.precision!r}: use 'fp32' or 'bf16'")
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_pos is not None and recipe.seq_len > max_pos:
        raise ConfigError(f"seq_len {recipe.seq_len} exceeds the model's max_position_embeddings {max_pos}")
    validate_streams(streams, mixture, recipe.seq_len)

    device = resolve_device(recipe.device)
    use_bf16 = recipe.precision == "bf16" and device.type == "cuda"  # bf16 autocast on CUDA only
    rng = np.random.default_rng(recipe.seed)  # batches
    torch.manual_seed(recipe.seed)  # dropout, if a model has any
    model.to(device)
    model.train()

    # 2. optimiser
    optimizer = make_optimizer(model, recipe)
    steps = recipe.steps

    # 3. loop
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        lr = learning_rate_at(step, recipe)
        for group in optimizer.param_groups:
            group["lr"] = lr

        x, y = get_batch(streams, mixture, recipe.batch_size, recipe.seq_len, rng)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()

        losses.append(float(loss.item()))
        if progress is not None:
            progress(step + 1, losses[-1])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start

    # 4. report
    model.eval()
    tokens = steps * recipe.tokens_per_step
    tail = losses[-min(10, len(losses)) :]
    return TrainReport(
        steps=steps,
        tokens=tokens,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else float("inf"),
        final_loss=float(np.mean(tail)),
        losses=losses,
    )
