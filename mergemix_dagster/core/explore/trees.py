"""LightGBM surrogates as JSON trees the explorer page evaluates in the browser, and the same evaluation in Python.

``export_surrogates`` turns each capability's main regressor and bootstrap members (``CapabilitySurrogates``)
into compact trees from ``booster.dump_model()``. A split node is ``[feature, threshold, code, left, right]``
with ``code = missing type (0 None, 1 Zero, 2 NaN) + 4 · default_left``, a leaf its value (LightGBM
stores leaves with the learning rate and, in the first tree, the initial score already applied). A model is
``{"trees": [...]}`` or ``{"const": value}``. ``predict_exported`` / ``intervals_exported`` mirror, line by line,
what ``explorer_model.js`` does, and both follow LightGBM's ``Tree::NumericalDecision``:
a NaN feature becomes 0 unless the missing type is NaN; a zero (|x| ≤ 1e-35f) under missing type Zero, or a NaN
under missing type NaN, goes the default direction; otherwise ``x <= threshold`` goes left. The prediction is
the sum of the trees in order, with no output transform (only identity objectives are accepted). The interval
is ``CapabilitySurrogates.intervals``: members centred on the main prediction, then numpy's linear quantile.
Anything else the page could not reproduce (categorical splits, linear trees, multiclass, a non-identity
objective) raises ``ExplorerError`` rather than showing a wrong number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mergemix_dagster.core.errors import MergeMixError

K_ZERO_THRESHOLD = 1.0000000180025095e-35  # LightGBM's kZeroThreshold, the float 1e-35f
MISSING = {"None": 0, "Zero": 1, "NaN": 2}
IDENTITY_OBJECTIVES = ("regression", "regression_l2", "regression_l1", "huber", "fair", "quantile", "mape")


class ExplorerError(MergeMixError):
    """A surrogate the explorer page cannot evaluate exactly, or inputs it cannot show."""


def _node(n: dict, where: str):
    if "leaf_value" in n:
        if "leaf_coeff" in n or "leaf_features" in n:
            raise ExplorerError(f"{where}: linear-tree leaves are not supported by the explorer")
        return float(n["leaf_value"])
    if n.get("decision_type") != "<=":
        raise ExplorerError(f"{where}: split {n.get('decision_type')!r} is not supported (numerical '<=' only)")
    missing = n.get("missing_type", "None")
    if missing not in MISSING:
        raise ExplorerError(f"{where}: unknown missing_type {missing!r}")
    return [int(n["split_feature"]), float(n["threshold"]), MISSING[missing] + (4 if n.get("default_left") else 0),
            _node(n["left_child"], where), _node(n["right_child"], where)]


def export_booster(booster, n_features: int, where: str) -> dict:
    """One LightGBM booster (or a float constant) as ``{"trees": [...]}`` / ``{"const": v}``."""
    if isinstance(booster, (int, float)):
        return {"const": float(booster)}
    d = booster.dump_model()
    objective = str(d.get("objective", "")).split()[0] if d.get("objective") else ""
    if objective not in IDENTITY_OBJECTIVES:
        raise ExplorerError(f"{where}: objective {objective!r} has an output transform the explorer does not apply")
    if int(d.get("num_tree_per_iteration", 1)) != 1 or int(d.get("num_class", 1)) != 1:
        raise ExplorerError(f"{where}: multi-output models are not supported")
    if d.get("average_output"):
        raise ExplorerError(f"{where}: random-forest (averaged) models are not supported")
    if int(d.get("max_feature_idx", n_features - 1)) != n_features - 1:
        raise ExplorerError(f"{where}: model has {int(d['max_feature_idx']) + 1} features, expected {n_features}")
    return {"trees": [_node(t["tree_structure"], f"{where}, tree {i}") for i, t in enumerate(d["tree_info"])]}


def export_surrogates(surrogates) -> dict:
    """``{capability: {"main": model, "members": [model, ...]}}`` for every capability of ``surrogates``."""
    k = len(surrogates.domains)
    out = {}
    for cap in surrogates.capabilities:
        main, members = surrogates.models(cap)
        out[cap] = {"main": export_booster(main, k, f"capability {cap!r}"),
                    "members": [export_booster(m, k, f"capability {cap!r}, member {j}") for j, m in enumerate(members)]}
    return out


def _tree(node, x: Sequence[float]) -> float:
    while isinstance(node, list):
        feature, threshold, code, left, right = node
        missing, default_left = code & 3, code & 4
        v = x[feature]
        if math.isnan(v) and missing != 2:
            v = 0.0
        if (missing == 1 and -K_ZERO_THRESHOLD <= v <= K_ZERO_THRESHOLD) or (missing == 2 and math.isnan(v)):
            node = left if default_left else right
        else:
            node = left if v <= threshold else right
    return node


def predict_model(model: dict, x: Sequence[float]) -> float:
    if "const" in model:
        return model["const"]
    s = 0.0
    for t in model["trees"]:
        s += _tree(t, x)
    return s


def quantile(values: Sequence[float], q: float) -> float:
    """numpy's default (linear) quantile."""
    a = sorted(values)
    h = (len(a) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(a) - 1)
    return a[lo] + (h - lo) * (a[hi] - a[lo])


def predict_exported(exported: dict, x: Sequence[float]) -> dict[str, float]:
    return {cap: predict_model(m["main"], x) for cap, m in exported.items()}


def intervals_exported(exported: dict, x: Sequence[float], q: float) -> dict[str, tuple[float, float]]:
    """``CapabilitySurrogates.intervals`` at one mixture (capabilities with fewer than 2 members: none)."""
    out = {}
    for cap, m in exported.items():
        if len(m["members"]) < 2:
            continue
        main = predict_model(m["main"], x)
        p = [predict_model(e, x) for e in m["members"]]
        mean = sum(p) / len(p)
        centred = [v - mean + main for v in p]
        out[cap] = (quantile(centred, q), quantile(centred, 1 - q))
    return out
