"""One training loop for everything: base pre-training, domain experts, reference runs, mid-training.

Read ``train`` from top to bottom; it is the whole story (nanoGPT style):

1. validate the streams against the mixture, resume from the last saved train state if there is one,
2. build AdamW (weight decay on matrices only) and the LR schedule,
3. each step: draw the *global* batch with the mixture sampler (each row picks a domain with
   probability ``mixture[domain]``, then a random window of ``seq_len + 1`` tokens from that domain's
   flat token stream), keep this rank's rows, run them in ``grad_accum_steps`` micro-batches
   (next-token cross-entropy, backward), clip, step; save the train state every N steps,
4. leave the model in eval mode and return a ``TrainReport``.

MergeMix experts use a *vertex* mixture (all weight on one domain, or domain + general data) and a
constant learning rate with no decay: the expert stays in the same linear basin as its base so
that task-vector merging is meaningful. Reference runs train on any data ratio λ.

The same loop runs in-process (one rank) and under ``torchrun`` (``core/training/ddp.py`` starts the
process group): with more than one rank the model is wrapped in ``DistributedDataParallel``. Every
rank draws the same global batch from the same seed and trains on its own slice of rows, so W ranks
see exactly the windows one rank sees and produce the same weights (up to float summation order).
Because the sampler state is the same on every rank, rank 0's saved state resumes any world size.
FSDP (models that do not fit one GPU) is not wired in: see docs/cluster.md.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from mergemix_dagster.core.errors import ConfigError, CorpusError
from mergemix_dagster.core.mixture import Mixture
# TrainRecipe is defined once, with the settings built from it; recipe_from is re-exported for its callers
from mergemix_dagster.core.settings.recipes import TrainRecipe, recipe_from as recipe_from
from mergemix_dagster.core.training.model import resolve_device


@dataclass
class TrainReport:
    steps: int
    tokens: int
    seconds: float
    tokens_per_second: float
    final_loss: float  # mean training loss of the last min(10, steps) steps
    losses: list[float] = field(default_factory=list)  # one per step
    resumed_from_step: int = 0  # 0: started from scratch; else the step of the saved state it resumed
    world_size: int = 1


@dataclass(frozen=True)
class TrainProgress:
    """What a progress line says: where the run is, its throughput and when it should end."""

    step: int
    steps: int
    tokens: int
    loss: float
    tokens_per_second: float
    eta_seconds: float

    def line(self) -> str:
        return (
            f"step {self.step}/{self.steps} tokens {self.tokens:,} loss {self.loss:.4f} "
            f"{self.tokens_per_second:,.0f} tok/s ETA {self.eta_seconds:.0f} s"
        )


def progress_interval(steps: int) -> int:
    """Steps between progress lines: about 20 lines per run, every step for runs of 20 steps or fewer."""
    return max(1, round(steps / 20))


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
    streams: Mapping[str, np.ndarray],
    mixture: Mixture,
    batch_size: int,
    seq_len: int,
    rng: np.random.Generator,
    rows_slice: slice = slice(None),
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch ``(x, y)`` of shape ``(batch_size, seq_len)``: ``y`` is ``x`` shifted by one token.

    Row ``i`` comes from domain ``sample_domains(...)[i]``, starting at a uniform random offset.
    ``rows_slice`` keeps only some rows (a rank's share); the generator advances as for the whole batch,
    so every rank stays in step with every other.
    """
    domains = sample_domains(mixture, batch_size, rng)
    starts = [int(rng.integers(0, len(streams[d]) - seq_len)) for d in domains]  # window [start, start + seq_len]
    rows = [streams[d][s : s + seq_len + 1] for d, s in list(zip(domains, starts))[rows_slice]]
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
# ranks and the saved train state
# --------------------------------------------------------------------------------------------

STATE_FILE = "train_state.pt"


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_fully_sharded(model: torch.nn.Module) -> bool:
    """True for a model sharded with FSDP2's ``fully_shard``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def check_split(recipe: TrainRecipe, world_size: int) -> int:
    """Rows per micro-batch on each rank; the global batch must split evenly over ranks × micro-batches."""
    parts = world_size * recipe.grad_accum_steps
    if recipe.grad_accum_steps < 1 or recipe.batch_size % parts:
        raise ConfigError(
            f"batch_size {recipe.batch_size} must be a multiple of world size {world_size} × "
            f"grad_accum_steps {recipe.grad_accum_steps}"
        )
    return recipe.batch_size // parts


def _sampling_identity(recipe: TrainRecipe) -> dict:
    """Recipe fields a resumed run must share with the saved one (the device and precision may change)."""
    return {k: v for k, v in asdict(recipe).items() if k not in ("device", "precision", "grad_accum_steps")}


def save_train_state(
    directory: Path, model: torch.nn.Module, optimizer, rng: np.random.Generator, step: int, losses: list[float],
    recipe: TrainRecipe,
) -> None:
    """Model, optimiser, sampler and torch RNG state after ``step`` steps, written atomically (rank 0 only)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "losses": list(losses),
        "recipe": _sampling_identity(recipe),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "sampler": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = directory / f".{STATE_FILE}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, directory / STATE_FILE)  # a kill leaves the previous state or this one, never half of one


