"""Embedded sub-domains: the embedded default domains split into named parts (``math/facts``, ...).

Each sub-domain keeps the units of its domain's builder that a classifier assigns to it, so the parts of a
domain are disjoint and their union is the domain's own text.
"""

from __future__ import annotations

from typing import Callable

from ..errors import ConfigError

#: ``domain/sub`` -> builder(max_chars, seed) -> documents
_BUILDERS: dict[str, Callable[[int, int], list[str]]] = {}
EMBEDDED_SUBDOMAINS: tuple[str, ...] = tuple(_BUILDERS)


def build_subdomain_documents(name: str, max_chars: int = 4_000_000, seed: int = 0) -> list[str]:
    """Documents of one embedded sub-domain, about ``max_chars`` characters."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown embedded sub-domain {name!r}; embedded sub-domains are {list(EMBEDDED_SUBDOMAINS)}")
    if max_chars <= 0:
        raise ConfigError(f"max_chars must be positive, got {max_chars}")
    return _BUILDERS[name](int(max_chars), int(seed))
