"""Utilities over capability scores and the argmax of the utility over a fine sampling of the simplex.

Scores of different capabilities live on different scales (accuracy 0.25–0.4 on one benchmark, 0.6–0.9
on another), so each is min–max normalized with the range observed on the seed candidates before being
averaged: a capability that barely moves cannot dominate one that moves a lot, or vice versa.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .designs import sample_simplex, structured_points
from .errors import ConfigError, SimplexError
from .mixture import Mixture

if TYPE_CHECKING:
    from .surrogate import CapabilitySurrogates


@dataclass(frozen=True)
class Utility:
    """How capability scores combine into one number to maximize.

    ``capability_weights``: ``None`` = macro-average of the normalized capabilities (the default);
    otherwise a weighted average with these (non-negative) weights — capabilities left out weigh 0.
    ``floors``: optional minimum *normalized* score per capability; a point below any floor has
    utility ``-inf`` (never chosen while some point satisfies every floor).
    """

    capability_weights: Mapping[str, float] | None = None
    floors: Mapping[str, float] | None = None


@dataclass(frozen=True)
class ScoreScale:
    """Min–max of the observed scores per capability; ``hi == lo`` means scale 1 (no division by 0)."""

    lo: dict[str, float]
    hi: dict[str, float]

    def normalize(self, capability: str, values: np.ndarray) -> np.ndarray:
        if capability not in self.lo:
            raise ConfigError(f"no score scale for capability {capability!r}; have {sorted(self.lo)}")
        lo, hi = self.lo[capability], self.hi[capability]
        span = hi - lo
        if not (span > 0):
            span = 1.0
        return (np.asarray(values, dtype=float) - lo) / span


def fit_score_scale(scores: Mapping[str, np.ndarray]) -> ScoreScale:
    """Min–max per capability of the observed (finite) scores."""
    lo, hi = {}, {}
    for cap, values in scores.items():
        v = np.asarray(values, dtype=float).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise ConfigError(f"capability {cap!r} has no finite scores to fit a score scale on")
        lo[str(cap)] = float(v.min())
        hi[str(cap)] = float(v.max())
    return ScoreScale(lo, hi)


def _weights(utility: Utility, capabilities: Sequence[str]) -> dict[str, float]:
    if utility.capability_weights is None:
        return {c: 1.0 / len(capabilities) for c in capabilities}
    raw = {str(c): float(w) for c, w in utility.capability_weights.items()}
    unknown = sorted(set(raw) - set(capabilities))
    if unknown:
        raise ConfigError(f"utility weights name unknown capabilities {unknown}; have {sorted(capabilities)}")
    for c, w in raw.items():
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"utility weight of capability {c!r} must be a finite number >= 0, got {w}")
    total = sum(raw.values())
    if total <= 0:
        raise ConfigError(f"utility weights sum to {total}: at least one capability needs a positive weight")
    return {c: w / total for c, w in raw.items() if w > 0}


def utility_values(scores: Mapping[str, np.ndarray], utility: Utility, scale: ScoreScale) -> np.ndarray:
    """Utility of each row: weighted mean of normalized capability scores, ``-inf`` below a floor."""
    caps = list(scores)
    if not caps:
        raise ConfigError("no capability scores to compute a utility from")
    arrays = {c: np.atleast_1d(np.asarray(scores[c], dtype=float)) for c in caps}
    n = len(next(iter(arrays.values())))
    if any(len(a) != n for a in arrays.values()):
        raise ConfigError(f"capability score arrays differ in length: { {c: len(a) for c, a in arrays.items()} }")
    weights = _weights(utility, caps)
    out = np.zeros(n)
    for c, w in weights.items():
        out += w * scale.normalize(c, arrays[c])
    if utility.floors:
        for c, floor in utility.floors.items():
            if c not in arrays:
                raise ConfigError(f"utility floor names unknown capability {c!r}; have {sorted(caps)}")
            out[scale.normalize(c, arrays[c]) < float(floor)] = -np.inf
    out[~np.isfinite(out) & ~np.isneginf(out)] = -np.inf  # NaN predictions never win
    return out


@dataclass(frozen=True)
class SearchResult:
    mixture: Mixture
    predicted: dict[str, float]
    predicted_utility: float
    n_samples: int
    top: list[tuple[Mixture, float]] = field(default_factory=list)


def _project(row: np.ndarray) -> np.ndarray:
    row = np.clip(np.asarray(row, dtype=float), 0.0, None)
    row[row < 1e-12] = 0.0
    total = row.sum()
    return row if abs(total - 1.0) <= 1e-12 else row / total


def search_mixture(
    surrogates: "CapabilitySurrogates",
    utility: Utility,
    scale: ScoreScale,
    n_samples: int = 100_000,
    seed: int = 0,
    include: Sequence[Mixture] = (),
    top_k: int = 10,
) -> SearchResult:
    """Argmax of the predicted utility over a fine sampling of the simplex.

    Candidates: ``n_samples`` Dirichlet(1) points, the vertices, pairwise midpoints and centroid, and
    ``include`` (e.g. the seed design). Raises ``SimplexError``-free results: the returned mixture is
    renormalized exactly onto the simplex. If every point is below a floor, raises ``ConfigError``.
    """
    domains = tuple(surrogates.domains)
    k = len(domains)
    if n_samples < 0:
        raise ConfigError(f"n_samples must be >= 0, got {n_samples}")
    parts = [structured_points(k)]
    if include:
        inc = []
        for m in include:
            if not isinstance(m, Mixture):
                m = Mixture.from_dict(m, domains)
            if set(m.domains) != set(domains):
                raise SimplexError(f"included mixture domains {m.domains} differ from surrogate domains {domains}")
            d = m.as_dict()
            inc.append([d[x] for x in domains])
        parts.append(np.asarray(inc, dtype=float))
    parts.append(sample_simplex(k, int(n_samples), seed=seed))
    X = np.vstack(parts)
    preds = surrogates.predict(X)
    u = utility_values(preds, utility, scale)
    if not np.isfinite(u).any():
        raise ConfigError(
            "no mixture satisfies the utility floors under the surrogate predictions "
            f"(floors {dict(utility.floors or {})}); lower the floors"
        )
    order = np.argsort(-u, kind="stable")
    best = int(order[0])
    mixture = Mixture.from_array(domains, _project(X[best]))
    top = [
        (Mixture.from_array(domains, _project(X[i])), float(u[i]))
        for i in order[: max(1, top_k)]
        if np.isfinite(u[i])
    ]
    return SearchResult(
        mixture=mixture,
        predicted={c: float(preds[c][best]) for c in preds},
        predicted_utility=float(u[best]),
        n_samples=int(X.shape[0]),
        top=top,
    )
