"""Read an Olmix fit config (``olmix fit --config``) into the arguments of ``fit_swarm``.

Olmix (allenai/olmix, ``docs/cli/fit.md``) minimizes ``Σ_m w_m·f_m(α) + kl_reg·KL(α ‖ relative_sizes)`` over
its kept metrics ``m`` (``filtering.obj_weights``, default 1 each; ``1/n`` each when none is given), subject to
``α_d · target_tokens ≤ repetition_factor · token_counts_d`` when ``constraints.enabled``. Here the same
objective is one aggregate target, the weighted *mean* ``Σ ŵ_m f_m`` with ``ŵ = w / Σw``, searched in the
metrics' own units (no min–max rescaling) with the KL weight ``kl_reg / Σw``: the same argmin. With
``regression.aggregate_task_families`` a metric is a task family, the mean of its tasks in ``eval.tasks``.

What differs, on purpose and said when it applies: ``filtering.drop_metrics`` removes tasks *before* family
means (Olmix applies it after, where task names no longer exist); the regression and proposer types are
replaced by this package's LightGBM ensemble and simplex search (one printed line says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

import yaml

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.search.swarm_objective import ParsedObjective, SwarmObjective, matches

OBJECTIVE = "olmix_objective"  # the aggregate target's name in mixture.json and predictions.csv
USED = {
    "swarm": {"ratios", "metrics"},
    "priors": {"relative_sizes", "token_counts"},
    "eval": {"tasks", "type"},
    "regression": {"aggregate_task_families", "n_test"},
    "proposer": {"kl_reg"},
    "constraints": {"enabled", "target_tokens", "repetition_factor"},
    "filtering": {"drop_metrics", "obj_weights"},
}
INSTEAD = ("one LightGBM regressor per metric with a bootstrap ensemble (--ensemble), a sampled simplex search "
           "and --choice (default lcb), --seed for every random step")


@dataclass
class OlmixFit:
    """What ``fit_swarm`` needs, plus the lines to print."""

    kwargs: dict
    unused: str  # one line: the fields with no counterpart here, and what is used instead
    notes: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)  # the config as read, for config.json


def _fraction(value, what: str) -> float:
    """Olmix writes obj_weights as numbers or fractions like ``"7/52.0"``."""
    try:
        if isinstance(value, str) and "/" in value:
            num, den = value.split("/", 1)
            out = float(num) / float(den)
        else:
            out = float(value)
    except (ValueError, ZeroDivisionError) as exc:
        raise ConfigError(f"{what}: {value!r} is not a number or a fraction like '7/52.0'") from exc
    if not (math.isfinite(out) and out >= 0):
        raise ConfigError(f"{what}: {value!r} must be a finite number >= 0")
    return out


def _path(value, config: Path, what: str) -> Path:
    """As Olmix: relative to the working directory; else relative to the config file."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{config}: {what} must be a path to a CSV file")
    p = Path(value)
    for candidate in ([p] if p.is_absolute() else [Path.cwd() / p, config.parent / p]):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{config}: {what} {value!r} is neither in the working directory nor beside the config")


def _families(tasks) -> dict[str, list[str]]:
    """``eval.tasks``: offline ``{family: [metric, ...]}`` or in-loop ``{family: {task_id: metric}}``."""
    if not isinstance(tasks, dict):
        raise ConfigError("eval.tasks must map task families to lists of metric names")
    return {str(f): [str(m) for m in (v.values() if isinstance(v, dict) else v or [])] for f, v in tasks.items()}


def _section(data: dict, name: str) -> dict:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"olmix config: section {name!r} must be a mapping")
    return value


