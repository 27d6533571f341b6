"""Constraints of a real training run on the mixture: per-domain bounds, pinned weights, token availability.

All of them are box bounds ``lower_d ≤ α_d ≤ upper_d`` on the simplex, so the feasible set is convex: the
mean of feasible points is feasible, and the Euclidean projection onto it is exact and cheap (bisection on
one scalar). Token availability turns into an upper bound: a target run of ``T`` tokens may use at most
``max_epochs · N_d`` tokens of domain ``d`` (``N_d`` available), so ``α_d ≤ max_epochs · N_d / T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from mergemix_dagster.core.errors import ConfigError, InfeasibleConstraintsError
from mergemix_dagster.core.mixture import Mixture


@dataclass(frozen=True)
class MixtureConstraints:
    """Box bounds per domain on the simplex, with the reason of each binding bound for reports."""

    domains: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    reasons: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.domains)
        if len(self.lower) != k or len(self.upper) != k:
            raise ConfigError(f"constraints need {k} lower and upper bounds, got {len(self.lower)}/{len(self.upper)}")
        for d, lo, hi in zip(self.domains, self.lower, self.upper):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ConfigError(f"bounds of domain {d!r} must be finite, got [{lo}, {hi}]")
            if lo < 0 or hi > 1:
                raise ConfigError(f"bounds of domain {d!r} must lie in [0, 1], got [{lo}, {hi}]")
            if lo > hi:
                raise InfeasibleConstraintsError(
                    f"domain {d!r}: lower bound {lo:.6g} is above its upper bound {hi:.6g} "
                    f"({self.reasons.get(d, 'min/max weight settings')})"
                )
        if math.fsum(self.lower) > 1 + 1e-12:
            raise InfeasibleConstraintsError(
                f"the minimum weights sum to {math.fsum(self.lower):.6g} > 1: {dict(zip(self.domains, self.lower))}"
            )
        if math.fsum(self.upper) < 1 - 1e-12:
            raise InfeasibleConstraintsError(
                f"the maximum weights sum to {math.fsum(self.upper):.6g} < 1, so no mixture fits them: "
                f"{ {d: round(u, 6) for d, u in zip(self.domains, self.upper)} } "
                f"({'; '.join(f'{d}: {r}' for d, r in self.reasons.items()) or 'max weight settings'})"
            )

    @classmethod
    def none(cls, domains: Sequence[str]) -> "MixtureConstraints":
        k = len(domains)
        return cls(tuple(domains), (0.0,) * k, (1.0,) * k)

    @property
    def lo(self) -> np.ndarray:
        return np.asarray(self.lower, dtype=float)

    @property
    def hi(self) -> np.ndarray:
        return np.asarray(self.upper, dtype=float)

    @property
    def active(self) -> bool:
        return bool((self.lo > 0).any() or (self.hi < 1).any())

    def satisfied(self, X: np.ndarray, tol: float = 0.0) -> np.ndarray:
        """Row mask: within bounds (up to ``tol``) and summing to 1 (up to 1e-9)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        return (
            (X >= self.lo - tol).all(axis=1)
            & (X <= self.hi + tol).all(axis=1)
            & (np.abs(X.sum(axis=1) - 1.0) <= 1e-9)
        )

    def project(self, X: np.ndarray) -> np.ndarray:
        """Euclidean projection of each row onto ``{x : lower ≤ x ≤ upper, Σx = 1}``.

        ``x = clip(y − τ, lower, upper)`` with the scalar ``τ`` found by bisection (the sum is monotone in τ);
        a last exact step puts the rounding residual on a coordinate with room, so bounds hold exactly.
        """
        Y = np.atleast_2d(np.asarray(X, dtype=float))
        lo, hi = self.lo, self.hi
        a = (Y - hi).min(axis=1) - 1.0  # τ low enough that every coordinate sits at its upper bound
        b = (Y - lo).max(axis=1) + 1.0  # τ high enough that every coordinate sits at its lower bound
        for _ in range(100):
            mid = 0.5 * (a + b)
            s = np.clip(Y - mid[:, None], lo, hi).sum(axis=1)
            too_big = s > 1.0
            a = np.where(too_big, mid, a)
            b = np.where(too_big, b, mid)
        out = np.clip(Y - (0.5 * (a + b))[:, None], lo, hi)
        return _fix_sum(out, lo, hi)

    def clamp_mixture(self, mixture: Mixture) -> Mixture:
        return Mixture.from_array(self.domains, self.project(mixture.as_array()[None, :])[0])

    def describe(self) -> dict[str, list[float]]:
        return {d: [lo, hi] for d, lo, hi in zip(self.domains, self.lower, self.upper) if lo > 0 or hi < 1}


