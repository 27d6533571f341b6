"""The objective of ``mergemix fit``: terms over score columns, means over many columns, excluded metrics.

``maximize:acc,minimize:0.5*bpb`` names columns; ``minimize:mean(*bpb*)`` is the mean of every numeric column
whose name matches the pattern (``fnmatch``), in the metrics' own units; ``mean(2*math_*+code_*)`` weights the
columns each pattern matches (a column matched twice keeps its largest weight). A mean is one *aggregate
target*: the surrogates predict each column, the aggregate is their weighted mean, and the search sees it as
one target. ``exclude`` (``--exclude-metrics``, Olmix's ``filtering.drop_metrics``) removes columns from every
mean; naming an excluded column directly is an error.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence

import numpy as np

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.search.objective import Objective

_TERM = re.compile(r"^\s*(?:(?P<w>[0-9.eE+-]+)\s*\*\s*)?(?P<col>[^*]+?)\s*$")
_MEAN = re.compile(r"^\s*(?:(?P<w>[0-9.eE+-]+)\s*\*\s*)?mean\((?P<inner>.*)\)\s*$")
_INNER = re.compile(r"^\s*(?:(?P<w>[+]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*\*\s*)?(?P<pat>.+?)\s*$")


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise ConfigError(f"unbalanced parentheses in objective {text!r}")
    return parts + [cur]


def _weight(text: str | None, what: str) -> float:
    try:
        w = float(text) if text else 1.0
    except ValueError as exc:
        raise ConfigError(f"objective weight in {what!r} is not a number") from exc
    if not (math.isfinite(w) and w > 0):
        raise ConfigError(f"objective weight in {what!r} must be > 0, got {w}")
    return w


@dataclass(frozen=True)
class ParsedObjective:
    """Targets with a weight and a direction; a target named ``mean(...)`` is an aggregate of columns."""

    weights: dict[str, float]
    directions: dict[str, str]
    means: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # target -> [(weight, pattern)]

    def objective(self, **extra) -> Objective:
        return Objective(weights=self.weights, directions=self.directions, **extra)


def parse_objective(text: str) -> ParsedObjective:
    """``maximize:COL``, ``minimize:COL``, ``minimize:0.7*a+0.3*b``, ``minimize:mean(*bpb*)``, or several terms
    joined by commas (``maximize:acc,minimize:0.5*loss``). Weights default to 1 and are normalized later."""
    weights: dict[str, float] = {}
    directions: dict[str, str] = {}
    means: dict[str, list[tuple[float, str]]] = {}
    for part in [p for p in _split(text, ",") if p.strip()]:
        if ":" not in part:
            raise ConfigError(f"objective term {part!r} must look like 'maximize:COLUMN' or 'minimize:COLUMN'")
        direction, expr = part.split(":", 1)
        direction = direction.strip().lower()
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"objective direction {direction!r} must be 'maximize' or 'minimize'")
        for item in _split(expr, "+"):
            mean = _MEAN.match(item)
            if mean:
                name = f"mean({mean.group('inner').strip()})"
                inner = []
                for sub in _split(mean.group("inner"), "+"):
                    m = _INNER.match(sub)
                    if not m:
                        raise ConfigError(f"cannot read {sub!r} inside {name} (want PATTERN or WEIGHT*PATTERN)")
                    inner.append((_weight(m.group("w"), sub), m.group("pat")))
                means[name] = inner
                col, w = name, _weight(mean.group("w"), item)
            else:
                m = _TERM.match(item)
                if not m or not m.group("col").strip():
                    raise ConfigError(f"cannot read objective term {item!r} in {text!r}")
                col, w = m.group("col").strip(), _weight(m.group("w"), item)
            if col in directions and directions[col] != direction:
                raise ConfigError(f"{col!r} is both maximized and minimized in {text!r}")
            weights[col] = weights.get(col, 0.0) + w
            directions[col] = direction
    if not weights:
        raise ConfigError(f"empty objective {text!r}")
    return ParsedObjective(weights, directions, means)


def matches(patterns: Sequence[str], columns: Sequence[str]) -> list[str]:
    """Columns matching any pattern (``fnmatch``, case-sensitive), in column order."""
    return [c for c in columns if any(fnmatch.fnmatchcase(c, p) for p in patterns)]


@dataclass(frozen=True)
class SwarmObjective:
    """A parsed objective resolved against the score columns: what to fit and how to aggregate it."""

    parsed: ParsedObjective
    metrics: tuple[str, ...]  # columns with a surrogate, in score-column order
    aggregates: dict[str, dict[str, float]]  # aggregate target -> {column: weight}, weights summing to 1
    excluded: tuple[str, ...]  # columns removed by --exclude-metrics / drop_metrics
    kl_scale: float = 1.0  # the KL weight is multiplied by it (olmix: 1/Σ obj_weights)
    components: dict[str, dict[str, float]] = field(default_factory=dict)  # olmix: family -> {metric: its weight}
    derived: dict[str, dict[str, float]] = field(default_factory=dict)  # a fitted column made of score columns
    #   (olmix's task family: the mean of its tasks), computed before fitting: one surrogate per family

    @property
    def source_columns(self) -> list[str]:
        """Score columns read from the CSV: the fitted ones and those derived columns are made of."""
        out = [m for m in self.metrics if m not in self.derived]
        out += [c for parts in self.derived.values() for c in parts if c not in out]
        return out

    def with_derived(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{fitted column: values}`` from the score columns (derived ones as their weighted means)."""
        out = {m: np.asarray(columns[m], dtype=float) for m in self.metrics if m not in self.derived}
        for d, parts in self.derived.items():
            out[d] = sum(w * np.asarray(columns[c], dtype=float) for c, w in parts.items())
        return {m: out[m] for m in self.metrics}

    @property
    def targets(self) -> list[str]:
        return list(self.parsed.weights)

    def target_values(self, per_metric: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{target: values}``: plain targets as given, aggregates as weighted means of their columns."""
        out = {}
        for t in self.targets:
            if t in self.aggregates:
                out[t] = sum(w * np.asarray(per_metric[c], dtype=float) for c, w in self.aggregates[t].items())
            else:
                out[t] = np.asarray(per_metric[t], dtype=float)
        return out

    def component_values(self, per_metric: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each component (an Olmix task family) as the weighted mean of its metrics."""
        return {g: sum(w * np.asarray(per_metric[m], dtype=float) for m, w in ms.items()) / math.fsum(ms.values())
                for g, ms in self.components.items()}

    def describe(self) -> dict:
        return {"terms": {t: {"direction": self.parsed.directions[t], "weight": self.parsed.weights[t]}
                          for t in self.targets},
                "aggregates": self.aggregates, "excluded_metrics": list(self.excluded), "kl_scale": self.kl_scale,
                "components": self.components, "derived": self.derived}


def resolve_objective(parsed: ParsedObjective, columns: Sequence[str], exclude: Sequence[str] = (),
                      source: str = "the scores CSV") -> SwarmObjective:
    """Match ``mean(...)`` patterns and plain names against the numeric ``columns``; named errors otherwise."""
    columns = list(columns)
    excluded = matches(exclude, columns)
    kept = [c for c in columns if c not in excluded]
    aggregates: dict[str, dict[str, float]] = {}
    for name, inner in parsed.means.items():
        raw: dict[str, float] = {}
        for w, pat in inner:
            hit = matches([pat], kept)
            if not hit:
                why = " (all matches excluded)" if matches([pat], columns) else ""
                raise ConfigError(f"{name}: pattern {pat!r} matches no numeric column of {source}{why}; "
                                  f"its numeric columns: {columns[:20]}{' …' if len(columns) > 20 else ''}")
            for c in hit:
                raw[c] = max(raw.get(c, 0.0), w)
        total = math.fsum(raw.values())
        aggregates[name] = {c: raw[c] / total for c in kept if c in raw}
    plain = [t for t in parsed.weights if t not in parsed.means]
    unknown = sorted(set(plain) - set(columns))
    if unknown:
        raise ConfigError(f"objective names columns {unknown} that {source} lacks or that are not numeric; "
                          f"its numeric columns: {columns[:20]}{' …' if len(columns) > 20 else ''}")
    dropped = sorted(set(plain) & set(excluded))
    if dropped:
        raise ConfigError(f"objective names columns {dropped} that are excluded (--exclude-metrics / drop_metrics)")
    needed = set(plain).union(*[set(a) for a in aggregates.values()])
    return SwarmObjective(parsed, tuple(c for c in columns if c in needed), aggregates, tuple(excluded))


class AggregateSurrogates:
    """Per-column surrogates seen as per-target ones: aggregates predicted as the weighted mean of their columns.

    Has what ``search_mixture`` needs (``domains``, ``predict``, ``predict_members``, ``n_members``); each
    ensemble member's aggregate is the mean of the same member's column predictions.
    """

    def __init__(self, surrogates, objective: SwarmObjective) -> None:
        self.inner = surrogates
        self.objective = objective
        self.domains = surrogates.domains

    @property
    def n_members(self) -> int:
        return self.inner.n_members

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return self.objective.target_values(self.inner.predict(X))

    def predict_members(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return self.objective.target_values(self.inner.predict_members(X))
