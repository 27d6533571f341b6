"""The folder ``mergemix fit`` writes: what a team reads, and what a later tool (an explorer) loads.

``mixture.json`` (the choice, predictions, constraints, held-out quality), ``config.json`` (inputs, options, the
objective as data: terms, aggregates, scale, KL weight and prior, bounds), ``surrogates/`` (one LightGBM model
per fitted metric and its ensemble), ``swarm_mixtures.csv`` / ``swarm_scores.csv`` (the runs used: split and
weights; the fitted metrics), ``predictions.csv``
(``--predict`` mixtures, else the swarm's runs: run id, one column per metric, ``objective``), ``heldout.csv``
(with a held-out split), three PNGs and ``summary.md`` (the PNGs embedded, like the stage report).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mergemix_dagster.core.evaluation.fidelity import rankdata
from mergemix_dagster.core.search.objective import kl_to_prior, objective_values


@dataclass
class FitRecord:
    payload: dict
    objective: object  # SwarmObjective
    search_objective: object  # Objective
    scale: object  # ScoreScale
    model: object  # AggregateSurrogates
    domains: tuple[str, ...]
    runs: list[str]
    X: np.ndarray
    per_metric: dict[str, np.ndarray]
    train: np.ndarray
    test: np.ndarray
    constraints: object  # MixtureConstraints
    inputs: dict
    options: dict
    record: dict = field(default_factory=dict)
    other: pd.DataFrame | None = None  # --predict mixtures
    id_name: str = "run"  # the run-id column's name in the input CSVs, kept in the CSVs written


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def objective_column(rec: FitRecord, per_target: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """The aggregate the search optimizes, without the KL term: one target in its own units (a ``mean(...)``
    or Olmix's weighted mean), several as the weighted mean of their min–max goodness (higher is better)."""
    kept = [t for t in rec.objective.targets if t not in rec.search_objective.excluded]
    if len(kept) == 1:
        return np.asarray(per_target[kept[0]], dtype=float)
    plain = replace(rec.search_objective, kl_weight=0.0, prior=None)
    return objective_values(per_target, plain, rec.scale, X, rec.domains)


def objective_definition(rec: FitRecord) -> str:
    kept = [t for t in rec.objective.targets if t not in rec.search_objective.excluded]
    if len(kept) == 1:
        return f"{kept[0]} in its own units ({rec.objective.parsed.directions[kept[0]]})"
    return "weighted mean of each target's min–max goodness over the fitted runs (0 worst, 1 best; maximize)"


def _frame(rec: FitRecord, index, name: str, per_metric: dict, per_target: dict, X: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({m: per_metric[m] for m in rec.objective.metrics}, index=pd.Index(index, name=name))
    frame["objective"] = objective_column(rec, per_target, X)
    return frame


def _heldout(rec: FitRecord, out: Path, files: dict) -> dict:
    if not len(rec.test):
        return {}
    Xt = rec.X[rec.test]
    pred = rec.model.inner.predict(Xt)
    actual = {m: v[rec.test] for m, v in rec.per_metric.items()}
    obj_p = objective_column(rec, rec.objective.target_values(pred), Xt)
    obj_a = objective_column(rec, rec.objective.target_values(actual), Xt)
    rho = {m: spearman(actual[m], pred[m]) for m in rec.objective.metrics}
    rho["objective"] = spearman(obj_a, obj_p)
    table = {rec.id_name: [rec.runs[i] for i in rec.test]}
    for m in [*rec.objective.metrics, "objective"]:
        a, p = (obj_a, obj_p) if m == "objective" else (actual[m], pred[m])
        table[f"{m} measured"], table[f"{m} predicted"] = a, p
    files["heldout"] = out / "heldout.csv"
    pd.DataFrame(table).to_csv(files["heldout"], index=False)
    return {"runs": int(len(rec.test)), "spearman": rho}


def _plots(rec: FitRecord, out: Path, files: dict) -> None:
    from mergemix_dagster.core.plots import fit_tradeoff_plot, predicted_vs_actual_plot, weights_plot

    p = rec.payload
    all_pred = rec.model.inner.predict(rec.X)
    obj_p = objective_column(rec, rec.objective.target_values(all_pred), rec.X)
    obj_a = objective_column(rec, rec.objective.target_values(rec.per_metric), rec.X)
    held = np.zeros(len(rec.runs), dtype=bool)
    held[rec.test] = True
    rho = (p.get("heldout") or {}).get("spearman", {}).get("objective") if held.any() else spearman(obj_a, obj_p)
    files["heldout_png"] = predicted_vs_actual_plot(obj_a, obj_p, held, "objective", rho, out / "heldout.png")
    prior = p.get("prior")
    w = [p["weights"][d] for d in rec.domains]
    files["weights_png"] = weights_plot(rec.domains, w, None if prior is None else [prior[d] for d in rec.domains],
                                        list(rec.constraints.upper), out / "weights.png")
    chosen_x = np.array([w])
    targets = [t for t in rec.objective.targets if t not in rec.search_objective.excluded]
    if len(targets) >= 2:
        a, b = targets[:2]
        mv = rec.objective.target_values(rec.per_metric)
        cv = rec.objective.target_values(rec.model.inner.predict(chosen_x))
        x, y, labels, star = mv[a], mv[b], (a, b), (cv[a][0], cv[b][0])
        title = f"Trade-off between {a} and {b}"
    elif len(rec.objective.components) >= 2:
        weights = {g: sum(ms.values()) for g, ms in rec.objective.components.items()}
        a, b = sorted(weights, key=lambda g: -weights[g])[:2]
        mv = rec.objective.component_values(rec.per_metric)
        cv = rec.objective.component_values(rec.model.inner.predict(chosen_x))
        x, y, labels, star = mv[a], mv[b], (a, b), (cv[a][0], cv[b][0])
        title = f"Trade-off between the two heaviest families ({a}, {b})"
    else:
        q = np.array([prior[d] for d in rec.domains]) if prior else rec.X.mean(axis=0)
        x, y = kl_to_prior(rec.X, q), obj_a
        star = (float(kl_to_prior(chosen_x, q)[0]), float(objective_column(
            rec, rec.objective.target_values(rec.model.inner.predict(chosen_x)), chosen_x)[0]))
        ref = "prior" if prior else "mean swarm mixture"
        labels = (f"KL(α ‖ {ref})", f"objective: {targets[0]}")
        title = f"Trade-off: objective vs distance to the {ref}"
    files["tradeoff_png"] = fit_tradeoff_plot(np.asarray(x), np.asarray(y), labels, star, out / "tradeoff.png", title)


def _md(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".4g") if not frame.empty else "_none_"


def summary_markdown(rec: FitRecord, notes: list[str], images: dict[str, Path]) -> str:
    p = rec.payload
    prior = p.get("prior") or {}
    reasons = p.get("constraint_reasons", {})
    mix = pd.DataFrame({"domain": list(rec.domains), "weight": [p["weights"][d] for d in rec.domains],
                        "prior": [prior.get(d, math.nan) for d in rec.domains],
                        "upper bound": list(rec.constraints.upper),
                        "bound": [reasons.get(d, "") for d in rec.domains]}).sort_values("weight", ascending=False)
    lines = ["# MergeMix fit", "", f"> objective: {p['objective']}", ""]
    for n in notes:
        lines += [f"> **NOTE** {n}", ""]
    lines += ["## Chosen mixture", "", _md(mix), ""]
    lines += [(f"- choice: {p['choice']}; {p['runs_fitted']} runs fitted, {p['runs_held_out']} held out; "
               f"{p['n_samples']:,} points searched"),
              f"- predictions.csv `objective`: {p['objective_definition']}",
              f"- best measured run: {p['best_observed_run']}", ""]
    held = (p.get("heldout") or {}).get("spearman", {})
    iv = p["predicted_interval"]
    rows = [{"target": t, "predicted": v, "interval": f"[{iv[t][0]:.4g}, {iv[t][1]:.4g}]" if t in iv else "",
             "direction": rec.objective.parsed.directions.get(t, "")} for t, v in p["predicted"].items()]
    lines += ["## Predicted at the chosen mixture", "", _md(pd.DataFrame(rows)), ""]
    q = pd.DataFrame([{"metric": m, "CV Spearman": c["spearman"], "held-out Spearman": held.get(m)}
                      for m, c in p["surrogate_cv"].items()])
    if held:
        q = pd.concat([q, pd.DataFrame([{"metric": "objective", "held-out Spearman": held.get("objective")}])])
    lines += ["## Surrogate quality", "", _md(q), ""]
    for title, path in images.items():
        png = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        lines += [f"### {title}", "", f"![{title}](data:image/png;base64,{png})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_fit(out: Path, rec: FitRecord, surrogates, notes: list[str] | None = None) -> dict[str, Path]:
    """Write the fit folder; returns ``{name: path}`` of what was written."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"mixture": out / "mixture.json"}
    p = rec.payload
    p["objective_definition"] = objective_definition(rec)
    heldout = _heldout(rec, out, files)
    if heldout:
        p["heldout"] = heldout
    surrogates.save(out / "surrogates")
    files["surrogates"] = out / "surrogates"
    split = np.where(np.isin(np.arange(len(rec.runs)), rec.test), "held_out", "fitted")
    index = pd.Index(rec.runs, name=rec.id_name)
    swarm = pd.DataFrame(rec.X, columns=list(rec.domains), index=index)
    swarm.insert(0, "split", split)
    files["swarm_mixtures"], files["swarm_scores"] = out / "swarm_mixtures.csv", out / "swarm_scores.csv"
    swarm.to_csv(files["swarm_mixtures"])  # two files: a metric may share a domain's name (olmix's "math")
    pd.DataFrame({m: rec.per_metric[m] for m in rec.objective.metrics}, index=index).to_csv(files["swarm_scores"])
    if rec.other is not None:
        Xo = rec.other.to_numpy(dtype=float)
        index, X, name = list(rec.other.index), Xo, rec.other.index.name or "run"
    else:
        index, X, name = rec.runs, rec.X, rec.id_name
    pred = rec.model.inner.predict(X)
    files["predictions"] = out / "predictions.csv"
    _frame(rec, index, name, pred, rec.objective.target_values(pred), X).to_csv(files["predictions"])
    _plots(rec, out, files)
    files["mixture"].write_text(json.dumps(p, indent=2))
    files["config"] = out / "config.json"
    obj = rec.search_objective
    files["config"].write_text(json.dumps({
        "inputs": rec.inputs, "options": rec.options, "domains": list(rec.domains),
        "objective": {**rec.objective.describe(), "kl_weight": obj.kl_weight, "prior": obj.prior,
                      "not_optimized": dict(obj.excluded), "scale": {"lo": rec.scale.lo, "hi": rec.scale.hi},
                      "predictions_objective": p["objective_definition"]},
        "constraints": {"lower": dict(zip(rec.domains, rec.constraints.lower)),
                        "upper": dict(zip(rec.domains, rec.constraints.upper)), "reasons": rec.constraints.reasons},
        "olmix_config": rec.record or None,
    }, indent=2, default=str))
    images = {"Predicted vs measured objective": files["heldout_png"], "Chosen weights vs prior, with caps":
              files["weights_png"], "Trade-off": files["tradeoff_png"]}
    files["summary"] = out / "summary.md"
    files["summary"].write_text(summary_markdown(rec, list(notes or []), images))
    return files