def read_olmix_config(path: Path, mixtures: Path | None = None, scores: Path | None = None) -> OlmixFit:
    """Validate an Olmix fit config and turn it into ``fit_swarm`` arguments (named errors before fitting).

    ``mixtures`` / ``scores`` replace ``swarm.ratios`` / ``swarm.metrics`` (e.g. files kept elsewhere)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"olmix config {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"olmix config {path} must be a YAML mapping")
    swarm, priors = _section(data, "swarm"), _section(data, "priors")
    regression, proposer = _section(data, "regression"), _section(data, "proposer")
    constraints, filtering, ev = _section(data, "constraints"), _section(data, "filtering"), _section(data, "eval")
    if "relative_sizes" not in priors:
        raise ConfigError(f"{path}: priors.relative_sizes is required (olmix's KL prior)")
    if proposer.get("make_worst_mix"):
        raise ConfigError(f"{path}: proposer.make_worst_mix asks for the worst mixture; mergemix fit only searches "
                          "the best one")
    unused = [f"{s}.{k}={v!r}" for s, used in USED.items() for k, v in _section(data, s).items() if k not in used]
    unused += [f"{s} (section)" for s in data if s not in USED]
    aggregate = bool(regression.get("aggregate_task_families", False))
    families = _families(ev["tasks"]) if "tasks" in ev else None
    if aggregate and families is None:
        raise ConfigError(f"{path}: regression.aggregate_task_families needs eval.tasks (the task families)")
    drop = [str(m) for m in filtering.get("drop_metrics") or []]
    obj_weights = {str(k): _fraction(v, f"filtering.obj_weights.{k}")
                   for k, v in (filtering.get("obj_weights") or {}).items()}
    kl_reg = proposer.get("kl_reg")
    kl_reg = 0.0 if kl_reg is None else _fraction(kl_reg, "proposer.kl_reg")
    notes: list[str] = []
    prior = {str(d): _fraction(v, f"priors.relative_sizes.{d}") for d, v in priors["relative_sizes"].items()}
    token_counts = {str(d): int(_fraction(v, f"priors.token_counts.{d}"))
                    for d, v in (priors.get("token_counts") or {}).items()}
    kwargs: dict = {"mixtures_csv": mixtures or _path(swarm.get("ratios"), path, "swarm.ratios"),
                    "scores_csv": scores or _path(swarm.get("metrics"), path, "swarm.metrics"),
                    "prior": prior, "kl_weight": kl_reg, "raw_scale": True, "domain_prior_required": True}
    if constraints.get("enabled"):
        target = constraints.get("target_tokens")
        if target is None:
            raise ConfigError(f"{path}: constraints.enabled needs constraints.target_tokens")
        if not token_counts:
            raise ConfigError(f"{path}: constraints.enabled needs priors.token_counts")
        kwargs.update(token_counts=token_counts, target_tokens=int(_fraction(target, "constraints.target_tokens")),
                      max_epochs=_fraction(constraints.get("repetition_factor", 4.0), "constraints.repetition_factor"))
    n_test = int(regression.get("n_test") or 0)
    if n_test > 0:
        kwargs["test_count"] = n_test
    builder = _builder(families if families is not None else None, aggregate, drop, obj_weights, kl_reg, notes)
    kwargs["objective"] = builder
    kwargs["record"] = data
    what = "task families" if aggregate else "metrics"
    kwargs["objective_label"] = (f"olmix: minimize the obj_weights-weighted mean of the kept {what}"
                                 + (f" + {kl_reg:g}·KL(α‖relative_sizes)" if kl_reg else ""))
    line = ("olmix config fields not used here: " + (", ".join(unused) if unused else "none")
            + f"; used instead: {INSTEAD}")
    kwargs["notes"] = notes
    return OlmixFit(kwargs, line, notes, data)


def _builder(families: dict[str, list[str]] | None, aggregate: bool, drop: list[str], obj_weights: dict[str, float],
             kl_reg: float, notes: list[str]) -> Callable[[list[str]], SwarmObjective]:
    """The objective, once the metric columns are known: ``(columns) -> SwarmObjective``."""

    def build(columns: list[str]) -> SwarmObjective:
        listed = [m for ms in families.values() for m in ms] if families is not None else list(columns)
        absent = [m for m in listed if m not in columns]
        if absent and not aggregate:
            raise ConfigError(f"eval.tasks names metrics the metrics CSV lacks: {absent[:10]}")
        if absent:
            notes.append(f"{len(absent)} tasks of eval.tasks are not in the metrics CSV and are left out of their "
                         f"families, as olmix does (e.g. {absent[:3]})")
        unknown_drop = [m for m in drop if not matches([m], columns)]
        if unknown_drop:
            notes.append(f"filtering.drop_metrics names {len(unknown_drop)} metrics the CSV lacks: {unknown_drop}")
        kept = [m for m in dict.fromkeys(listed) if m in columns and m not in drop]
        dropped = [m for m in columns if m in drop]
        if aggregate:
            assert families is not None
            groups = {}
            for f, ms in families.items():
                members = [m for m in ms if m in kept]
                if not members:
                    raise ConfigError(f"task family {f!r} has no metric left in the metrics CSV after drop_metrics")
                groups[f] = {m: 1.0 / len(members) for m in members}
            in_family = [m for m in dropped if any(m in ms for ms in families.values())]
            if in_family:
                notes.append(f"drop_metrics removes {len(in_family)} tasks from their families' means here; olmix "
                             "applies drop_metrics after averaging families, where it removes nothing")
        else:
            groups = {m: {m: 1.0} for m in kept}
        unknown = sorted(set(obj_weights) - set(groups))
        if unknown:
            raise ConfigError(f"filtering.obj_weights names {unknown}, which are not kept "
                              f"{'task families' if aggregate else 'metrics'}: {sorted(groups)[:20]}")
        raw = {g: obj_weights.get(g, 1.0) if obj_weights else 1.0 / len(groups) for g in groups}
        total = math.fsum(raw.values())
        if total <= 0:
            raise ConfigError("filtering.obj_weights are all 0")
        parsed = ParsedObjective({OBJECTIVE: 1.0}, {OBJECTIVE: "minimize"})
        weights = {g: raw[g] / total for g in groups}
        # kl_scale: the KL weight is kl_reg/Σw on the weighted mean, so the argmin is olmix's Σw·f + kl_reg·KL
        return SwarmObjective(parsed, tuple(groups) if aggregate else tuple(c for c in columns if c in groups),
                              {OBJECTIVE: weights}, tuple(dropped), kl_scale=1.0 / total,
                              components={g: {g: w} for g, w in weights.items()},
                              derived=groups if aggregate else {})

    return build
