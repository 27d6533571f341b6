"""Mixtures: weight vectors on the probability simplex over named domains."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from mergemix_dagster.core.errors import SimplexError

SIMPLEX_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Mixture:
    """Domain weights α (or data ratios λ): non-negative, finite, summing to 1.

    Construction validates, so a ``Mixture`` in hand is always on the simplex.
    """

    domains: tuple[str, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.domains) != len(self.weights):
            raise SimplexError(
                f"{len(self.domains)} domains but {len(self.weights)} weights: {self.domains} {self.weights}"
            )
        if len(set(self.domains)) != len(self.domains):
            raise SimplexError(f"duplicate domain names in mixture: {self.domains}")
        if not self.domains:
            raise SimplexError("a mixture needs at least one domain")
        for name, w in zip(self.domains, self.weights):
            if not math.isfinite(w):
                raise SimplexError(f"weight of domain {name!r} is not finite: {w}")
            if w < -SIMPLEX_TOLERANCE:
                raise SimplexError(f"weight of domain {name!r} is negative: {w}")
        total = math.fsum(self.weights)
        if abs(total - 1.0) > SIMPLEX_TOLERANCE:
            raise SimplexError(f"weights sum to {total:.9f}, not 1: {dict(zip(self.domains, self.weights))}")

    @classmethod
    def from_dict(cls, weights: Mapping[str, float], domains: Sequence[str] | None = None) -> "Mixture":
        """Build from ``{domain: weight}``; ``domains`` fixes the order and must match the keys."""
        order = tuple(domains) if domains is not None else tuple(weights)
        if set(order) != set(weights):
            missing = sorted(set(order) - set(weights))
            extra = sorted(set(weights) - set(order))
            raise SimplexError(f"mixture domains disagree: missing {missing}, unexpected {extra}")
        return cls(order, tuple(float(weights[d]) for d in order))

    @classmethod
    def from_array(cls, domains: Sequence[str], values: Sequence[float] | np.ndarray) -> "Mixture":
        return cls(tuple(domains), tuple(float(v) for v in np.asarray(values, dtype=float).ravel()))

    @classmethod
    def uniform(cls, domains: Sequence[str]) -> "Mixture":
        k = len(domains)
        return cls(tuple(domains), tuple(1.0 / k for _ in range(k)))

    @classmethod
    def vertex(cls, domains: Sequence[str], domain: str) -> "Mixture":
        return cls(tuple(domains), tuple(1.0 if d == domain else 0.0 for d in domains))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.domains, self.weights))

    def as_array(self) -> np.ndarray:
        return np.asarray(self.weights, dtype=float)

    def __getitem__(self, domain: str) -> float:
        return self.as_dict()[domain]

    def label(self, digits: int = 2) -> str:
        """Short human-readable form, e.g. ``math=0.50 code=0.50``."""
        return " ".join(f"{d}={w:.{digits}f}" for d, w in zip(self.domains, self.weights))
