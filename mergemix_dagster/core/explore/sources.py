"""What the explorer shows, read from a ``mergemix fit --out DIR`` folder or handed over by a finished stage.

A fit folder (``core/search/fit_outputs.py``): ``surrogates/`` (one model per fitted metric and its ensemble),
``config.json`` (bounds, objective directions, prior), ``mixture.json`` (the choice, the best measured run),
``swarm_mixtures.csv`` / ``swarm_scores.csv`` (the runs: measured mixtures as points). A stage hands its
refitted surrogates, its measured table, constraints, chosen mixture and base scores (``stage_inputs``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mergemix_dagster.core.explore.page import ExplorerInputs
from mergemix_dagster.core.explore.trees import ExplorerError

FIT_QUANTILE = 0.1  # search_mixture's lcb_quantile, which `mergemix fit` leaves at its default: mixture.json's intervals
FIT_FILES = ("mixture.json", "config.json", "surrogates/surrogates.json", "swarm_mixtures.csv", "swarm_scores.csv")


def _uniform(k: int) -> list[float]:
    return [1.0 / k] * k  # moved into the bounds by the page when loaded


def fit_inputs(fit_dir: Path) -> ExplorerInputs:
    """The explorer of a fit folder; a missing file is a named error."""
    from mergemix_dagster.core.search.surrogate import CapabilitySurrogates

    fit_dir = Path(fit_dir)
    missing = [f for f in FIT_FILES if not (fit_dir / f).exists()]
    if missing:
        raise ExplorerError(f"{fit_dir} is not a `mergemix fit --out` folder: missing {', '.join(missing)}")
    payload = json.loads((fit_dir / "mixture.json").read_text())
    config = json.loads((fit_dir / "config.json").read_text())
    surrogates = CapabilitySurrogates.load(fit_dir / "surrogates")
    domains = list(surrogates.domains)
    if list(config.get("domains", domains)) != domains:
        raise ExplorerError(f"{fit_dir}: config.json domains {config.get('domains')} differ from the surrogates' {domains}")
    bounds = config.get("constraints") or {}
    lower = [float((bounds.get("lower") or {}).get(d, 0.0)) for d in domains]
    upper = [float((bounds.get("upper") or {}).get(d, 1.0)) for d in domains]
    mixtures = pd.read_csv(fit_dir / "swarm_mixtures.csv", index_col=0)
    scores = pd.read_csv(fit_dir / "swarm_scores.csv", index_col=0)
    scores.index, mixtures.index = scores.index.astype(str), mixtures.index.astype(str)
    absent = [d for d in domains if d not in mixtures.columns]
    if absent:
        raise ExplorerError(f"{fit_dir / 'swarm_mixtures.csv'} lacks the domains {absent}")
    runs = [r for r in mixtures.index if r in scores.index]
    fitted = mixtures.loc[runs, "split"].to_numpy() == "fitted" if "split" in mixtures.columns else None
    ids = [f"{r} (held out)" if fitted is not None and not fitted[i] else r for i, r in enumerate(runs)]
    X = mixtures.loc[runs, domains].to_numpy(dtype=float)
    measured = {c: scores.loc[runs, c].to_numpy(dtype=float).tolist()
                for c in surrogates.capabilities if c in scores.columns}
    markers: dict[str, list[float]] = {"chosen": [float(payload["weights"][d]) for d in domains]}
    best = payload.get("best_observed_run")
    if best is not None and str(best) in mixtures.index:
        markers[f"best measured run ({best})"] = mixtures.loc[str(best), domains].to_numpy(dtype=float).tolist()
    prior = (config.get("objective") or {}).get("prior")
    if prior:
        markers["prior"] = [float(prior[d]) for d in domains]
    markers["uniform"] = _uniform(len(domains))
    terms = (config.get("objective") or {}).get("terms") or {}
    directions = {c: str(terms[c]["direction"]) for c in surrogates.capabilities if c in terms}
    notes = [f"fit folder {fit_dir.resolve()}; objective: {payload.get('objective', '')}",
             ("each metric is predicted by its own LightGBM surrogate (surrogates/); the objective itself "
              "(an aggregate of them) is not shown"),
             "baselines other than the chosen mixture and measured runs are moved into the bounds when loaded"]
    return ExplorerInputs(
        title=f"MergeMix explorer: fit folder {fit_dir.name}/", source=f"mergemix fit: {len(runs)} measured runs, "
        f"{len(domains)} domains, {len(surrogates.capabilities)} metrics", surrogates=surrogates,
        lower=lower, upper=upper, quantile=FIT_QUANTILE, measured_ids=ids, measured_X=X, measured_scores=measured,
        markers=markers, directions=directions, notes=notes)


def stage_inputs(stage: str, surrogates, table, lower: Sequence[float], upper: Sequence[float],
                 quantile: float, chosen: Mapping[str, float], base: Mapping[str, float],
                 others: Mapping[str, Mapping[str, float]] | None = None, objective: str = "",
                 surrogates_uri: str = "") -> ExplorerInputs:
    """The explorer of a finished stage: ``table`` is its measured ``CapabilityTable``, ``chosen`` the chosen
    mixture's weights, ``base`` the base model's capability scores (a reference line), ``others`` further
    mixtures to mark (the search's choice when a measured mixture won, the previous stage's mixture...)."""
    domains = list(surrogates.domains)
    if list(table.domains) != domains:
        raise ExplorerError(f"stage {stage}: measured domains {list(table.domains)} differ from the surrogates' {domains}")
    markers = {"chosen": [float(chosen[d]) for d in domains]}
    for name, w in (others or {}).items():
        if len(markers) < 4 and w:
            markers[name] = [float(w.get(d, 0.0)) for d in domains]
    if len(markers) < 4:
        markers["uniform"] = _uniform(len(domains))
    return ExplorerInputs(
        title=f"MergeMix explorer: stage {stage}",
        source=f"stage {stage}: {len(table.candidate_ids)} measured mixtures, {len(domains)} domains; "
               f"objective {objective}".rstrip(),
        surrogates=surrogates, lower=list(lower), upper=list(upper), quantile=quantile,
        measured_ids=list(table.candidate_ids), measured_X=np.asarray(table.alphas, dtype=float),
        measured_scores={c: np.asarray(v, dtype=float).tolist() for c, v in table.scores.items()},
        markers=markers, references={"base model": dict(base)} if base else {},
        notes=[f"surrogates refitted on every measured mixture of stage {stage}: {surrogates_uri}".rstrip(": "),
               "baselines other than the chosen mixture are moved into the bounds when loaded"])