def _fix_sum(X: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Move the floating-point residual of each row's sum onto coordinates with room, within bounds."""
    X = X.copy()
    for _ in range(3):
        resid = 1.0 - X.sum(axis=1)
        if np.all(np.abs(resid) <= 1e-15):
            break
        for i in np.where(np.abs(resid) > 1e-15)[0]:
            r = resid[i]
            room = (hi - X[i]) if r > 0 else (X[i] - lo)
            j = int(np.argmax(room))
            X[i, j] = min(hi[j], max(lo[j], X[i, j] + r))
    return X


def token_upper_bounds(
    available_tokens: Mapping[str, int], target_tokens: int, max_epochs: float
) -> dict[str, float]:
    """``α_d ≤ max_epochs · N_d / T`` for every domain with a token count (capped at 1)."""
    if target_tokens <= 0:
        raise ConfigError(f"target tokens must be > 0, got {target_tokens}")
    if not max_epochs > 0:
        raise ConfigError(f"max_epochs must be > 0, got {max_epochs}")
    out = {}
    for d, n in available_tokens.items():
        if n < 0:
            raise ConfigError(f"domain {d!r} has a negative token count {n}")
        out[d] = min(1.0, max_epochs * float(n) / float(target_tokens))
    return out


def build_constraints(
    domains: Sequence[str],
    min_weight: Mapping[str, float] | None = None,
    max_weight: Mapping[str, float] | None = None,
    pinned: Mapping[str, float] | None = None,
    available_tokens: Mapping[str, int] | None = None,
    target_tokens: int | None = None,
    max_epochs: float = 4.0,
) -> MixtureConstraints:
    """Combine per-domain min/max weights, pinned weights and the token bound into one box.

    Raises ``ConfigError`` for unknown domains and ``InfeasibleConstraintsError`` when no mixture fits,
    naming the bounds that conflict — before any training or evaluation is spent on them.
    """
    domains = tuple(domains)
    lo = {d: 0.0 for d in domains}
    hi = {d: 1.0 for d in domains}
    reasons: dict[str, str] = {}
    for name, table in (("min_weight", min_weight), ("max_weight", max_weight), ("pinned", pinned)):
        unknown = sorted(set(table or {}) - set(domains))
        if unknown:
            raise ConfigError(f"search.{name} names unknown domains {unknown}; domains are {list(domains)}")
    for d, v in (min_weight or {}).items():
        lo[d] = max(lo[d], float(v))
        reasons[d] = f"min_weight {v}"
    for d, v in (max_weight or {}).items():
        hi[d] = min(hi[d], float(v))
        reasons[d] = f"max_weight {v}"
    for d, v in (pinned or {}).items():
        lo[d], hi[d] = float(v), float(v)
        reasons[d] = f"pinned at {v}"
    if target_tokens is not None:
        if available_tokens is None:
            raise ConfigError("target tokens are set but no available token counts were given")
        missing = sorted(set(domains) - set(available_tokens))
        if missing:
            raise ConfigError(f"no available token count for domains {missing}")
        for d, bound in token_upper_bounds(available_tokens, target_tokens, max_epochs).items():
            if d in hi and bound < hi[d]:
                hi[d] = bound
                reasons[d] = (
                    f"token availability: {available_tokens[d]:,} tokens × {max_epochs:g} epochs / "
                    f"{target_tokens:,} target tokens = {bound:.4g}"
                )
    return MixtureConstraints(domains, tuple(lo[d] for d in domains), tuple(hi[d] for d in domains), reasons)
