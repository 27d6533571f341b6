"""Search the simplex for the mixture that maximizes an objective of predicted scores, under constraints.

Why not plain Dirichlet(1) sampling: at K = 17 a Dirichlet(1) point almost never puts more than ~0.6 on one
domain, so concentrated mixtures — and faces of the simplex — are only reached at the vertices; at K = 64 even
the interior is covered too thinly to land near an optimum. The search therefore

1. samples a pool that covers every region: the structured points (vertices, pairwise midpoints, centroid,
   prior, the evaluated candidates), Dirichlet(1), sparse Dirichlet (faces), vertex-heavy points
   ``t·e_i + (1−t)·x`` (concentrated mixtures), and Dirichlet around the prior at several concentrations
   (RegMix's recipe);
2. refines the best distinct points by a local search that stays on the (constrained) simplex: pairwise
   transfers of weight between domains and zero-sum perturbations, with a step that halves when nothing
   improves — so the optimum does not hinge on sampling luck;
3. returns the argmax and the robust choice RegMix and DeMix use (the mean of the top-k pool points), plus,
   with an ensemble of surrogates, a lower confidence bound choice.

``maximize_on_simplex`` works for any vectorized function (the benchmark uses synthetic ones with a known
optimum); ``search_mixture`` applies it to the capability surrogates and an ``Objective``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from mergemix_dagster.core.search.constraints import MixtureConstraints
from mergemix_dagster.core.search.designs import sample_simplex
from mergemix_dagster.core.errors import ConfigError, InfeasibleObjectiveError, SimplexError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.objective import Objective, ScoreScale, objective_values, prior_array

__all__ = ["Choice", "SearchResult", "SimplexMaximum", "maximize_on_simplex", "search_mixture"]

Choice = Literal["top_k_mean", "argmax", "lcb"]
CHUNK = 65_536  # rows evaluated at once: bounds memory at K = 64 and 10^6 points
REFINE_SHARE = 0.2  # share of the evaluation budget spent on local refinement


# ----------------------------------------------------------------------------------------------- sampling
def _structured(k: int, max_midpoints: int, rng: np.random.Generator) -> np.ndarray:
    rows = [np.eye(k), np.full((1, k), 1.0 / k)]
    pairs = list(combinations(range(k), 2))
    if len(pairs) > max_midpoints:
        pairs = [pairs[i] for i in rng.choice(len(pairs), size=max_midpoints, replace=False)]
    if pairs:
        mid = np.zeros((len(pairs), k))
        for r, (i, j) in enumerate(pairs):
            mid[r, i] = mid[r, j] = 0.5
        rows.append(mid)
    return np.vstack(rows)


def sample_pool(k: int, n: int, seed: int, prior: np.ndarray | None = None) -> np.ndarray:
    """``n`` points covering the simplex's interior, faces, vertex neighbourhoods and the prior's surroundings."""
    rng = np.random.default_rng(seed)
    p = np.full(k, 1.0 / k) if prior is None else np.asarray(prior, dtype=float) / np.sum(prior)
    p = np.clip(p, 1e-6, None)
    p = p / p.sum()
    shares = {"flat": 0.2, "sparse": 0.15, "vertex": 0.2, "prior": 0.45}
    counts = {name: int(n * s) for name, s in shares.items()}
    counts["prior"] += n - sum(counts.values())
    parts = [
        sample_simplex(k, counts["flat"], seed=int(rng.integers(2**31))),
        sample_simplex(k, counts["sparse"] // 2, seed=int(rng.integers(2**31)), concentration=0.3),
        sample_simplex(k, counts["sparse"] - counts["sparse"] // 2, seed=int(rng.integers(2**31)), concentration=0.05),
    ]
    m = counts["vertex"]
    t = rng.uniform(0.5, 1.0, size=(m, 1)) ** 0.5  # leans toward the vertex
    # the rest of the weight either uneven (a few other domains) or even (a thin tail over all of them)
    rest = np.vstack([
        sample_simplex(k, m // 2, seed=int(rng.integers(2**31)), concentration=0.5),
        sample_simplex(k, m - m // 2, seed=int(rng.integers(2**31)), concentration=20.0),
    ])
    parts.append(t * np.eye(k)[rng.integers(0, k, size=m)] + (1 - t) * rest)
    total = counts["prior"]
    scales = [0.5 * k, 2.0 * k, 8.0 * k, 32.0 * k]
    for i, c in enumerate(scales):
        m = total // len(scales) + (1 if i < total % len(scales) else 0)
        if m:
            x = rng.dirichlet(p * c, size=m)
            x = np.nan_to_num(x, nan=0.0)
            bad = ~(x.sum(axis=1) > 0)
            x[bad] = p
            parts.append(x / x.sum(axis=1, keepdims=True))
    return np.vstack(parts)


def _into_constraints(X: np.ndarray, constraints: MixtureConstraints | None) -> np.ndarray:
    """Map simplex points into the constrained set: scale into the lower-bound slack, then project."""
    if constraints is None or not constraints.active:
        return X
    lo = constraints.lo
    X = lo + (1.0 - lo.sum()) * X
    return constraints.project(X)


def _evaluate(f: Callable[[np.ndarray], np.ndarray], X: np.ndarray) -> np.ndarray:
    out = np.empty(X.shape[0])
    for start in range(0, X.shape[0], CHUNK):
        out[start:start + CHUNK] = np.asarray(f(X[start:start + CHUNK]), dtype=float)
    out[np.isnan(out)] = -np.inf
    return out


def _renormalize(X: np.ndarray) -> np.ndarray:
    X = np.clip(X, 0.0, None)
    return X / X.sum(axis=1, keepdims=True)


def project_simplex(Y: np.ndarray) -> np.ndarray:
    """Exact Euclidean projection of each row onto the simplex (sort-based, Duchi et al. 2008).

    Unlike clip-and-renormalize it sets small coordinates to exactly 0, so a local search can reach the
    faces of the simplex, where optima with unused domains live.
    """
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    k = Y.shape[1]
    U = -np.sort(-Y, axis=1)
    css = np.cumsum(U, axis=1) - 1.0
    idx = np.arange(1, k + 1)
    cond = U - css / idx > 0
    rho = k - 1 - np.argmax(cond[:, ::-1], axis=1)
    theta = css[np.arange(len(Y)), rho] / (rho + 1)
    X = np.maximum(Y - theta[:, None], 0.0)
    return X / X.sum(axis=1, keepdims=True)


def _distinct_top(X: np.ndarray, values: np.ndarray, m: int, min_l1: float) -> list[int]:
    order = np.argsort(-values, kind="stable")
    picked: list[int] = []
    for i in order:
        if not np.isfinite(values[i]):
            break
        if all(np.abs(X[i] - X[j]).sum() >= min_l1 for j in picked):
            picked.append(int(i))
            if len(picked) == m:
                break
    return picked


def _refine(
    f: Callable[[np.ndarray], np.ndarray],
    starts: np.ndarray,
    start_values: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    constraints: MixtureConstraints | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Batched stochastic local search from each start; returns improved points, values, evaluations used."""
    m, k = starts.shape
    # many small batches beat a few large ones for a local search; successive halving drops the worse
    # half of the starts each time a third of the budget is spent, so the best start gets most iterations
    per_iter = max(8, min(256, budget // max(1, m * 300)))
    best, best_v = starts.copy(), start_values.copy()
    step = np.full(m, 0.25)
    used = 0
    next_cut = budget // 3
    while used + m * per_iter <= budget and (step > 1e-6).any():
        if used >= next_cut and m > 2:
            keep = np.argsort(-best_v, kind="stable")[: max(2, m // 2)]
            best, best_v, step, m = best[keep], best_v[keep], step[keep], len(keep)
            next_cut += budget // 3
        half = per_iter // 2
        # pairwise transfers: move a share of the step from domain i to domain j
        i = rng.integers(0, k, size=(m, half))
        j = (i + rng.integers(1, k, size=(m, half))) % k if k > 1 else i
        amount = rng.uniform(0, 1, size=(m, half)) * step[:, None]
        moves = np.zeros((m, half, k))
        rows = np.arange(m)[:, None]
        cols = np.arange(half)[None, :]
        moves[rows, cols, i] -= amount
        moves[rows, cols, j] += amount
        # zero-sum perturbations of every coordinate
        noise = rng.normal(size=(m, per_iter - half, k))
        noise -= noise.mean(axis=2, keepdims=True)
        noise *= (step / np.sqrt(k))[:, None, None]
        cand = best[:, None, :] + np.concatenate([moves, noise], axis=1)
        cand = cand.reshape(-1, k)
        cand = constraints.project(cand) if constraints is not None and constraints.active else project_simplex(cand)
        vals = _evaluate(f, cand).reshape(m, per_iter)
        used += m * per_iter
        arg = vals.argmax(axis=1)
        top = vals[np.arange(m), arg]
        improved = top > best_v
        # tree surrogates are piecewise constant: walk along plateaus (ties) instead of stopping on them
        moved = top >= best_v
        cand = cand.reshape(m, per_iter, k)
        best[moved] = cand[np.arange(m), arg][moved]
        best_v[moved] = top[moved]
        step = np.where(improved, np.minimum(step * 1.5, 0.5), np.where(moved, step * 0.8, step * 0.5))
    return best, best_v, used


@dataclass(frozen=True)
class SimplexMaximum:
    """Result of ``maximize_on_simplex``: the argmax, the pool (for top-k choices) and what was spent."""

    argmax: np.ndarray
    value: float
    pool: np.ndarray
    pool_values: np.ndarray
    refined: np.ndarray
    refined_values: np.ndarray
    evaluations: int

    def top_k(self, k: int) -> np.ndarray:
        """Indices into the pool of its ``k`` best finite points."""
        order = np.argsort(-self.pool_values, kind="stable")
        order = order[np.isfinite(self.pool_values[order])]
        return order[: max(1, k)]

    def top_k_mean(self, k: int) -> np.ndarray:
        """The robust choice of RegMix/DeMix: the mean of the top-k pool points (on the simplex, feasible)."""
        return self.pool[self.top_k(k)].mean(axis=0)


def maximize_on_simplex(
    f: Callable[[np.ndarray], np.ndarray],
    k: int,
    n_evaluations: int = 100_000,
    seed: int = 0,
    prior: np.ndarray | None = None,
    include: np.ndarray | None = None,
    constraints: MixtureConstraints | None = None,
    refine: bool = True,
    n_starts: int = 16,
) -> SimplexMaximum:
    """Maximize a vectorized ``f: (n, k) -> (n,)`` over the (constrained) simplex with ~``n_evaluations`` calls.

    With ``refine=False`` the whole budget goes to the sampled pool.
    """
    if k < 1:
        raise ConfigError(f"simplex dimension must be >= 1, got {k}")
    if n_evaluations < 1:
        raise ConfigError(f"the search needs at least one evaluation, got {n_evaluations}")
    rng = np.random.default_rng(seed)
    refine_budget = int(n_evaluations * REFINE_SHARE) if refine and k > 1 else 0
    structured = _structured(k, max_midpoints=min(2_000, max(0, n_evaluations // 10)), rng=rng)
    extra = [structured]
    if prior is not None:
        extra.append(np.asarray(prior, dtype=float)[None, :] / np.sum(prior))
    if include is not None and len(include):
        extra.append(np.asarray(include, dtype=float))
    fixed = np.vstack(extra)
    n_pool = max(0, n_evaluations - refine_budget - fixed.shape[0])
    pool = np.vstack([fixed, sample_pool(k, n_pool, seed=int(rng.integers(2**31)), prior=prior)])
    pool = _into_constraints(pool, constraints)
    values = _evaluate(f, pool)
    if not np.isfinite(values).any():
        return SimplexMaximum(pool[0], float("-inf"), pool, values, pool[:0], values[:0], pool.shape[0])
    refined, refined_values, used = pool[:0], values[:0], 0
    if refine_budget:
        starts = _distinct_top(pool, values, n_starts, min_l1=0.1)
        refined, refined_values, used = _refine(
            f, pool[starts], values[starts], refine_budget, rng, constraints
        )
    best_pool = int(np.argmax(values))
    if refined.shape[0] and refined_values.max() > values[best_pool]:
        r = int(np.argmax(refined_values))
        argmax, value = refined[r], float(refined_values[r])
    else:
        argmax, value = pool[best_pool], float(values[best_pool])
    return SimplexMaximum(argmax, value, pool, values, refined, refined_values, pool.shape[0] + used)


# ------------------------------------------------------------------------------------- over the surrogates
@dataclass(frozen=True)
class SearchResult:
    """What the search proposes: the chosen mixture under the requested ``choice`` and the alternatives."""

    mixture: Mixture
    choice: str
    predicted: dict[str, float]
    predicted_objective: float
    argmax: Mixture
    argmax_objective: float
    top_k_mean: Mixture
    top_k_mean_objective: float
    n_samples: int
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    lcb_objective: float | None = None
    top: list[tuple[Mixture, float]] = field(default_factory=list)


def _on_simplex(domains: Sequence[str], row: np.ndarray, constraints: MixtureConstraints | None) -> Mixture:
    row = np.asarray(row, dtype=float)[None, :]
    row = constraints.project(row) if constraints is not None and constraints.active else _renormalize(row)
    return Mixture.from_array(domains, row[0])


def search_mixture(
    surrogates,
    objective: Objective,
    scale: ScoreScale,
    n_samples: int = 100_000,
    seed: int = 0,
    include: Sequence[Mixture] = (),
    top_k: int = 100,
    choice: Choice = "top_k_mean",
    constraints: MixtureConstraints | None = None,
    refine: bool = True,
    lcb_quantile: float = 0.1,
) -> SearchResult:
    """The best mixture under the surrogates' predictions, the objective and the constraints.

    ``surrogates`` needs ``domains`` and ``predict(X) -> {target: (n,)}``; for ``choice="lcb"`` (or intervals)
    also ``predict_members(X) -> {target: (members, n)}`` (an ensemble). Every returned mixture satisfies the
    constraints exactly. Raises ``InfeasibleObjectiveError`` when no point meets the objective's floors.
    """
    domains = tuple(surrogates.domains)
    k = len(domains)
    if n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
    if choice not in ("top_k_mean", "argmax", "lcb"):
        raise ConfigError(f"search choice must be top_k_mean, argmax or lcb, got {choice!r}")
    if constraints is not None and tuple(constraints.domains) != domains:
        raise ConfigError(f"constraint domains {constraints.domains} differ from surrogate domains {domains}")
    inc = []
    for m in include:
        if not isinstance(m, Mixture):
            m = Mixture.from_dict(m, domains)
        if set(m.domains) != set(domains):
            raise SimplexError(f"included mixture domains {m.domains} differ from surrogate domains {domains}")
        inc.append([m.as_dict()[d] for d in domains])
    prior = prior_array(objective, domains)

    def f(X: np.ndarray) -> np.ndarray:
        return objective_values(surrogates.predict(X), objective, scale, X, domains)

    found = maximize_on_simplex(
        f, k, n_evaluations=int(n_samples), seed=seed, prior=prior,
        include=np.asarray(inc) if inc else None, constraints=constraints, refine=refine,
    )
    if not np.isfinite(found.value):
        raise InfeasibleObjectiveError(
            f"no mixture meets the objective's floors under the surrogate predictions ({objective.describe()}); "
            "lower the floors or check the surrogates' quality"
        )
    argmax = _on_simplex(domains, found.argmax, constraints)
    robust = _on_simplex(domains, found.top_k_mean(top_k), constraints)
    argmax_value = float(f(argmax.as_array()[None, :])[0])
    robust_value = float(f(robust.as_array()[None, :])[0])
    chosen = {"argmax": argmax, "top_k_mean": robust}.get(choice)
    lcb_value = None
    intervals: dict[str, tuple[float, float]] = {}
    members = getattr(surrogates, "predict_members", None)
    if choice == "lcb":
        if members is None or getattr(surrogates, "n_members", 0) < 2:
            raise ConfigError("choice 'lcb' needs an ensemble of surrogates (search.ensemble >= 2)")
        cand_idx = found.top_k(max(top_k, 500))
        cands = np.vstack([found.pool[cand_idx], found.refined, argmax.as_array()[None, :], robust.as_array()[None, :]])
        lcb = lower_bound(members(cands), objective, scale, cands, domains, lcb_quantile)
        best = int(np.argmax(lcb))
        chosen = _on_simplex(domains, cands[best], constraints)
        lcb_value = float(lcb[best])
    assert chosen is not None
    x = chosen.as_array()[None, :]
    predicted = {t: float(v[0]) for t, v in surrogates.predict(x).items()}
    if members is not None and getattr(surrogates, "n_members", 0) >= 2:
        for t, v in members(x).items():
            intervals[t] = (float(np.quantile(v[:, 0], lcb_quantile)), float(np.quantile(v[:, 0], 1 - lcb_quantile)))
        if lcb_value is None:
            lcb_value = float(lower_bound(members(x), objective, scale, x, domains, lcb_quantile)[0])
    order = found.top_k(10)
    top = [(Mixture.from_array(domains, found.pool[i]), float(found.pool_values[i])) for i in order]
    return SearchResult(
        mixture=chosen,
        choice=choice,
        predicted=predicted,
        predicted_objective=float(f(x)[0]),
        argmax=argmax,
        argmax_objective=argmax_value,
        top_k_mean=robust,
        top_k_mean_objective=robust_value,
        n_samples=found.evaluations,
        intervals=intervals,
        lcb_objective=lcb_value,
        top=top,
    )


def lower_bound(
    member_scores: Mapping[str, np.ndarray],
    objective: Objective,
    scale: ScoreScale,
    X: np.ndarray,
    domains: Sequence[str],
    quantile: float,
) -> np.ndarray:
    """Per row, the ``quantile`` of the objective over the ensemble members (uncertainty propagated)."""
    n_members = next(iter(member_scores.values())).shape[0]
    per_member = np.vstack([
        objective_values({t: v[m] for t, v in member_scores.items()}, objective, scale, X, domains)
        for m in range(n_members)
    ])
    per_member[~np.isfinite(per_member)] = -1e9  # a floor broken by some members lowers the bound hard
    return np.quantile(per_member, quantile, axis=0)
