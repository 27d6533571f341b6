"""Training throughput of the tiny Llama with ``core.training.loop.train`` (fp32, CPU or GPU).

    python benchmarks/train_throughput.py                     # default sizes, eager
    python benchmarks/train_throughput.py --compile           # also torch.compile
    python benchmarks/train_throughput.py --sizes 2x128 4x256 --steps 20 --seq-len 256 --batch-size 16
    python benchmarks/train_throughput.py --sizes 2x128 --steps 40 --processes 2   # side by side vs threads

``--processes N`` asks whether N trainings side by side (N processes of one torch thread, started together)
get more tokens per second out of the machine than one training with N threads, i.e. whether running a
layer's independent runs (the experts) concurrently would shorten a stage on this machine.

Tokens are random ids from a synthetic stream (throughput does not depend on the text). A short
warm-up run is excluded from the timing. On a shared machine the numbers are noisy: repeat.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.model import TinyModelSpec
from mergemix_dagster.core.training.loop import TrainRecipe, train


class _Tok:
    """Just enough of a tokenizer for ``new_tiny_llama``."""

    def __init__(self, n: int):
        self.n = n
        self.bos_token_id, self.eos_token_id, self.pad_token_id = 0, 1, 2

    def __len__(self) -> int:
        return self.n


def build(layers: int, hidden: int, vocab: int, seq_len: int):
    from mergemix_dagster.core.training.model import new_tiny_llama

    spec = TinyModelSpec(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=max(1, hidden // 32),
        intermediate_size=int(hidden * 8 / 3) // 8 * 8,
        max_position_embeddings=max(256, seq_len),
    )
    return new_tiny_llama(spec, _Tok(vocab), seed=0)


def timed_training(model, args, device: str, ready=lambda: None) -> tuple[int, float]:
    """Warm up (and compile), call ``ready`` (the side-by-side runs' barrier), then time ``args.steps`` steps:
    (tokens trained, seconds)."""
    stream = np.random.default_rng(0).integers(0, args.vocab, size=1_000_000, dtype=np.int32)
    streams, mix = {"x": stream}, Mixture(("x",), (1.0,))
    per_step = args.batch_size * args.seq_len
    common = dict(seq_len=args.seq_len, batch_size=args.batch_size, device=device, precision="fp32")
    train(model, streams, mix, TrainRecipe(tokens=per_step * args.warmup, **common))  # warm-up / compile
    ready()
    t0 = time.perf_counter()
    report = train(model, streams, mix, TrainRecipe(tokens=per_step * args.steps, **common))
    return report.tokens, time.perf_counter() - t0


def measure(layers, hidden, args, compile_model: bool) -> tuple[float, int]:
    model = build(layers, hidden, args.vocab, args.seq_len)
    n_params = sum(p.numel() for p in model.parameters())
    if compile_model:
        model = torch.compile(model)
    tokens, wall = timed_training(model, args, args.device)
    return tokens / wall, n_params


def _side_by_side(layers: int, hidden: int, args, barrier, results) -> None:
    """One of ``--processes`` spawned trainings: one torch thread, timed from when all are warmed up."""
    torch.set_num_threads(1)
    results.put(timed_training(build(layers, hidden, args.vocab, args.seq_len), args, "cpu", barrier.wait))


def compare_side_by_side(layers: int, hidden: int, args) -> None:
    """Tokens/s of one training with N threads vs N one-thread trainings side by side, in one run."""
    import multiprocessing as mp

    n = args.processes
    torch.set_num_threads(n)
    one, _ = measure(layers, hidden, args, False)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.SimpleQueue()
    procs = [ctx.Process(target=_side_by_side, args=(layers, hidden, args, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    done = [results.get() for _ in procs]
    together = sum(t for t, _ in done) / max(s for _, s in done)
    print(f"1 training x {n} threads: {one:,.0f} tokens/s; {n} trainings x 1 thread side by side: "
          f"{together:,.0f} tokens/s in all; ratio side by side / threads = {together / one:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["2x128", "4x256"], help="LAYERSxHIDDEN")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--processes", type=int, default=0,
                    help="N >= 2: one training with N threads vs N one-thread trainings side by side (CPU)")
    args = ap.parse_args()
    if args.processes > 1:
        for size in args.sizes:
            layers, hidden = (int(v) for v in size.lower().split("x"))
            print(f"torch {torch.__version__}, {size}, seq {args.seq_len}, batch {args.batch_size}, fp32, "
                  f"{args.steps} steps")
            compare_side_by_side(layers, hidden, args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"seq {args.seq_len}, batch {args.batch_size}, fp32")
    print(f"{'model':>10} {'params':>10} {'mode':>8} {'tokens/s':>10}")
    for size in args.sizes:
        layers, hidden = (int(v) for v in size.lower().split("x"))
        modes = [False, True] if args.compile else [False]
        for c in modes:
            tps, n = measure(layers, hidden, args, c)
            print(f"{size:>10} {n / 1e6:>9.2f}M {'compile' if c else 'eager':>8} {tps:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
