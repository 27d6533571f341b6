"""Objectives: how predicted scores (capabilities, tasks, losses) combine into one number to maximize.

Targets live on different scales and point different ways (accuracy up, loss or bits-per-byte down), so each
is first turned into a *goodness* in roughly [0, 1]: min–max normalized with the range observed on the
evaluated candidates, flipped for targets to minimize. Then:

- ``aggregate="mean"``: weighted mean of goodness. When every score is close to linear in α (what
  first-order merge theory predicts) this is linear in α and its optimum is a vertex — a one-domain mixture.
- ``aggregate="min"``: maximin — the weakest target decides, which rewards balance (no target left behind).
- ``floors``: a hard minimum (maximize) or maximum (minimize) per target in the target's own units, e.g.
  "no capability below the base model"; points that break one are never chosen.
- ``kl_weight``: subtract ``kl_weight · KL(α ‖ prior)``, a pull toward a prior mixture (the corpora's natural
  token distribution or the team's current mixture), as Olmix does. It makes the optimum interior unless the
  evidence for moving away is strong, and its weight says how much the proxies are trusted.
- ``excluded``: targets left out of the aggregate, with the reason. A target the mixture does not move beyond
  its measurement noise is excluded (``core/search/resolution.py``: a paired permutation test on per-item
  scores; ``resolve_targets`` is the unpaired fallback): min–max normalization would stretch that noise to the
  full [0, 1] range, and under maximin the noisiest target would then decide the mixture. An excluded target
  is still protected by a floor (``resolution.protection_floors``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, Mapping, Sequence

import numpy as np

from mergemix_dagster.core.errors import ConfigError

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class Objective:
    """What "best mixture" means. Every field has a default, so ``Objective()`` is the macro-average."""

    weights: Mapping[str, float] | None = None
    directions: Mapping[str, Direction] = field(default_factory=dict)
    aggregate: Literal["mean", "min"] = "mean"
    floors: Mapping[str, float] = field(default_factory=dict)
    prior: Mapping[str, float] | None = None
    kl_weight: float = 0.0
    excluded: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.aggregate not in ("mean", "min"):
            raise ConfigError(f"objective aggregate must be 'mean' or 'min', got {self.aggregate!r}")
        for t, d in self.directions.items():
            if d not in ("maximize", "minimize"):
                raise ConfigError(f"direction of {t!r} must be 'maximize' or 'minimize', got {d!r}")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ConfigError(f"kl_weight must be a finite number >= 0, got {self.kl_weight}")
        if self.kl_weight > 0 and self.prior is None:
            raise ConfigError("kl_weight > 0 needs a prior mixture to pull toward")
        for t, v in self.floors.items():
            if not math.isfinite(float(v)):
                raise ConfigError(f"floor of {t!r} must be a finite number, got {v}")

    def direction(self, target: str) -> Direction:
        return self.directions.get(target, "maximize")

    def target_weights(self, targets: Sequence[str]) -> dict[str, float]:
        """Normalized non-negative weights over ``targets`` minus the excluded ones (equal when none are given)."""
        unknown = sorted(set(self.weights or {}) - set(targets))
        if unknown:
            raise ConfigError(f"objective weights name unknown targets {unknown}; have {sorted(targets)}")
        kept = [t for t in targets if t not in self.excluded]
        if not kept:
            raise ConfigError(f"every target is excluded from the objective: {dict(self.excluded)}")
        if self.weights is None:
            return {t: 1.0 / len(kept) for t in kept}
        raw = {str(t): float(w) for t, w in self.weights.items() if t not in self.excluded}
        for t, w in raw.items():
            if not math.isfinite(w) or w < 0:
                raise ConfigError(f"objective weight of {t!r} must be a finite number >= 0, got {w}")
        total = sum(raw.values())
        if total <= 0:
            raise ConfigError(f"objective weights sum to {total}: at least one target needs a positive weight")
        return {t: w / total for t, w in raw.items() if w > 0}

    def describe(self) -> str:
        """One line a person can read, e.g. ``maximin of 4 capabilities, floors at base, KL 0.05 to tokens``."""
        parts = [("weighted mean" if self.weights else "mean") if self.aggregate == "mean" else "maximin"]
        minimized = sorted(t for t, d in self.directions.items() if d == "minimize")
        if minimized:
            parts.append(f"minimizing {', '.join(minimized)}")
        if self.floors:
            parts.append("floors " + ", ".join(f"{t}≥{v:.3g}" if self.direction(t) == "maximize" else f"{t}≤{v:.3g}"
                                               for t, v in sorted(self.floors.items())))
        if self.kl_weight > 0:
            parts.append(f"KL penalty {self.kl_weight:g} toward the prior")
        if self.excluded:
            parts.append("not optimized (within noise): " + ", ".join(sorted(self.excluded)))
        return "; ".join(parts)


@dataclass(frozen=True)
class ScoreScale:
    """Min–max of the observed scores per target; ``hi == lo`` means scale 1 (no division by 0)."""

    lo: dict[str, float]
    hi: dict[str, float]

    def normalize(self, target: str, values: np.ndarray) -> np.ndarray:
        if target not in self.lo:
            raise ConfigError(f"no score scale for {target!r}; have {sorted(self.lo)}")
        lo, hi = self.lo[target], self.hi[target]
        span = hi - lo
        if not (span > 0):
            span = 1.0
        return (np.asarray(values, dtype=float) - lo) / span

    def goodness(self, target: str, values: np.ndarray, direction: Direction) -> np.ndarray:
        """Normalized so that higher is better: 0 at the worst observed score, 1 at the best."""
        z = self.normalize(target, values)
        return z if direction == "maximize" else 1.0 - z


def fit_score_scale(scores: Mapping[str, np.ndarray]) -> ScoreScale:
    """Min–max per target of the observed (finite) scores."""
    lo, hi = {}, {}
    for t, values in scores.items():
        v = np.asarray(values, dtype=float).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise ConfigError(f"{t!r} has no finite scores to fit a score scale on")
        lo[str(t)] = float(v.min())
        hi[str(t)] = float(v.max())
    return ScoreScale(lo, hi)


@dataclass(frozen=True)
class TargetResolution:
    """How far the mixture moves one target compared with its noise (both in the target's own units).

    Under the paired rule (``core/search/resolution.py``) ``p_value`` and ``paired_se`` are set and ``noise``
    repeats ``paired_se``; under the unpaired fallback they are None and ``noise`` is the base's stderr.
    """

    target: str
    spread: float
    noise: float | None
    resolved: bool
    reason: str
    p_value: float | None = None
    paired_se: float | None = None


def resolve_targets(
    scores: Mapping[str, np.ndarray], noise: Mapping[str, float | None], min_spread_in_noise: float,
    keep_all_if_none: bool = True,
) -> dict[str, TargetResolution]:
    """Which targets the mixture moves by at least ``min_spread_in_noise`` times their noise (the unpaired rule,
    the fallback for targets without per-item scores).

    ``scores``: the measured scores per target (the seed design and the base); ``noise``: a standard error per
    target (lm-eval's stderr of the benchmark mean). A target with no noise estimate is kept (and says so);
    ``min_spread_in_noise = 0`` keeps every target. If no target is resolved, all are kept (unless
    ``keep_all_if_none`` is False, for a caller that judges that over more targets: ``keep_if_none_resolved``).
    """
    if not (math.isfinite(min_spread_in_noise) and min_spread_in_noise >= 0):
        raise ConfigError(f"min_spread_in_noise must be a finite number >= 0, got {min_spread_in_noise}")
    out: dict[str, TargetResolution] = {}
    for t, values in scores.items():
        v = np.asarray(values, dtype=float).ravel()
        v = v[np.isfinite(v)]
        spread = float(v.max() - v.min()) if v.size else 0.0
        sigma = noise.get(t)
        if sigma is None or not math.isfinite(sigma) or sigma <= 0:
            out[t] = TargetResolution(t, spread, None, True, "no noise estimate: kept")
        elif spread >= min_spread_in_noise * sigma:
            out[t] = TargetResolution(t, spread, float(sigma), True,
                                      f"spread {spread:.3g} = {spread / sigma:.2g}× its noise {sigma:.3g}")
        else:
            larger = (min_spread_in_noise * sigma / spread) ** 2 if spread > 0 else math.inf
            out[t] = TargetResolution(
                t, spread, float(sigma), False,
                f"the mixture moves it by {spread:.3g}, {spread / sigma:.2g}× its noise {sigma:.3g} "
                f"(< {min_spread_in_noise:g}×): differences are noise; a benchmark ~{larger:.1f}× larger "
                "(standard error ∝ 1/√items) would resolve it",
            )
    return keep_if_none_resolved(out) if keep_all_if_none else out


NONE_RESOLVED = "kept, since no target is resolved"  # the end of every reason when no target is resolved


def keep_if_none_resolved(out: Mapping[str, TargetResolution]) -> dict[str, TargetResolution]:
    """All targets kept when none is resolved: excluding everything would leave nothing to optimize."""
    if out and not any(r.resolved for r in out.values()):
        return {t: replace(r, resolved=True, reason=f"{r.reason}; {NONE_RESOLVED}") for t, r in out.items()}
    return dict(out)


def none_resolved(reasons: Sequence[str]) -> bool:
    """Whether ``keep_if_none_resolved`` kept every target because none was resolved (from their reasons,
    as ``mixture.json`` records them): the mixture is then chosen on differences within noise."""
    return bool(reasons) and all(str(r).endswith(NONE_RESOLVED) for r in reasons)


def kl_to_prior(X: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``KL(α ‖ prior)`` per row, with ``0 · log 0 = 0``; ``inf`` where α puts weight on a zero-prior domain."""
    X = np.atleast_2d(np.asarray(X, dtype=float))
    p = np.asarray(prior, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(X > 0, X * (np.log(np.where(X > 0, X, 1.0)) - np.log(p)), 0.0)
    return terms.sum(axis=1)


def prior_array(objective: Objective, domains: Sequence[str]) -> np.ndarray | None:
    if objective.prior is None:
        return None
    missing = sorted(set(domains) - set(objective.prior))
    if missing:
        raise ConfigError(f"the prior mixture has no weight for domains {missing}")
    p = np.array([float(objective.prior[d]) for d in domains])
    if (p < 0).any() or not np.isfinite(p).all() or p.sum() <= 0:
        raise ConfigError(f"the prior mixture must be non-negative and finite: {dict(zip(domains, p))}")
    return p / p.sum()


def objective_values(
    scores: Mapping[str, np.ndarray],
    objective: Objective,
    scale: ScoreScale,
    X: np.ndarray | None = None,
    domains: Sequence[str] | None = None,
) -> np.ndarray:
    """The objective of each row; ``-inf`` below a floor (and for NaN predictions, which never win).

    ``X`` (the mixtures, columns in ``domains`` order) is needed only for the KL penalty.
    """
    targets = list(scores)
    if not targets:
        raise ConfigError("no scores to compute an objective from")
    arrays = {t: np.atleast_1d(np.asarray(scores[t], dtype=float)) for t in targets}
    n = len(next(iter(arrays.values())))
    if any(len(a) != n for a in arrays.values()):
        raise ConfigError(f"score arrays differ in length: { {t: len(a) for t, a in arrays.items()} }")
    weights = objective.target_weights(targets)
    good = {t: scale.goodness(t, arrays[t], objective.direction(t)) for t in weights}
    if objective.aggregate == "mean":
        out = np.zeros(n)
        for t, w in weights.items():
            out += w * good[t]
    else:
        out = np.min(np.vstack([good[t] for t in weights]), axis=0)
    for t, floor in objective.floors.items():
        if t not in arrays:
            raise ConfigError(f"objective floor names unknown target {t!r}; have {sorted(targets)}")
        below = arrays[t] < floor if objective.direction(t) == "maximize" else arrays[t] > floor
        out[below] = -np.inf
    if objective.kl_weight > 0:
        if X is None or domains is None:
            raise ConfigError("the KL penalty needs the mixtures and their domain order")
        out = out - objective.kl_weight * kl_to_prior(X, prior_array(objective, domains))
    out[np.isnan(out)] = -np.inf
    return out
