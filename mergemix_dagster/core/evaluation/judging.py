"""Judging trained arms under a pre-registered protocol: the declared metric and paired t-intervals over seeds.

Every arm is trained at the same seeds, so arm A and arm B at seed s share the seed's data order and
initialization noise; the margin of A over B is judged on the per-seed differences ``d_s = A_s − B_s``:

- **margin** = mean of the ``d_s``; **interval** = ``mean ± t_{(1+c)/2, n−1} · sd(d_s)/√n`` (a two-sided
  Student t interval at confidence ``c`` over n seeds, n ≥ 3 by the protocol);
- **beats** (beyond noise): the interval's lower bound > 0; **loses**: its upper bound < 0; otherwise
  **within noise**;
- **no worse beyond noise** (the held-out rule): *not loses*, i.e. the upper bound ≥ 0. It is the absence
  of evidence of a loss, not evidence of equality: with 3 seeds a small loss passes it (docs/validation.md).

Values are oriented so that higher is better: a capability the objective minimizes (loss, bits per byte)
enters with its sign flipped, in the metric and in every margin. Framework-free; tested on synthetic numbers
with known differences (tests/test_validation_protocol.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from mergemix_dagster.core.errors import PairedAnalysisError, ProtocolError

MACRO_AVERAGE = "macro_average"
OBJECTIVE = "objective"


@dataclass(frozen=True)
class PairedMargin:
    """Mean of per-seed differences ``a − b`` and its two-sided t-interval at ``confidence``."""

    mean: float
    low: float
    high: float
    std: float  # sd of the per-seed differences (ddof 1)
    n: int
    confidence: float
    per_seed: tuple[float, ...]

    @property
    def beats(self) -> bool:
        """``a`` is better than ``b`` beyond noise: the whole interval lies above 0."""
        return self.low > 0

    @property
    def loses(self) -> bool:
        """``a`` is worse than ``b`` beyond noise: the whole interval lies below 0."""
        return self.high < 0

    @property
    def verdict(self) -> str:
        return "beats" if self.beats else "loses" if self.loses else "within noise"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "std": self.std, "n": self.n,
                "confidence": self.confidence, "per_seed": list(self.per_seed), "verdict": self.verdict,
                "beats": self.beats, "no_worse": not self.loses}


def paired_margin(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedMargin:
    """Margin of ``a`` over ``b`` from values paired by seed (same order), with a t-interval.

    Raises ``PairedAnalysisError`` for fewer than 2 pairs, unequal lengths or non-finite values (a margin over
    a missing run would be a silent wrong answer).
    """
    from scipy.stats import t as student_t

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise PairedAnalysisError(f"paired values must be two equal-length lists, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise PairedAnalysisError(f"a paired interval needs at least 2 seeds, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise PairedAnalysisError(f"non-finite values in a paired comparison: {x.tolist()} vs {y.tolist()}")
    if not 0 < confidence < 1:
        raise PairedAnalysisError(f"confidence must lie in (0, 1), got {confidence}")
    d = x - y
    n = len(d)
    mean = float(d.mean())
    std = float(d.std(ddof=1))
    half = float(student_t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return PairedMargin(mean, mean - half, mean + half, std, n, float(confidence), tuple(float(v) for v in d))


def oriented(value: float, direction: str = "maximize") -> float:
    """``value`` with higher = better: negated for a capability the objective minimizes."""
    return -float(value) if direction == "minimize" else float(value)


def metric_value(
    metric: str,
    scores: Mapping[str, float],
    capabilities: Sequence[str],
    directions: Mapping[str, str] | None = None,
    objective: float | None = None,
) -> float:
    """The declared metric of one trained run (higher is better).

    ``macro_average``: equal-weight mean of every capability's oriented score; ``capability:<name>``: that
    capability's oriented score; ``objective``: the search objective's value of the run, passed in as
    ``objective`` (it needs the objective and its score scale, which live with the search).
    """
    directions = directions or {}
    if metric == OBJECTIVE:
        if objective is None:
            raise ProtocolError("metric 'objective' needs the run's objective value")
        return float(objective)
    missing = [c for c in capabilities if c not in scores]
    if metric == MACRO_AVERAGE:
        if missing:
            raise ProtocolError(f"no score for capabilities {missing}: the macro-average needs every capability")
        return float(np.mean([oriented(scores[c], directions.get(c, "maximize")) for c in capabilities]))
    if metric.startswith("capability:"):
        name = metric.split(":", 1)[1]
        if name not in scores:
            raise ProtocolError(f"metric {metric!r}: no score for capability {name!r} (have {sorted(scores)})")
        return oriented(scores[name], directions.get(name, "maximize"))
    raise ProtocolError(f"unknown metric {metric!r}: macro_average, objective or capability:<name>")


def margins_over(
    values: Mapping[str, Mapping[int, float]], reference: str, confidence: float
) -> dict[str, PairedMargin]:
    """``reference`` arm minus every other arm, paired by seed: ``values[arm][seed]``; every arm must have a
    value at every seed of ``reference`` (``PairedAnalysisError`` names the missing one)."""
    if reference not in values:
        raise PairedAnalysisError(f"no values for the reference arm {reference!r}")
    seeds = sorted(values[reference])
    out = {}
    for arm, by_seed in values.items():
        if arm == reference:
            continue
        missing = [s for s in seeds if s not in by_seed]
        if missing:
            raise PairedAnalysisError(f"arm {arm!r} has no run at seeds {missing}")
        out[arm] = paired_margin([values[reference][s] for s in seeds], [by_seed[s] for s in seeds], confidence)
    return out


__all__ = ["MACRO_AVERAGE", "OBJECTIVE", "PairedMargin", "paired_margin", "oriented", "metric_value", "margins_over"]
