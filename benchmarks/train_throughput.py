"""Training throughput of the tiny Llama with ``core.training.loop.train`` (fp32, CPU or GPU).

    python benchmarks/train_throughput.py                     # default sizes, eager
    python benchmarks/train_throughput.py --compile           # also torch.compile
    python benchmarks/train_throughput.py --sizes 2x128 4x256 --steps 20 --seq-len 256 --batch-size 16

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


def measure(layers, hidden, args, compile_model: bool) -> tuple[float, int]:
    model = build(layers, hidden, args.vocab, args.seq_len)
    n_params = sum(p.numel() for p in model.parameters())
    if compile_model:
        model = torch.compile(model)
    stream = np.random.default_rng(0).integers(0, args.vocab, size=1_000_000, dtype=np.int32)
    streams, mix = {"x": stream}, Mixture(("x",), (1.0,))
    per_step = args.batch_size * args.seq_len
    common = dict(seq_len=args.seq_len, batch_size=args.batch_size, device=args.device, precision="fp32")
    train(model, streams, mix, TrainRecipe(tokens=per_step * args.warmup, **common))  # warm-up / compile
    t0 = time.perf_counter()
    report = train(model, streams, mix, TrainRecipe(tokens=per_step * args.steps, **common))
    wall = time.perf_counter() - t0
    return report.tokens / wall, n_params


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
    args = ap.parse_args()
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
