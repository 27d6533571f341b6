"""Hierarchical mixtures (MergeMix §3.5): a coarse mixture over domains and, inside each split domain, a fine
mixture over its sub-domains; trainers get their product, flat over sub-domains.

Two orders, one search code (``core.search.simplex``, ``core.search.objective``, ``core.search.surrogate``):

- *top-down*: the coarse search runs over domain experts trained on each domain's natural sub-domain mix;
  then, with the coarse weights fixed, each split domain searches its own sub-domain weights;
- *bottom-up*: each split domain searches its sub-domain weights first, its sub-domain experts are merged
  with those weights into one consolidated expert, and the coarse search runs over the consolidated experts.

Inside a domain the search is independent of every other domain (the paper's "independent search of local
ratios"): its seed design merges only that domain's sub-domain experts, so a change in one domain's data
re-optimizes that domain alone.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.search.objective import Objective
from mergemix_dagster.core.data.subdomains import flatten_weights

DIRECTIONS = ("top_down", "bottom_up")


def proportional_caps(sizes: Sequence[int], max_chars: int) -> list[int]:
    """Per-part character budgets within ``max_chars`` that keep the parts' natural proportions.

    A plain cap on the concatenation would drop the last parts whole; this cuts every part by the same factor.
    """
    total = sum(sizes)
    if total <= max_chars:
        return [int(s) for s in sizes]
    return [int(max_chars * s // total) for s in sizes]


def weighted_caps(sizes: Sequence[int], weights: Sequence[float], max_chars: int) -> list[int]:
    """Per-part character budgets in the proportions ``weights``, as large as the parts and ``max_chars`` allow:
    the part with the least text for its weight is used whole (or the total is ``max_chars``)."""
    w = np.asarray(weights, dtype=float) / float(np.sum(weights))
    total = min(float(max_chars), min(size / share for size, share in zip(sizes, w) if share > 0))
    return [int(total * share) for share in w]


def natural_shares(tokens: Mapping[str, int]) -> dict[str, float]:
    """Token shares of the parts (uniform when nothing was counted): the default intra-domain mix."""
    total = sum(tokens.values())
    if total <= 0:
        return {name: 1.0 / len(tokens) for name in tokens}
    return {name: n / total for name, n in tokens.items()}


def fine_objective(
    coarse: Objective, capability: str | None, capabilities: Sequence[str], prior: Mapping[str, float] | None,
    kl_weight: float = 0.0,
) -> Objective:
    """The objective inside one domain.

    A domain that names its capability is optimized for it (the code domain's sub-mixture for code): the
    other capabilities are the coarse level's business. Without one, the coarse objective's aggregate and
    weights apply. Directions are the coarse objective's; with ``kl_weight`` the KL pull goes toward
    ``prior`` (the sub-domains' natural token shares); floors stay at the coarse level, where they are in
    raw units of the whole mixture.
    """
    own = capability is not None and capability in capabilities
    kl_weight = kl_weight if prior is not None else 0.0
    return Objective(
        weights={capability: 1.0} if own else coarse.weights,
        directions=dict(coarse.directions),
        aggregate="mean" if own else coarse.aggregate,
        prior=dict(prior) if kl_weight > 0 else None,
        kl_weight=kl_weight,
    )


def hierarchical_weights(
    coarse: Mapping[str, float], fine: Mapping[str, Mapping[str, float]], split: Sequence[str]
) -> dict[str, float]:
    """Flat weights over sub-domains: coarse × fine for every split domain, which must all have fine weights."""
    missing = sorted(set(split) - set(fine))
    if missing:
        raise ConfigError(f"no sub-domain weights for split domains {missing}")
    return flatten_weights(coarse, {d: fine[d] for d in split})


def uniform_fine(subdomains: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Equal weights inside every split domain (the ⟨·, uniform⟩ arm of the paper's Table 3)."""
    return {d: {s: 1.0 / len(subs) for s in subs} for d, subs in subdomains.items()}


def study_arms(
    coarse: Mapping[str, float], fine: Mapping[str, Mapping[str, float]], subdomains: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, float]]:
    """The flat mixtures of the paper's Table 3: ⟨MergeMix, MergeMix⟩, ⟨MergeMix, uniform⟩, ⟨uniform, uniform⟩
    (⟨coarse, fine⟩). ``subdomains``: each split domain's sub-domain names; other domains stay whole."""
    split = list(subdomains)
    uniform_coarse = {d: 1.0 / len(coarse) for d in coarse}
    even = uniform_fine(subdomains)
    return {
        "mergemix_mergemix": hierarchical_weights(coarse, fine, split),
        "mergemix_uniform": hierarchical_weights(coarse, even, split),
        "uniform_uniform": hierarchical_weights(uniform_coarse, even, split),
    }
