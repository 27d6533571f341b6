"""Embedded sub-domains: three of the embedded domains split into named parts (``math/facts``, ...).

Each part is drawn from the same generators and the same benchmark-free splits as its domain, so the parts
of a domain are disjoint kinds of its text:

- ``math``: ``facts`` (bare arithmetic facts), ``words`` (word problems), ``twostep`` (two-step sums);
- ``code``: standard-library files by area: ``tools`` (lib2to3, idlelib, distutils, tkinter, unittest, ...),
  ``io`` (asyncio, multiprocessing, email, xml, http, json, ...), ``core`` (everything else: re,
  collections, logging, decimal, ...);
- ``sft``: fact templates: ``countries`` (codes, official names, subdivisions), ``currencies``, ``languages``.
"""

from __future__ import annotations

#: Bump when a builder below changes what it writes: it is part of the embedded sub-domains' source identity,
#: so their corpora (and everything trained on them) go stale instead of silently keeping the old text.
#: 2: sft parts draw half their pairs from the core facts.
EMBEDDED_SUBDOMAINS_VERSION = "2"

import random
from typing import Callable

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.data.defaults import arithmetic
from mergemix_dagster.core.data.defaults.split import read_source
from mergemix_dagster.core.data.defaults.facts import CORE_FRACTION, core_facts, fact_pools, sft_text
from mergemix_dagster.core.data.defaults.stdlib_code import clean_code, training_code_files

CODE_AREAS: dict[str, frozenset[str]] = {
    "tools": frozenset({"lib2to3", "idlelib", "distutils", "turtledemo", "tkinter", "unittest", "venv", "curses",
                        "ensurepip", "pydoc_data", "turtle", "pydoc", "pdb", "doctest", "trace", "cProfile",
                        "profile", "timeit", "tabnanny", "pyclbr", "compileall", "py_compile"}),
    "io": frozenset({"asyncio", "multiprocessing", "concurrent", "email", "urllib", "http", "xml", "xmlrpc",
                     "wsgiref", "json", "html", "dbm", "sqlite3", "socketserver", "selectors", "ssl", "smtplib",
                     "imaplib", "poplib", "ftplib", "mailbox", "csv", "tarfile", "zipfile", "gzip", "bz2", "lzma",
                     "shutil", "tempfile", "subprocess", "socket", "tomllib", "configparser", "plistlib"}),
}
SFT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "countries": ("country_alpha2", "country_alpha3", "alpha2_country", "country_numeric", "country_official_name",
                  "subdivision_country", "subdivision_code"),
    "currencies": ("currency_code", "currency_name"),
    "languages": ("language_code", "language_alpha3"),
}


def _math(kind: str) -> Callable[[int, int], list[str]]:
    def one(rng: random.Random) -> str:
        if kind == "words":
            return arithmetic.story(rng)
        if kind == "twostep":
            return arithmetic.two_step(rng)
        op, a, b = arithmetic.sample_fact(rng)
        return f"Question: {arithmetic.question(rng, op, a, b)}\nAnswer: {arithmetic.worked(op, a, b)}"

    def build(max_chars: int, seed: int) -> list[str]:
        """Documents of 1-8 problems of one kind, until ``max_chars`` (as the ``math`` domain builds them)."""
        rng = random.Random(f"math/{kind}/{seed}")
        docs, total = [], 0
        while total < max_chars:
            docs.append("\n\n".join(one(rng) for _ in range(rng.randint(1, 8))))
            total += len(docs[-1])
        return docs

    return build


def code_area(key: str) -> str:
    """The area of a stdlib file (``asyncio/tasks.py`` -> ``io``)."""
    top = key.split("/")[0].removesuffix(".py")
    return next((area for area, tops in CODE_AREAS.items() if top in tops), "core")


def _code(area: str) -> Callable[[int, int], list[str]]:
    def build(max_chars: int, seed: int) -> list[str]:
        files = [(k, p) for k, p in training_code_files() if code_area(k) == area]
        random.Random(f"code/{area}/{seed}").shuffle(files)
        docs, total = [], 0
        for _, path in files:
            if total >= max_chars:
                break
            text = read_source(path)
            if text is not None:
                docs.append(clean_code(text))
                total += len(docs[-1])
        return docs

    return build


def _sft(group: str) -> Callable[[int, int], list[str]]:
    def build(max_chars: int, seed: int) -> list[str]:
        """As the ``sft`` domain builds its documents (``facts.build_sft_documents``): half of the pairs are the
        frequent core facts of this part's templates, the rest drawn uniformly from its pools. Without the core
        facts a tiny model learns none of the facts ``mm_facts`` asks, and knowledge does not move."""
        pools = fact_pools()
        templates = SFT_TEMPLATES[group]
        facts = [f for t in templates for f in pools.get(t, ())]
        instructions = {f.instruction for t in templates for f in pools.get(t, ())}
        core = [f for f in core_facts() if f.instruction in instructions]
        rng = random.Random(f"sft/{group}/{seed}")
        docs, total = [], 0
        while facts and total < max_chars:
            fact = rng.choice(core) if core and rng.random() < CORE_FRACTION else rng.choice(facts)
            docs.append(sft_text(fact.instruction, fact.response))
            total += len(docs[-1])
        return docs

    return build


_BUILDERS: dict[str, Callable[[int, int], list[str]]] = {
    **{f"math/{k}": _math(k) for k in ("facts", "words", "twostep")},
    **{f"code/{a}": _code(a) for a in ("tools", "io", "core")},
    **{f"sft/{g}": _sft(g) for g in SFT_TEMPLATES},
}
EMBEDDED_SUBDOMAINS: tuple[str, ...] = tuple(_BUILDERS)


def build_subdomain_documents(name: str, max_chars: int = 4_000_000, seed: int = 0) -> list[str]:
    """Documents of one embedded sub-domain (``math/words``), about ``max_chars`` characters."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown embedded sub-domain {name!r}; embedded sub-domains are {list(EMBEDDED_SUBDOMAINS)}")
    if max_chars <= 0:
        raise ConfigError(f"max_chars must be positive, got {max_chars}")
    return _BUILDERS[name](int(max_chars), int(seed))
