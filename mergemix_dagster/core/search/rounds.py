"""DeMix's iterative rounds: propose candidates around the predicted optimum, measure them, refit, repeat.

After the seed design (round 0), each round r fits the surrogates on every mixture measured so far, searches,
and proposes ``size`` new mixtures: the search's choice and its argmax first (so every round *verifies* its
predicted optimum), then points spread farthest-first over the best part of the search's pool. Rounds shrink
(N, N/2, N/4 by default) because the region worth measuring shrinks. A round stops the loop when its verified
optimum does not beat the best objective measured before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mergemix_dagster.core.search.constraints import MixtureConstraints
from mergemix_dagster.core.search.designs import farthest_first
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.objective import Objective, ScoreScale, objective_values, prior_array
from mergemix_dagster.core.search.simplex import SearchResult, maximize_on_simplex, search_mixture

MIN_NEW_DISTANCE = 0.02  # L1: a proposal this close to a measured mixture teaches the surrogate nothing


@dataclass(frozen=True)
class RoundProposal:
    mixtures: list[Mixture]
    search: SearchResult


def propose_round(
    surrogates,
    objective: Objective,
    scale: ScoreScale,
    size: int,
    measured: np.ndarray,
    seed: int,
    n_samples: int,
    constraints: MixtureConstraints | None = None,
    choice: str = "top_k_mean",
    top_k: int = 100,
) -> RoundProposal:
    """``size`` new mixtures around the predicted optimum, none within ``MIN_NEW_DISTANCE`` of ``measured``."""
    domains = tuple(surrogates.domains)
    result = search_mixture(
        surrogates, objective, scale, n_samples=n_samples, seed=seed, choice=choice, top_k=top_k,
        constraints=constraints,
    )
    first = [result.mixture.as_array(), result.argmax.as_array()]

    def f(X: np.ndarray) -> np.ndarray:
        return objective_values(surrogates.predict(X), objective, scale, X, domains)

    found = maximize_on_simplex(
        f, len(domains), n_evaluations=max(1000, n_samples // 4), seed=seed + 1,
        prior=prior_array(objective, domains), constraints=constraints, refine=False,
    )
    region = found.pool[found.top_k(max(20 * size, 200))]
    chosen: list[np.ndarray] = []
    known = np.asarray(measured, dtype=float).reshape(-1, len(domains))
    for x in first:
        taken = np.vstack([known, *chosen]) if chosen else known
        if len(taken) == 0 or np.abs(taken - x).sum(axis=1).min() >= MIN_NEW_DISTANCE:
            chosen.append(x)
    taken = np.vstack([known, *chosen]) if chosen else known
    far = region[np.abs(region[:, None, :] - taken[None, :, :]).sum(axis=2).min(axis=1) >= MIN_NEW_DISTANCE] \
        if len(taken) else region
    chosen.extend(farthest_first(far, taken, size - len(chosen)))
    mixtures = [Mixture.from_array(domains, x / x.sum()) for x in chosen[:size]]
    return RoundProposal(mixtures, result)


def best_measured(objective_by_candidate: Sequence[float]) -> float:
    finite = [v for v in objective_by_candidate if np.isfinite(v)]
    return float(max(finite)) if finite else float("-inf")
