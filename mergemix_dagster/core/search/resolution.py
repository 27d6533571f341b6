"""Which capabilities the mixture resolves, and how the ones it does not are protected rather than sacrificed.

**The rule.** Every mixture of the seed design (and the base) is scored on the same items, so a capability is
*resolved* when a within-item permutation test of "no mixture changes any item's score"
(``core/evaluation/paired.py`` ``mixture_effect``) gives ``p < max_p`` (``search.objective.max_resolution_p``,
0.01). The test is exact under that null whatever the item distribution, its statistic is the spread of the
mixtures' means (so the multiplicity of ~41 means is accounted for), and items cancel what they share: the noise
of a *difference* is the paired standard error, usually far below lm-eval's unpaired stderr. A capability whose
benchmarks keep no per-item scores (a non-mean metric such as perplexity, or a team's evaluator without items)
falls back to the unpaired rule (``objective.resolve_targets``, ``min_spread_in_noise``), and its reason says so.

**Protection** (``search.objective.protect_unresolved``). An unresolved capability is left out of the aggregate
(its noise would be stretched to the whole normalized range), but it is not given up:

- ``protection_floors``: its predicted score may not fall below the base's score minus 2 paired standard errors
  (above it plus 2 for a target to minimize). Not a floor exactly at the base: mixtures that do not move the
  capability sit around the base within noise, so a floor at the base would let noise decide which are feasible.
- ``protect_domains``: every domain whose ``capability`` it is keeps at least its prior (natural token) share,
  the max of that and the user's ``min_weight``, clipped to the domain's upper bound; when the lower bounds then
  sum above 1 it raises ``UnresolvedProtectionError`` naming the domains and settings that conflict.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from mergemix_dagster.core.errors import ConfigError, PairedAnalysisError, UnresolvedProtectionError
from mergemix_dagster.core.evaluation.paired import MixtureEffect, mixture_effect
from mergemix_dagster.core.search.constraints import MixtureConstraints
from mergemix_dagster.core.search.objective import TargetResolution, keep_if_none_resolved, resolve_targets

#: The paired SEs a protected score may fall below the base (see the module docstring).
FLOOR_IN_SE = 2.0
#: Fewest permutations of the resolution test (more when ``max_p`` is small, so p can fall below it).
MIN_PERMUTATIONS = 2000


def permutations_for(max_p: float) -> int:
    """Permutations for the test at level ``max_p``: at least 2000, and ≥ 20 expected exceedances at the level."""
    return max(MIN_PERMUTATIONS, int(math.ceil(20.0 / max_p)))


def paired_resolution(target: str, effect: MixtureEffect, max_p: float) -> TargetResolution:
    """Resolved iff the permutation p-value is below ``max_p``; the reason gives the spread in paired noise."""
    spread, se, p = effect.spread, effect.paired_se, effect.p_value
    moves = (f"the mixture moves it by {spread:.3g} = {effect.spread_in_se:.2g}× its paired noise {se:.3g}, "
             f"p = {p:.2g} ({effect.n_mixtures} mixtures × {effect.n_items} items)")
    if p < max_p:
        return TargetResolution(target, spread, se, True, f"{moves} < {max_p:g}", p_value=p, paired_se=se)
    return TargetResolution(target, spread, se, False, f"{moves} ≥ {max_p:g}: differences are within noise",
                            p_value=p, paired_se=se)


def resolve_capabilities(
    items: Mapping[str, Sequence[np.ndarray] | str],
    scores: Mapping[str, np.ndarray],
    noise: Mapping[str, float | None],
    *,
    max_p: float,
    min_spread_in_noise: float,
    seed: int = 0,
) -> dict[str, TargetResolution]:
    """The resolution of every capability in ``items``.

    ``items[c]``: the capability's (mixtures × items) matrices, one per task with the same mixtures in the same
    row order, or a string saying why there are none; then ``scores[c]`` (its measured means) and ``noise[c]``
    (the base's stderr) decide by the unpaired rule. If no capability is resolved, all are kept.
    """
    if not (0 < max_p <= 1):
        raise ConfigError(f"max_resolution_p must lie in (0, 1], got {max_p}")
    out: dict[str, TargetResolution] = {}
    fallback: dict[str, str] = {}
    for c, matrices in items.items():
        if isinstance(matrices, str):
            fallback[c] = matrices
            continue
        try:
            effect = mixture_effect(list(matrices), n_perm=permutations_for(max_p), seed=seed)
        except PairedAnalysisError as e:
            fallback[c] = str(e)
            continue
        out[c] = paired_resolution(c, effect, max_p)
    if fallback:
        unpaired = resolve_targets({c: scores[c] for c in fallback if c in scores}, noise, min_spread_in_noise,
                                   keep_all_if_none=False)
        for c, r in unpaired.items():
            out[c] = TargetResolution(r.target, r.spread, r.noise, r.resolved,
                                      f"no per-item scores: unpaired rule ({fallback[c]}); {r.reason}")
    return keep_if_none_resolved({c: out[c] for c in items if c in out})


def unresolved(resolution: Mapping[str, TargetResolution] | None) -> list[str]:
    return [c for c, r in (resolution or {}).items() if not r.resolved]


def difference_se(r: TargetResolution) -> float | None:
    """The standard error of a difference from the base: paired where known, else √2 × the unpaired stderr."""
    if r.paired_se is not None and math.isfinite(r.paired_se):
        return float(r.paired_se)
    if r.noise is not None and math.isfinite(r.noise):
        return math.sqrt(2.0) * float(r.noise)
    return None


def protection_floors(
    resolution: Mapping[str, TargetResolution],
    base: Mapping[str, float],
    directions: Mapping[str, str],
    floors: Mapping[str, float],
) -> tuple[dict[str, float], dict[str, str]]:
    """``floors`` with each unresolved capability floored at base ∓ 2 SE (the stricter of that and a set floor),
    and a sentence per capability saying which floor applies."""
    out = dict(floors)
    texts: dict[str, str] = {}
    for c in unresolved(resolution):
        se, b = difference_se(resolution[c]), base.get(c)
        if se is None or b is None or not math.isfinite(b):
            texts[c] = "no floor: " + ("no base score" if b is None or not math.isfinite(b) else "no noise estimate")
            continue
        up = directions.get(c, "maximize") == "maximize"
        floor = b - FLOOR_IN_SE * se if up else b + FLOOR_IN_SE * se
        kind = "paired SE" if resolution[c].paired_se is not None else "√2 × stderr"
        own = f"{'≥' if up else '≤'} {floor:.4g} = base {b:.4g} {'−' if up else '+'} {FLOOR_IN_SE:g} × {kind} {se:.3g}"
        if c in out and (out[c] > floor if up else out[c] < floor):
            texts[c] = f"score {'≥' if up else '≤'} {out[c]:.4g} (a stricter floor from the settings; protection {own})"
        else:
            out[c] = floor
            texts[c] = f"score {own} (not at the base itself: noise would decide feasibility)"
    return out, texts


def protected_shares(
    resolution: Mapping[str, TargetResolution], domain_capability: Mapping[str, str | None],
    prior: Mapping[str, float],
) -> dict[str, float]:
    """domain -> its prior share, for every domain whose capability is unresolved."""
    caps = set(unresolved(resolution))
    return {d: float(prior[d]) for d, c in domain_capability.items() if c in caps and d in prior}


def protect_domains(
    constraints: MixtureConstraints, shares: Mapping[str, float], capability_of: Mapping[str, str | None]
) -> tuple[MixtureConstraints, dict[str, str]]:
    """Lower bounds raised to ``shares`` (clipped to each domain's upper bound); domain -> what applied."""
    lo, hi = list(constraints.lower), list(constraints.upper)
    reasons = dict(constraints.reasons)
    texts: dict[str, str] = {}
    for i, d in enumerate(constraints.domains):
        if d not in shares:
            continue
        want = min(float(shares[d]), hi[i])
        clipped = f", clipped to its upper bound ({constraints.reasons.get(d, 'max_weight')})" if want < shares[d] else ""
        if want > lo[i]:
            lo[i] = want
            texts[d] = f"{d} ≥ {want:.4g} (its natural share {shares[d]:.4g}{clipped})"
            reasons[d] = f"protects unresolved capability {capability_of.get(d)}: " + texts[d]
        else:
            texts[d] = f"{d} ≥ {lo[i]:.4g} (its own lower bound; natural share {shares[d]:.4g})"
    total = math.fsum(lo)
    if total > 1 + 1e-12:
        others = {d: constraints.reasons.get(d, f"min_weight {lo[i]:g}") for i, d in enumerate(constraints.domains)
                  if constraints.lower[i] > 0}
        raise UnresolvedProtectionError(
            "search.objective.protect_unresolved keeps domains "
            f"{ {d: round(shares[d], 4) for d in shares} } of unresolved capabilities at their natural shares, "
            f"but with the other lower bounds {others} the minimum weights sum to {total:.4g} > 1; lower "
            "search.min_weight / search.pinned, or set search.objective.protect_unresolved: false"
        )
    return MixtureConstraints(constraints.domains, tuple(lo), tuple(hi), reasons), texts


__all__ = [
    "FLOOR_IN_SE", "MIN_PERMUTATIONS", "difference_se", "paired_resolution", "permutations_for", "protect_domains",
    "protected_shares", "protection_floors", "resolve_capabilities", "unresolved",
]
