"""Paired noise of benchmark differences: every mixture is scored on the same items, so compare item by item.

Why not "max − min of the mixture means vs the base's lm-eval stderr" (``search.objective.min_spread_in_noise``):

1. **Noise passes as signal.** The range of m independent means is not one draw: for m = 41 its expected value
   is ≈ 4.4 σ, so with no mixture effect at all the spread of the seed design clears 2.77 σ almost always.
2. **Signal is thrown away.** lm-eval's stderr is the *unpaired* error of one mean, ``sd(items)/√n``, and is
   dominated by how items differ from each other (easy vs hard). That part is shared by every mixture scored on
   the same items and cancels in a difference; the noise of a difference is ``sd(a_i − b_i)/√n``, often far
   below σ. A real but small mixture effect then looks like noise.

Here the items are blocks: ``paired_difference`` compares two mixtures on their common items, and
``mixture_effect`` asks whether the mixture moves a capability *at all* with a randomization test that
permutes each item's values across mixtures (exact under "no mixture changes any item's score", whatever the
item distribution, 0/1 accuracies included) and takes the spread of the means as its statistic, so the
multiplicity of m means is accounted for. The two-way residual mean square gives the paired standard error of
one difference, for reading the spread in noise units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

from mergemix_dagster.core.errors import PairedAnalysisError

#: Elements per permutation batch (keeps memory bounded for large matrices).
_BATCH_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class PairedDifference:
    """``mean(a) − mean(b)`` over the items both have, its paired standard error and a bootstrap 95 % interval."""

    mean_difference: float
    standard_error: float  # sd of the per-item differences / √n
    ci_low: float
    ci_high: float
    n_items: int  # items used
    n_dropped: int  # items missing (NaN) in either


@dataclass(frozen=True)
class MixtureEffect:
    """Does the mixture move this capability beyond the noise of its items? (see the module docstring)."""

    means: tuple[float, ...]  # the capability score of each mixture, on the items kept
    spread: float  # max − min of ``means``
    paired_se: float  # standard error of the difference between two mixtures' scores
    spread_in_se: float  # spread / paired_se (inf when the items leave no noise and the spread is > 0)
    p_value: float  # randomization p-value of "the mixture moves this capability at all"
    n_mixtures: int
    n_items: int  # items kept, over all tasks
    n_dropped: int  # items dropped because some mixture has no value for them
    n_perm: int


def _finite_pairs(items_a: Sequence[float], items_b: Sequence[float]) -> tuple[np.ndarray, int]:
    a = np.asarray(items_a, dtype=float).ravel()
    b = np.asarray(items_b, dtype=float).ravel()
    if a.shape != b.shape:
        raise PairedAnalysisError(f"paired items must be the same items: got {a.size} and {b.size} values")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep] - b[keep], int((~keep).sum())


def paired_difference(items_a: Sequence[float], items_b: Sequence[float], n_boot: int = 2000,
                      seed: int = 0) -> PairedDifference:
    """Compare two mixtures scored on the same items (same order); items NaN in either are dropped."""
    if n_boot < 1:
        raise PairedAnalysisError(f"n_boot must be >= 1, got {n_boot}")
    d, dropped = _finite_pairs(items_a, items_b)
    n = d.size
    if n < 2:
        raise PairedAnalysisError(f"a paired difference needs >= 2 items both mixtures scored; have {n} "
                                  f"({dropped} dropped as missing)")
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    step = max(1, _BATCH_ELEMENTS // n)
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        boot[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return PairedDifference(float(d.mean()), float(d.std(ddof=1) / math.sqrt(n)), float(low), float(high), n,
                            dropped)


def _complete_items(matrix, task: int) -> tuple[np.ndarray, int]:
    x = np.asarray(matrix, dtype=float)
    if x.ndim != 2:
        raise PairedAnalysisError(f"task {task}: a (mixtures × items) matrix is needed, got shape {x.shape}")
    keep = np.isfinite(x).all(axis=0)
    return x[:, keep], int((~keep).sum())


def _residual_mean_square(x: np.ndarray) -> float:
    """Two-way (mixture × item) residual mean square: the noise left after mixture and item effects."""
    m, n = x.shape
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    return float((resid ** 2).sum() / ((m - 1) * (n - 1)))


def _spreads(means: np.ndarray) -> np.ndarray:
    return means.max(axis=-1) - means.min(axis=-1)


def mixture_effect(matrix, n_perm: int = 2000, seed: int = 0) -> MixtureEffect:
    """Spread of the mixtures' scores, its paired standard error, and a randomization p-value.

    ``matrix``: (mixtures × items) values of one task, or a list of such matrices (one per task of the
    capability, same mixtures in the same row order); the capability score is the equal-weight mean of its
    tasks' means. Items missing (NaN) for any mixture are dropped from their task (counted in ``n_dropped``).
    p = (1 + #permuted spreads ≥ observed) / (1 + n_perm), permuting each item's values across mixtures.
    """
    if n_perm < 1:
        raise PairedAnalysisError(f"n_perm must be >= 1, got {n_perm}")
    raw = [matrix] if isinstance(matrix, np.ndarray) and matrix.ndim == 2 else list(matrix)
    if raw and np.ndim(raw[0]) == 1:  # a single matrix given as nested lists
        raw = [raw]
    if not raw:
        raise PairedAnalysisError("no task matrices given")
    tasks, dropped = zip(*(_complete_items(x, t) for t, x in enumerate(raw)))
    m = tasks[0].shape[0]
    if any(x.shape[0] != m for x in tasks):
        raise PairedAnalysisError(f"every task needs the same mixtures: rows {[x.shape[0] for x in tasks]}")
    if m < 2:
        raise PairedAnalysisError(f"a mixture effect needs >= 2 mixtures, got {m}")
    for t, (x, lost) in enumerate(zip(tasks, dropped)):
        if x.shape[1] < 2:
            raise PairedAnalysisError(f"task {t}: {x.shape[1]} items scored by every mixture (need >= 2; "
                                      f"{lost} dropped as missing for some mixture)")
    k = len(tasks)
    means = sum(x.mean(axis=1) for x in tasks) / k
    spread = float(_spreads(means))
    # Var(difference of two capability scores) = Σ_t 2·MSE_t / n_t / k²
    se = math.sqrt(sum(2.0 * _residual_mean_square(x) / x.shape[1] for x in tasks)) / k
    ratio = spread / se if se > 0 else (math.inf if spread > 0 else 0.0)

    rng = np.random.default_rng(seed)
    exceed = 0
    tolerance = 1e-12 * max(1.0, abs(spread))  # equal spreads reached by another summation order count as ties
    batch = max(1, _BATCH_ELEMENTS // max(x.size for x in tasks))
    for start in range(0, n_perm, batch):
        b = min(batch, n_perm - start)
        perm_means = sum(rng.permuted(np.broadcast_to(x, (b, *x.shape)), axis=1).mean(axis=2) for x in tasks) / k
        exceed += int((_spreads(perm_means) >= spread - tolerance).sum())
    p = (1 + exceed) / (1 + n_perm)
    return MixtureEffect(tuple(float(v) for v in means), spread, se, ratio, p, m,
                         sum(x.shape[1] for x in tasks), sum(dropped), n_perm)


@dataclass(frozen=True)
class ObjectiveDifference:
    """``objective(a) − objective(b)`` on the items both scored, and bootstrap quantiles ``(q, 1 − q)`` of it."""

    difference: float  # at the full-sample means of the items kept
    low: float  # the q-quantile of the bootstrap differences
    high: float  # the (1 − q)-quantile
    quantile: float
    n_items: int  # items kept, over all tasks
    n_dropped: int  # items missing (NaN) in either
    n_boot: int


def paired_objective_difference(
    items_by_task_a: Mapping[Hashable, Sequence[float]],
    items_by_task_b: Mapping[Hashable, Sequence[float]],
    objective_fn: Callable[[dict[str, np.ndarray]], np.ndarray],
    n_boot: int = 2000,
    seed: int = 0,
    *,
    capability_of: Mapping[Hashable, str],
    objective_fn_b: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
    quantile: float = 0.025,
) -> ObjectiveDifference:
    """How much higher candidate ``a``'s objective is than ``b``'s, with paired noise over the items.

    ``items_by_task_*``: per task (any key, mapped to its capability by ``capability_of``) the per-item metric
    values in the same item order for both candidates. Each bootstrap draw resamples the item indices of every
    task — the *same* indices for both candidates — recomputes each capability score as the equal-weight mean of
    its tasks' means, then the objective of both (``objective_fn``: ``{capability: (draws,) scores} ->
    (draws,) objectives``; ``objective_fn_b`` for ``b`` when it differs, e.g. a KL penalty at another mixture).
    A draw where both objectives are −inf (both below a floor) counts as no difference.
    """
    if n_boot < 1:
        raise PairedAnalysisError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < quantile < 0.5:
        raise PairedAnalysisError(f"quantile must lie in (0, 0.5), got {quantile}")
    if set(items_by_task_a) != set(items_by_task_b):
        raise PairedAnalysisError(f"paired items must cover the same tasks: {sorted(map(str, items_by_task_a))} vs "
                                  f"{sorted(map(str, items_by_task_b))}")
    missing = [str(k) for k in items_by_task_a if k not in capability_of]
    if missing or not items_by_task_a:
        raise PairedAnalysisError(f"no capability for tasks {missing}" if missing else "no tasks given")
    rng = np.random.default_rng(seed)
    draws_a: dict[str, list[np.ndarray]] = {}
    draws_b: dict[str, list[np.ndarray]] = {}
    point_a: dict[str, list[float]] = {}
    point_b: dict[str, list[float]] = {}
    kept = dropped = 0
    for key in items_by_task_a:
        a = np.asarray(items_by_task_a[key], dtype=float).ravel()
        b = np.asarray(items_by_task_b[key], dtype=float).ravel()
        if a.shape != b.shape:
            raise PairedAnalysisError(f"task {key}: paired items must be the same items: got {a.size} and {b.size}")
        keep = np.isfinite(a) & np.isfinite(b)
        a, b, n = a[keep], b[keep], int(keep.sum())
        if n < 2:
            raise PairedAnalysisError(f"task {key}: {n} items both candidates scored (need >= 2)")
        kept, dropped = kept + n, dropped + int((~keep).sum())
        boot_a, boot_b = np.empty(n_boot), np.empty(n_boot)
        step = max(1, _BATCH_ELEMENTS // n)
        for start in range(0, n_boot, step):
            stop = min(n_boot, start + step)
            idx = rng.integers(0, n, size=(stop - start, n))  # the same items for both candidates
            boot_a[start:stop], boot_b[start:stop] = a[idx].mean(axis=1), b[idx].mean(axis=1)
        cap = capability_of[key]
        draws_a.setdefault(cap, []).append(boot_a)
        draws_b.setdefault(cap, []).append(boot_b)
        point_a.setdefault(cap, []).append(float(a.mean()))
        point_b.setdefault(cap, []).append(float(b.mean()))
    fn_b = objective_fn if objective_fn_b is None else objective_fn_b

    def difference(scores_a: dict[str, np.ndarray], scores_b: dict[str, np.ndarray]) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            d = np.asarray(objective_fn(scores_a), dtype=float) - np.asarray(fn_b(scores_b), dtype=float)
        return np.where(np.isnan(d), 0.0, d)

    boot = difference({c: np.mean(v, axis=0) for c, v in draws_a.items()},
                      {c: np.mean(v, axis=0) for c, v in draws_b.items()})
    point = difference({c: np.array([np.mean(v)]) for c, v in point_a.items()},
                       {c: np.array([np.mean(v)]) for c, v in point_b.items()})
    # no interpolation: a draw may be ±inf (below a floor), and the nearer-to-zero order statistic is conservative
    low, high = np.quantile(boot, quantile, method="lower"), np.quantile(boot, 1.0 - quantile, method="higher")
    return ObjectiveDifference(float(point[0]), float(low), float(high), quantile, kept, dropped, n_boot)


def paired_capability_difference(
    items_by_task_a: Mapping[Hashable, Sequence[float]],
    items_by_task_b: Mapping[Hashable, Sequence[float]],
    n_boot: int = 2000,
    seed: int = 0,
    quantile: float = 0.025,
) -> ObjectiveDifference:
    """``a − b`` of one capability score (the equal-weight mean of its tasks' means) on the same items, with the
    paired bootstrap quantiles ``(q, 1 − q)``: a 95 % interval by default."""
    return paired_objective_difference(items_by_task_a, items_by_task_b, lambda scores: scores["capability"],
                                       n_boot, seed, capability_of={k: "capability" for k in items_by_task_a},
                                       quantile=quantile)


__all__ = ["MixtureEffect", "ObjectiveDifference", "PairedDifference", "mixture_effect", "paired_difference",
           "paired_capability_difference", "paired_objective_difference"]
