"""Sub-domains: a domain may split into named sub-domains, and mixtures over them are flat.

A hierarchical mixture has coarse weights over domains and, inside each domain, fine weights over its
sub-domains. Trainers, the token plan and the exports want one flat mixture whose names are
``domain/subdomain``: the weight of ``code/repos`` is ``coarse[code] * fine[code][repos]``. A domain with
no fine weights stays a single leaf under its own name, so flat configs are unchanged.
"""

from __future__ import annotations

from typing import Mapping

from mergemix_dagster.core.errors import SimplexError
from mergemix_dagster.core.mixture import Mixture

SEPARATOR = "/"


def leaf_name(domain: str, subdomain: str | None = None) -> str:
    """``code/repos`` for a sub-domain, ``code`` for a domain used whole."""
    return domain if subdomain is None else f"{domain}{SEPARATOR}{subdomain}"


def split_leaf(name: str) -> tuple[str, str | None]:
    """Inverse of :func:`leaf_name`: ``code/repos`` -> ``("code", "repos")``, ``math`` -> ``("math", None)``."""
    domain, sep, sub = name.partition(SEPARATOR)
    return domain, (sub if sep else None)


def flatten_weights(
    coarse: Mapping[str, float], fine: Mapping[str, Mapping[str, float]] | None = None
) -> dict[str, float]:
    """Coarse × fine weights as one flat mixture over leaves (coarse order, then fine order).

    Both levels are validated on the simplex (``SimplexError``); ``fine`` may name only coarse domains.
    """
    fine = fine or {}
    Mixture.from_dict(coarse)
    unknown = sorted(set(fine) - set(coarse))
    if unknown:
        raise SimplexError(f"fine weights for domains {unknown} that have no coarse weight ({sorted(coarse)})")
    flat: dict[str, float] = {}
    for domain, weight in coarse.items():
        inner = fine.get(domain)
        if not inner:
            flat[leaf_name(domain)] = float(weight)
            continue
        Mixture.from_dict(inner)
        for sub, share in inner.items():
            flat[leaf_name(domain, sub)] = float(weight) * float(share)
    return flat


def coarse_weights(flat: Mapping[str, float]) -> dict[str, float]:
    """The domain level of a flat mixture: each domain's leaves summed."""
    out: dict[str, float] = {}
    for name, weight in flat.items():
        domain, _ = split_leaf(name)
        out[domain] = out.get(domain, 0.0) + float(weight)
    return out


def fine_weights(flat: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The sub-domain level of a flat mixture: each split domain's leaves normalized to sum to 1.

    A domain whose coarse weight is 0 gets uniform fine weights (any split of nothing is the same mixture).
    """
    totals = coarse_weights(flat)
    out: dict[str, dict[str, float]] = {}
    for name, weight in flat.items():
        domain, sub = split_leaf(name)
        if sub is not None:
            out.setdefault(domain, {})[sub] = float(weight)
    for domain, inner in out.items():
        total = totals[domain]
        out[domain] = {s: (w / total if total > 0 else 1.0 / len(inner)) for s, w in inner.items()}
    return out
