"""How close the simplex search gets to a known optimum, against plain Dirichlet(1) sampling.

Synthetic objectives with a known maximum ``f(x*) = 0``: a smooth one ``−‖x − x*‖²`` and a rugged one that
adds ripples vanishing at x* (``−‖x − x*‖² − a·mean(1 − cos(ω(x − x*)))``), with x* in the interior, close to
a vertex, or on a face (half the domains at 0). For each K the script prints the gap to the optimum as a share
of the objective's range over the simplex, and the wall time, at the same number of evaluated points.

    .venv/bin/python benchmarks/search.py                 # K = 4, 17, 64 at 10^6 points
    .venv/bin/python benchmarks/search.py --points 100000 --k 4 17

Target (issue 9): gap ≤ 0.1 % of the range at every K, ≤ 10 s at K = 17 on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mergemix_dagster.core.search.designs import sample_simplex
from mergemix_dagster.core.search.simplex import maximize_on_simplex


def optimum(kind: str, k: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "interior":
        return rng.dirichlet(np.full(k, 5.0))
    if kind == "near-vertex":
        x = np.full(k, 0.1 / (k - 1))
        x[int(rng.integers(k))] = 0.9
        return x
    if kind == "face":
        x = np.zeros(k)
        support = rng.choice(k, size=max(2, k // 2), replace=False)
        x[support] = rng.dirichlet(np.full(len(support), 2.0))
        return x
    raise ValueError(kind)


def objective(x_star: np.ndarray, rugged: bool):
    def f(X: np.ndarray) -> np.ndarray:
        d = X - x_star
        out = -np.sum(d * d, axis=1)
        if rugged:
            out -= 0.05 * np.mean(1.0 - np.cos(40.0 * d), axis=1)
        return out
    return f


def value_range(f, k: int) -> float:
    """max − min of f over the simplex: max is 0 at x*; the min is found among vertices and samples."""
    probe = np.vstack([np.eye(k), sample_simplex(k, 20_000, seed=1, concentration=0.2)])
    return float(0.0 - f(probe).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000, help="evaluated points per search")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 17, 64])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{'K':>3} {'optimum':<12} {'surface':<7} {'gap new':>9} {'gap Dir(1)':>11} {'s new':>7} {'s Dir(1)':>9}")
    worst: dict[int, float] = {}
    seconds: dict[int, list[float]] = {}
    for k in args.k:
        for kind in ("interior", "near-vertex", "face"):
            x_star = optimum(kind, k, rng)
            for rugged in (False, True):
                f = objective(x_star, rugged)
                span = value_range(f, k)
                t0 = time.perf_counter()
                found = maximize_on_simplex(f, k, n_evaluations=args.points, seed=args.seed)
                t_new = time.perf_counter() - t0
                t0 = time.perf_counter()
                plain = sample_simplex(k, args.points, seed=args.seed)
                best_plain = float(np.max(np.concatenate([f(plain[i:i + 65536]) for i in range(0, len(plain), 65536)])))
                t_plain = time.perf_counter() - t0
                gap_new = (0.0 - found.value) / span
                gap_plain = (0.0 - best_plain) / span
                worst[k] = max(worst.get(k, 0.0), gap_new)
                seconds.setdefault(k, []).append(t_new)
                print(f"{k:>3} {kind:<12} {'rugged' if rugged else 'smooth':<7} {gap_new:>8.4%} {gap_plain:>10.4%} "
                      f"{t_new:>7.2f} {t_plain:>9.2f}", flush=True)
    print()
    for k in args.k:
        print(f"K={k}: worst gap {worst[k]:.4%} of the range (target ≤ 0.1 %), "
              f"max {max(seconds[k]):.1f} s per search of {args.points:,} points")


if __name__ == "__main__":
    main()
