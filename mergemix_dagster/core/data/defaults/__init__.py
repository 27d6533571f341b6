"""The embedded default data: four offline domain corpora and a general corpus, deterministic from a seed.

Nothing here reaches the network; every source ships with Python or with an installed package:

- ``math``: generated arithmetic worked problems (:mod:`.arithmetic`).
- ``code``: the running interpreter's standard-library Python source, PSF licence (:mod:`.stdlib_code`).
- ``web``: English prose of the Python documentation topics and stdlib docstrings, PSF licence (:mod:`.prose`).
- ``sft``: instruction/response pairs from ``pycountry`` facts, LGPL-2.1 (:mod:`.facts`).

Stdlib files and documentation topics selected by :func:`._split.is_heldout` are never used here;
the ``mm_code`` / ``mm_prose`` benchmarks are built from them (see docs/data.md).
"""

from __future__ import annotations

import random

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.data.defaults.arithmetic import build_math_documents
from mergemix_dagster.core.data.defaults.facts import build_sft_documents
from mergemix_dagster.core.data.defaults.prose import build_prose_documents
from mergemix_dagster.core.data.defaults.stdlib_code import build_code_documents

EMBEDDED_DOMAINS: tuple[str, ...] = ("math", "code", "web", "sft")

_BUILDERS = {
    "math": build_math_documents,
    "code": build_code_documents,
    "web": build_prose_documents,
    "sft": build_sft_documents,
}

# The general corpus draws from the same training splits with its own seed stream.
GENERAL_SEED_OFFSET = 1_000_003


def build_domain_documents(domain: str, max_chars: int = 4_000_000, seed: int = 0) -> list[str]:
    """Documents of one embedded domain, about ``max_chars`` characters (``web`` stops when its pool ends)."""
    if domain not in _BUILDERS:
        raise ConfigError(f"unknown embedded domain {domain!r}; embedded domains are {list(EMBEDDED_DOMAINS)}")
    if max_chars <= 0:
        raise ConfigError(f"max_chars must be positive, got {max_chars}")
    return _BUILDERS[domain](int(max_chars), int(seed))


def build_general_documents(max_chars: int = 2_000_000, seed: int = 0) -> list[str]:
    """A balanced sample of the four domains (``max_chars / 4`` each), shuffled together.

    The sft share is drawn without the core-fact boost of the ``sft`` domain. Drawn from the same benchmark-free splits as the domain corpora (held-out stdlib files and topics,
    and held-out word-problem templates, are excluded) with a different seed stream.
    """
    if max_chars <= 0:
        raise ConfigError(f"max_chars must be positive, got {max_chars}")
    share = max(1, int(max_chars) // len(EMBEDDED_DOMAINS))
    docs: list[str] = []
    for domain in EMBEDDED_DOMAINS:
        if domain == "sft":  # general text has facts at their natural frequency (no core-fact boost)
            domain_docs = build_sft_documents(share, int(seed) + GENERAL_SEED_OFFSET, core_fraction=0.0)
        else:
            domain_docs = _BUILDERS[domain](share, int(seed) + GENERAL_SEED_OFFSET)
        kept, total = [], 0
        for doc in domain_docs:
            if total >= share:
                break
            if total + len(doc) > share and kept:
                doc = doc[: max(1, share - total)]  # trim the last (possibly long) file to keep the balance
            kept.append(doc)
            total += len(doc)
        docs.extend(kept)
    random.Random(f"general/{seed}").shuffle(docs)
    return docs


__all__ = ["EMBEDDED_DOMAINS", "build_domain_documents", "build_general_documents"]
