"""Benchmark candidate evaluation split over W worker processes, and the harness's overhead.

Not a test. Builds (or reuses) the base + K perturbed experts of ``benchmarks/candidates.py``, draws N
mixtures, and scores them all with ``Evaluator(DEFAULT_TASKS)``:

- W = 1 and W = 2 workers through ``core.evaluation.workers.score_proxies``, the function the
  ``candidate_evaluations`` asset calls (W = 1 in this process; W > 1 spawned processes, a free worker takes
  the next candidate; each loads the base and the experts ONCE and re-merges in place; torch threads per
  worker: 1 when W > 1, or ``--threads``). The rows of both runs must be identical (same values, bit for
  bit); the wall-time ratio (loading included) is printed.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def run(workers: int, base_dir, expert_dirs, cands, batch, limit, threads=None) -> tuple[list, float, list[float]]:
    """Score ``cands`` with ``score_proxies``, the function the ``candidate_evaluations`` asset calls.

    Returns the rows (candidate index, task, metric, value), the wall time (loading included) and the
    evaluation seconds of each candidate."""
    from mergemix_dagster.core.evaluation.harness import DEFAULT_TASKS
    from mergemix_dagster.core.evaluation.workers import ProxyJob, ScorerSpec, score_proxies

    spec = ScorerSpec(str(base_dir), {n: str(d) for n, d in expert_dirs.items()}, DEFAULT_TASKS, batch_size=batch,
                      limit=limit, device="cpu", threads=threads or (1 if workers > 1 else None))
    jobs = [ProxyJob(str(i), c.as_dict()) for i, c in enumerate(cands)]
    rows, seconds = [], []

    def collect(job, scores, elapsed):
        rows.extend((int(job.candidate_id), s.task, s.metric, s.value) for s in scores)
        seconds.append(elapsed)

    start = time.perf_counter()
    score_proxies(spec, jobs, collect, workers=workers)
    return sorted(rows), time.perf_counter() - start, seconds


def throughput(base_dir, batch, limit) -> dict:
    import torch

    from mergemix_dagster.core.evaluation.harness import DEFAULT_TASKS, Evaluator
    from mergemix_dagster.core.training.model import load_checkpoint

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
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: 1 when W > 1)")
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
        rows, wall, busy = run(w, base_dir, expert_dirs, cands, args.batch_size, args.eval_limit, args.threads)
        runs[w] = (rows, wall)
        print(f"W={w}: {len(rows)} rows in {wall:.1f} s wall "
              f"({sum(busy) / len(busy):.2f} s per candidate in its worker)")
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