def load_train_state(
    directory: Path, model: torch.nn.Module, optimizer, rng: np.random.Generator, recipe: TrainRecipe
) -> tuple[int, list[float]]:
    """Restore a saved state into ``model``, ``optimizer`` and ``rng``; returns (step, losses). (0, []) if none."""
    path = directory / STATE_FILE
    if not path.exists():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["recipe"] != _sampling_identity(recipe):
        raise ConfigError(f"{path} was saved by a run with another recipe ({state['recipe']}); not resuming it")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["sampler"]
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), [float(x) for x in state["losses"]]


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def train(
    model: torch.nn.Module,
    streams: Mapping[str, np.ndarray],
    mixture: Mixture,
    recipe: TrainRecipe,
    progress: Callable[[int, float], None] | None = None,
    on_log: Callable[[TrainProgress], None] | None = None,
    state_dir: Path | None = None,
    save_every: int = 0,
) -> TrainReport:
    """Train ``model`` in place on windows drawn from ``streams`` with ratios ``mixture``.

    ``streams``: domain -> flat int32 token array (documents separated by EOS). Mixture domains
    with positive weight must be stream keys; zero-weight domains may be absent.
    ``progress(step, loss)`` is called after every step (1-based step); ``on_log(TrainProgress)``
    every ``progress_interval(steps)`` steps and at the last one (rank 0 only under torchrun).
    ``state_dir``: resume from the train state saved there, and (rank 0) save one every ``save_every``
    steps and at the end; a killed run rerun with the same arguments finishes the same run.
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
    rank, world = rank_and_world()
    micro_rows = check_split(recipe, world)
    sharded = is_fully_sharded(model)  # FSDP2 (``ddp.py --fsdp``): it reduces gradients itself
    if sharded and state_dir is not None:
        raise ConfigError("a fully sharded (FSDP) run does not save or resume a train state (state_dir)")

    device = resolve_device(recipe.device)
    use_bf16 = recipe.precision == "bf16" and device.type == "cuda"  # bf16 autocast on CUDA only
    rng = np.random.default_rng(recipe.seed)  # batches: the same generator on every rank
    torch.manual_seed(recipe.seed)  # dropout, if a model has any
    model.to(device)
    model.train()

    # 2. optimiser, and the saved state of an interrupted run
    optimizer = make_optimizer(model, recipe)
    steps = recipe.steps
    first_step, losses = (0, [])
    if state_dir is not None:
        first_step, losses = load_train_state(Path(state_dir), model, optimizer, rng, recipe)
    forward = model
    if world > 1 and not sharded:  # gradients are averaged over ranks in backward
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    mine = slice(rank * micro_rows * recipe.grad_accum_steps, (rank + 1) * micro_rows * recipe.grad_accum_steps)
    interval = progress_interval(steps)

    # 3. loop
    start = time.perf_counter()
    for step in range(first_step, steps):
        lr = learning_rate_at(step, recipe)
        for group in optimizer.param_groups:
            group["lr"] = lr

        x_all, y_all = get_batch(streams, mixture, recipe.batch_size, recipe.seq_len, rng, mine)
        optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)
        for micro in range(recipe.grad_accum_steps):
            rows = slice(micro * micro_rows, (micro + 1) * micro_rows)
            x, y = x_all[rows].to(device, non_blocking=True), y_all[rows].to(device, non_blocking=True)
            last = micro == recipe.grad_accum_steps - 1
            # all-reduce once per step
            sync = forward.no_sync() if world > 1 and not last and not sharded else nullcontext()
            if sharded:
                model.set_requires_gradient_sync(last)  # reduce-scatter once per step
            with sync:
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    logits = forward(input_ids=x).logits
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
                (loss / recipe.grad_accum_steps).backward()
            step_loss += loss.detach() / recipe.grad_accum_steps
        if recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()

        if world > 1:  # the logged loss is the global batch's, as with one rank
            dist.all_reduce(step_loss)
            step_loss /= world
        losses.append(float(step_loss.item()))
        done = step + 1
        if progress is not None:
            progress(done, losses[-1])
        if on_log is not None and rank == 0 and (done % interval == 0 or done == steps):
            elapsed = time.perf_counter() - start
            rate = (done - first_step) * recipe.tokens_per_step / elapsed if elapsed > 0 else float("inf")
            on_log(
                TrainProgress(
                    step=done, steps=steps, tokens=done * recipe.tokens_per_step, loss=losses[-1],
                    tokens_per_second=rate, eta_seconds=(steps - done) * recipe.tokens_per_step / rate,
                )
            )
        if state_dir is not None and rank == 0 and save_every > 0 and done % save_every == 0 and done < steps:
            save_train_state(Path(state_dir), model, optimizer, rng, done, losses, recipe)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if state_dir is not None and rank == 0 and first_step < steps:
        save_train_state(Path(state_dir), model, optimizer, rng, steps, losses, recipe)  # a rerun does nothing

    # 4. report
    model.eval()
    tokens = steps * recipe.tokens_per_step
    trained_here = (steps - first_step) * recipe.tokens_per_step
    tail = losses[-min(10, len(losses)) :]
    return TrainReport(
        steps=steps,
        tokens=tokens,
        seconds=seconds,
        tokens_per_second=trained_here / seconds if seconds > 0 else float("inf"),
        final_loss=float(np.mean(tail)),
        losses=losses,
        resumed_from_step=first_step,
        world_size=world,
    )
