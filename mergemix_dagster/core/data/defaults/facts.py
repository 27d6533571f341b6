"""``sft`` domain: instruction/response pairs built from real facts in ``pycountry`` (LGPL-2.1).

Facts: ISO 3166 countries (alpha-2, alpha-3, numeric codes, official names), ISO 4217 currencies,
ISO 639 languages, ISO 3166-2 subdivisions. Each template is one (instruction, response) function;
``mm_facts`` asks the questions of the ``BENCHMARK_TEMPLATES`` in the very same format, so its facts
*are* in this corpus: a knowledge benchmark measures memorised facts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache


def sft_text(instruction: str, response: str) -> str:
    return f"### Instruction:\n{instruction}\n### Response:\n{response}"


SFT_PROMPT = "### Instruction:\n{instruction}\n### Response:\n"


def _country_name(c) -> str:
    return getattr(c, "common_name", None) or c.name


@dataclass(frozen=True)
class Fact:
    template: str
    instruction: str
    response: str


@lru_cache(maxsize=1)
def fact_pools() -> dict[str, tuple[Fact, ...]]:
    """Every fact, grouped by template name, in a fixed order."""
    import pycountry

    countries = sorted(pycountry.countries, key=lambda c: c.alpha_2)
    by_alpha2 = {c.alpha_2: c for c in countries}
    currencies = sorted(pycountry.currencies, key=lambda c: c.alpha_3)
    languages = sorted(pycountry.languages, key=lambda lang: lang.alpha_3)
    subdivisions = sorted(pycountry.subdivisions, key=lambda s: s.code)

    pools: dict[str, list[Fact]] = {k: [] for k in (
        "country_alpha2", "country_alpha3", "country_numeric", "alpha2_country", "currency_code",
        "language_code", "country_official_name", "currency_name", "language_alpha3",
        "subdivision_country", "subdivision_code",
    )}
    for c in countries:
        n = _country_name(c)
        pools["country_alpha2"].append(Fact("country_alpha2", f"What is the ISO 3166 alpha-2 code of {n}?", c.alpha_2))
        pools["country_alpha3"].append(Fact("country_alpha3", f"What is the ISO 3166 alpha-3 code of {n}?", c.alpha_3))
        pools["country_numeric"].append(Fact("country_numeric", f"What is the ISO 3166 numeric code of {n}?", c.numeric))
        pools["alpha2_country"].append(Fact("alpha2_country", f"Which country has the ISO 3166 alpha-2 code {c.alpha_2}?", n))
        official = getattr(c, "official_name", None)
        if official and official != n:
            pools["country_official_name"].append(Fact("country_official_name", f"What is the official name of {n}?", official))
    for cur in currencies:
        pools["currency_code"].append(Fact("currency_code", f"What is the ISO 4217 code of the currency {cur.name}?", cur.alpha_3))
        pools["currency_name"].append(Fact("currency_name", f"Which currency has the ISO 4217 code {cur.alpha_3}?", cur.name))
    for lang in languages:
        if hasattr(lang, "alpha_2"):
            pools["language_code"].append(Fact("language_code", f"What is the ISO 639-1 code of the {lang.name} language?", lang.alpha_2))
        pools["language_alpha3"].append(Fact("language_alpha3", f"What is the ISO 639-3 code of the {lang.name} language?", lang.alpha_3))
    for sub in subdivisions:
        country = by_alpha2.get(sub.country_code)
        if country is None:
            continue
        pools["subdivision_country"].append(
            Fact("subdivision_country", f"In which country is the {sub.type.lower()} {sub.name}?", _country_name(country))
        )
        pools["subdivision_code"].append(
            Fact("subdivision_code", f"What is the ISO 3166-2 code of {sub.name} in {_country_name(country)}?", sub.code)
        )
    return {k: tuple(v) for k, v in pools.items()}


# Small pools asked by mm_facts; they are drawn as often as the large pools, so their facts repeat.
BENCHMARK_TEMPLATES = ("country_alpha2", "country_alpha3", "alpha2_country", "currency_code", "language_code")
CORE_PER_TEMPLATE = 50
# Share of sft documents drawn from the core facts (the frequent facts of the domain, which mm_facts asks).
CORE_FRACTION = 0.5


@lru_cache(maxsize=1)
def core_facts() -> tuple[Fact, ...]:
    """The frequent facts: ``CORE_PER_TEMPLATE`` per benchmark template, fixed by a seed-independent shuffle.

    A tiny model sees a fact only a few times in a 250k-token run when facts are drawn uniformly from
    pools of ~200; the core facts are drawn often enough to be learnable, as frequent facts are in real
    instruction data. ``mm_facts`` asks exactly these facts.
    """
    pools = fact_pools()
    core: list[Fact] = []
    for t in BENCHMARK_TEMPLATES:
        pool = list(pools[t])
        random.Random(f"core-facts/v1/{t}").shuffle(pool)
        core.extend(pool[:CORE_PER_TEMPLATE])
    return tuple(core)
CORPUS_TEMPLATE_WEIGHTS = {
    "country_alpha2": 2.0, "country_alpha3": 2.0, "alpha2_country": 2.0, "currency_code": 1.5, "language_code": 1.5,
    "country_numeric": 1.0, "country_official_name": 1.0, "currency_name": 1.0,
    "language_alpha3": 1.0, "subdivision_country": 1.5, "subdivision_code": 1.0,
}


def build_sft_documents(max_chars: int, seed: int, core_fraction: float = CORE_FRACTION) -> list[str]:
    """One instruction/response pair per document, until ``max_chars``.

    With probability ``core_fraction`` a pair is one of :func:`core_facts`; otherwise a template is drawn
    by weight and a fact uniformly from its pool (which may also be a core fact).
    """
    pools = fact_pools()
    core = core_facts()
    names = [k for k in CORPUS_TEMPLATE_WEIGHTS if pools.get(k)]
    weights = [CORPUS_TEMPLATE_WEIGHTS[k] for k in names]
    rng = random.Random(f"sft/{seed}")
    docs: list[str] = []
    total = 0
    while total < max_chars:
        if rng.random() < core_fraction:
            fact = rng.choice(core)
        else:
            fact = rng.choice(pools[rng.choices(names, weights)[0]])
        doc = sft_text(fact.instruction, fact.response)
        docs.append(doc)
        total += len(doc)
    return docs
