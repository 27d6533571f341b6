"""Benchmark candidate evaluation split over W worker processes, and the harness's overhead.

Not a test. Builds (or reuses) the base + K perturbed experts of ``benchmarks/candidates.py``, draws N
mixtures, and scores them all with ``Evaluator(DEFAULT_TASKS)``:

- W = 1 and W = 2 worker processes (spawned; candidates dealt round-robin; each worker loads the base and
  the experts ONCE into an ``InMemoryMerger`` and re-merges in place; torch threads = cores / W). The rows of
  both runs must be identical (same values, bit for bit); the wall-time ratio is printed.
- Throughput: a forward pre-hook counts the tokens the harness feeds the model (padding included) during one
  evaluation and keeps the batches; replaying those exact batches through ``model(input_ids)`` alone is the
  bare batched forward pass. harness overhead = evaluation wall / bare forward wall.

    .venv/bin/python benchmarks/evaluate.py                 # N=40, W in (1, 2)
    .venv/bin/python benchmarks/evaluate.py --candidates 8 --eval-limit 16    # a quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def _worker(base_dir: str, expert_dirs: dict, share: list[tuple[int, dict]], threads: int, batch: int, limit):
    """Score this worker's candidates; returns (rows, seconds spent after setup)."""
    import torch

    torch.set_num_threads(threads)
    from mergemix_dagster.core.evaluate import DEFAULT_TASKS, Evaluator
    from mergemix_dagster.core.merge import InMemoryMerger
    from mergemix_dagster.core.mixture import Mixture
    from mergemix_dagster.core.model import load_checkpoint, load_state_dict, read_config

    model, tokenizer = load_checkpoint(base_dir)
    merger = InMemoryMerger(
        model, load_state_dict(base_dir), {n: load_state_dict(d) for n, d in expert_dirs.items()},
        base_config=read_config(base_dir), expert_configs={n: read_config(d) for n, d in expert_dirs.items()},
    )
    evaluator = Evaluator(DEFAULT_TASKS, batch_size=batch, limit=limit)
    rows = []
    start = time.perf_counter()
    for index, weights in share:
        merger.apply(Mixture.from_dict(weights))
        rows += [(index, s.task, s.metric, s.value) for s in evaluator.evaluate(model, tokenizer)]
    return rows, time.perf_counter() - start


def run(workers: int, base_dir, expert_dirs, cands, batch, limit) -> tuple[list, float, list[float]]:
    jobs = list(enumerate(c.as_dict() for c in cands))
    shares = [jobs[w::workers] for w in range(workers)]
    threads = max(1, (os.cpu_count() or 1) // workers)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_worker, str(base_dir), {n: str(d) for n, d in expert_dirs.items()}, s, threads,
                               batch, limit) for s in shares]
        results = [f.result() for f in futures]
    wall = time.perf_counter() - start
    return sorted(r for rows, _ in results for r in rows), wall, [sec for _, sec in results]


def throughput(base_dir, batch, limit) -> dict:
    import torch

    from mergemix_dagster.core.evaluate import DEFAULT_TASKS, Evaluator
    from mergemix_dagster.core.model import load_checkpoint

    model, tokenizer = load_checkpoint(base_dir)
    evaluator = Evaluator(DEFAULT_TASKS, batch_size=batch, limit=limit)
    evaluator.evaluate(model, tokenizer)  # warm: encodings cached, as for every candidate after the first
    seen: list = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0] if args else kwargs["input_ids"]).clone()), with_kwargs=True
    )
    start = time.perf_counter()
    evaluator.evaluate(model, tokenizer)
    harness = time.perf_counter() - start
    hook.remove()
    tokens = sum(x.numel() for x in seen)
    start = time.perf_counter()
    with torch.no_grad():
        for x in seen:
            model(input_ids=x)
    bare = time.perf_counter() - start
    return {"batches": len(seen), "tokens": tokens, "harness_s": harness, "bare_s": bare}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", type=int, default=40)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / ".scratch")
    args = p.parse_args(argv)

    import candidates as cand_bench

    build_args = argparse.Namespace(layers=2, hidden=128, heads=4, intermediate=344, vocab=2048, experts=4,
                                    noise=0.02, tokenizer_chars=300_000, seed=0)
    base_dir, expert_dirs = cand_bench.build(args.workdir.resolve(), build_args)
    cands = cand_bench.mixtures(sorted(expert_dirs), args.candidates, 0)
    print(f"{len(cands)} candidates, {len(expert_dirs)} experts, {os.cpu_count()} cores")

    runs = {}
    for w in args.workers:
        rows, wall, busy = run(w, base_dir, expert_dirs, cands, args.batch_size, args.eval_limit)
        runs[w] = (rows, wall)
        print(f"W={w}: {len(rows)} rows in {wall:.1f} s wall (evaluation per worker: "
              + ", ".join(f"{b:.1f}" for b in busy) + " s)")
    first = args.workers[0]
    for w in args.workers[1:]:
        same = runs[w][0] == runs[first][0]
        print(f"W={w} vs W={first}: rows identical: {same}; wall ratio W{first}/W{w} = {runs[first][1] / runs[w][1]:.2f}")

    t = throughput(base_dir, args.batch_size, args.eval_limit)
    print(f"one evaluation: {t['batches']} forward batches, {t['tokens']:,} tokens (padding included)")
    print(f"  harness:      {t['harness_s']:.2f} s  -> {t['tokens'] / t['harness_s']:,.0f} scored tokens/s")
    print(f"  bare forward: {t['bare_s']:.2f} s  -> {t['tokens'] / t['bare_s']:,.0f} tokens/s")
    print(f"  harness overhead: {t['harness_s'] / t['bare_s']:.2f}x the bare batched forward pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
