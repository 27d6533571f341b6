"""Fit and search on a swarm a team already trained (RegMix / Olmix style), with the pipeline's own code.

Inputs are two CSV files sharing a run-id column (``--id-column``, default: the first of run, run_id, id, name
that exists, else the first column): the mixtures (every other numeric column a domain weight) and the scores
(every other column a metric). Columns with no number in them (labels like Olmix's ``name``), a blank header
(a saved row position) and ``index`` are ignored, with a notice. One LightGBM regressor per metric in the objective, the
same search, constraints and choices as the pipeline, and the same output: ``mixture.json``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from mergemix_dagster.core.errors import ConfigError, SimplexError, TooFewRunsError, UnmatchedRunsError
from mergemix_dagster.core.search.constraints import build_constraints
from mergemix_dagster.core.search.fit_outputs import FitRecord, write_fit
from mergemix_dagster.core.search.objective import ScoreScale, fit_score_scale, resolve_targets
from mergemix_dagster.core.search.simplex import search_mixture
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates
from mergemix_dagster.core.search.swarm_objective import (
    AggregateSurrogates,
    ParsedObjective,
    SwarmObjective,
    matches,
    parse_objective,
    resolve_objective,
)

__all__ = ["FitResult", "ParsedObjective", "SwarmNotice", "SwarmWarning", "fit_swarm", "parse_bounds", "read_swarm_csv",
           "parse_objective", "read_mixtures", "read_token_counts"]

RENORMALIZE_TOLERANCE = 1e-2  # rows rounded to 3 decimals sum to 0.996–1.003: renormalize, with a warning
ID_COLUMNS = ("run", "run_id", "id", "name")  # the first that exists is the run id, unless --id-column says
EXAMPLES = 5  # ids named in a message


class SwarmWarning(UserWarning):
    """Something in a swarm was changed or left out: rows renormalized, run ids in only one file."""


class SwarmNotice(SwarmWarning):
    """Columns of a swarm CSV that are not used (labels, row positions); printed as a note."""


def parse_bounds(items: Sequence[str], what: str) -> dict[str, float]:
    """``["math=0.5", "code=0.1"]`` -> ``{"math": 0.5, "code": 0.1}``."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} {item!r} must look like DOMAIN=WEIGHT")
        d, v = item.split("=", 1)
        try:
            out[d.strip()] = float(v)
        except ValueError as exc:
            raise ConfigError(f"{what} {item!r}: {v!r} is not a number") from exc
    return out


def read_mixtures(path: Path, domains: Sequence[str] | None = None, id_column: str | None = None) -> pd.DataFrame:
    """The mixtures CSV, indexed by run id; rows within 1e-2 of the simplex renormalized (with a warning)."""
    frame = read_swarm_csv(path, "mixtures", id_column)
    if domains is not None:
        missing = sorted(set(domains) - set(frame.columns))
        if missing:
            raise ConfigError(f"{path}: no column for domains {missing}")
        frame = frame[list(domains)]
    values = _numeric(frame, path, "weight", SimplexError).to_numpy(dtype=float)
    if (values < 0).any():
        row = frame.index[int(np.where((values < 0).any(axis=1))[0][0])]
        raise SimplexError(f"{path}: run {row!r} has a negative weight")
    sums = values.sum(axis=1)
    far = np.abs(sums - 1.0) > RENORMALIZE_TOLERANCE
    if far.any():
        i = int(np.where(far)[0][0])
        raise SimplexError(
            f"{path}: run {frame.index[i]!r} weights sum to {sums[i]:.6f}; rows more than "
            f"{RENORMALIZE_TOLERANCE:g} off 1 are not mixtures ({int(far.sum())} such rows)"
        )
    off = np.abs(sums - 1.0) > 1e-9
    if off.any():
        warnings.warn(
            f"{path}: renormalized {int(off.sum())} rows whose weights summed to "
            f"{sums[off].min():.4f}–{sums[off].max():.4f} (within {RENORMALIZE_TOLERANCE:g} of 1)",
            SwarmWarning, stacklevel=2,
        )
    return pd.DataFrame(values / sums[:, None], index=frame.index, columns=frame.columns)


def _numeric(frame: pd.DataFrame, path: Path, what: str, error: type[Exception]) -> pd.DataFrame:
    """``frame`` as floats, or ``error`` naming the first run id and column whose cell is missing, not a
    number, or not finite (and how many such cells there are)."""
    values = frame.apply(pd.to_numeric, errors="coerce").astype(float)
    bad = ~np.isfinite(values.to_numpy())
    if bad.any():
        i, j = (int(k[0]) for k in np.nonzero(bad))
        cell = frame.iat[i, j]
        raise error(f"{path}: run {frame.index[i]!r}, column {frame.columns[j]!r}: {what} {_show(cell)} is missing, "
                    f"not a number or not finite ({int(bad.sum())} such cells)")
    return values


def _id_column(columns: Sequence[str], id_column: str | None, path: Path) -> str:
    if id_column:
        if id_column not in columns:
            raise ConfigError(f"{path} has no id column {id_column!r} (--id-column); its columns: {list(columns)[:20]}")
        return id_column
    return next((c for c in ID_COLUMNS if c in columns), columns[0])


def _ignored_columns(frame: pd.DataFrame) -> dict[str, str]:
    """Columns that are not data: a blank header (a saved row position), ``index``, and any column with values
    but no number among them (a label). A column with some numbers and some text is kept: its text is an error."""
    out = {}
    for col in frame.columns:
        if str(col).startswith("Unnamed: ") or col == "index":
            out[col] = "row position"
        elif frame[col].notna().any() and pd.to_numeric(frame[col], errors="coerce").isna().all():
            out[col] = "not numeric"
    return out


def read_swarm_csv(path: Path, what: str, id_column: str | None = None) -> pd.DataFrame:
    """A swarm CSV indexed by its run ids (``--id-column``, else the usual names), label and position columns dropped
    with a note; unreadable files, duplicate ids and no data column are named errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} CSV {path} does not exist")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} CSV {path} cannot be read: {exc}") from exc
    if frame.shape[1] < 2:
        raise ConfigError(f"{what} CSV {path} needs a run-id column and at least one more column")
    frame = frame.set_index(_id_column(list(frame.columns), id_column, path))
    frame.index = frame.index.astype(str)
    if frame.index.duplicated().any():
        raise ConfigError(f"{what} CSV {path}: duplicate run ids {sorted(set(frame.index[frame.index.duplicated()]))[:5]}")
    ignored = _ignored_columns(frame)
    if ignored:
        warnings.warn(f"{what} CSV {path}: run id column {frame.index.name!r}; ignored columns "
                      + ", ".join(f"{c!r} ({r})" for c, r in ignored.items()), SwarmNotice, stacklevel=3)
        frame = frame.drop(columns=list(ignored))
        if frame.shape[1] == 0:
            raise ConfigError(f"{what} CSV {path}: no numeric column besides the run id {frame.index.name!r}")
    return frame


def _match_runs(mixtures: pd.DataFrame, scores: pd.DataFrame, mixtures_csv: Path, scores_csv: Path,
                strict: bool) -> pd.Index:
    """Run ids in both files; ids in only one are a warning with the count and examples (an error if strict)."""
    no_scores = mixtures.index.difference(scores.index, sort=False)
    no_mixture = scores.index.difference(mixtures.index, sort=False)
    parts = [f"{len(ids)} run ids of {a} are not in {b} (e.g. {list(ids[:EXAMPLES])})"
             for ids, a, b in ((no_scores, mixtures_csv, scores_csv), (no_mixture, scores_csv, mixtures_csv)) if len(ids)]
    if parts:
        msg = "; ".join(parts) + f"; {len(mixtures.index.intersection(scores.index))} runs are in both"
        if strict:
            raise UnmatchedRunsError(msg + " (--strict)")
        warnings.warn(msg + "; those runs are left out (--strict makes this an error)", SwarmWarning, stacklevel=3)
    return mixtures.index.intersection(scores.index, sort=False)


@dataclass
class FitResult:
    payload: dict
    surrogates: CapabilitySurrogates
    files: dict[str, Path] = field(default_factory=dict)


def read_token_counts(path: Path) -> dict[str, int]:
    """Available tokens per domain: a CSV of two columns (domain, tokens) or a JSON/YAML mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"token counts file {path} does not exist")
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: token counts must be a mapping domain -> tokens")
        items = list(data.items())
    else:
        frame = pd.read_csv(path)
        if frame.shape[1] != 2:
            raise ConfigError(f"{path}: token counts CSV needs exactly two columns (domain, tokens), got "
                              f"{list(frame.columns)}")
        items = list(zip(frame.iloc[:, 0], frame.iloc[:, 1]))
    out = {}
    for d, v in items:
        try:
            n = float(str(v).replace("_", ""))
        except ValueError as exc:
            raise ConfigError(f"{path}: token count of {d!r} is not a number: {v!r}") from exc
        if not (math.isfinite(n) and n >= 0):
            raise ConfigError(f"{path}: token count of {d!r} must be a finite number >= 0, got {v!r}")
        out[str(d)] = int(n)
    return out


def _split_rows(n: int, test_fraction: float, test_count: int | None, seed: int, needed: int):
    """Seeded train/held-out row indices; the held-out rows are never fitted on."""
    if test_count is None:
        if not (0.0 <= test_fraction < 1.0):
            raise ConfigError(f"--test-fraction must be in [0, 1), got {test_fraction}")
        test_count = int(round(test_fraction * n)) if test_fraction > 0 else 0
        if test_fraction > 0:
            test_count = max(test_count, 2)  # a Spearman needs 2 points
    if test_count == 0:
        return np.arange(n), np.arange(0)
    if n - test_count < needed:
        raise TooFewRunsError(f"holding out {test_count} of {n} runs leaves {n - test_count} to fit on; "
                              f"{needed} are needed (domains + 2)")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[test_count:]), np.sort(perm[:test_count])


def fit_swarm(
    mixtures_csv: Path,
    scores_csv: Path,
    objective: str | Callable[[list[str]], SwarmObjective],
    out_dir: Path,
    predict_csv: Path | None = None,
    n_samples: int = 100_000,
    seed: int = 0,
    choice: str = "lcb",
    top_k: int = 100,
    ensemble: int = 8,
    min_weight: dict[str, float] | None = None,
    max_weight: dict[str, float] | None = None,
    pinned: dict[str, float] | None = None,
    kl_weight: float = 0.0,
    prior: dict[str, float] | None = None,
    cv_folds: int = 5,
    noise: dict[str, float] | None = None,
    min_spread_in_noise: float = 1.0,
    id_column: str | None = None,
    strict: bool = False,
    exclude_metrics: Sequence[str] = (),
    token_counts: Mapping[str, int] | None = None,
    target_tokens: int | None = None,
    max_epochs: float = 4.0,
    test_fraction: float = 0.0,
    test_count: int | None = None,
    raw_scale: bool = False,
    domain_prior_required: bool = False,
    objective_label: str | None = None,
    record: dict | None = None,
    notes: list[str] | None = None,
) -> FitResult:
    """Fit one regressor per objective metric on the swarm, search, write ``mixture.json`` and the fit folder.

    ``objective``: the ``--objective`` text, or a builder ``(score columns) -> SwarmObjective`` (an Olmix
    config). ``noise``: a standard error per metric (e.g. the std of a run repeated over seeds); metrics the
    swarm moves by less than ``min_spread_in_noise`` of it are reported and left out of the objective, as in
    the pipeline (docs/search.md). ``id_column``: the run-id column of both CSVs (default: the first of
    ``ID_COLUMNS`` that exists, else the first column). ``strict``: run ids in only one file are an error.
    ``exclude_metrics``: patterns of columns left out of every ``mean(...)``. ``token_counts`` with
    ``target_tokens``: ``α_d ≤ max_epochs · N_d / T``. ``test_fraction`` / ``test_count``: a seeded held-out
    split, never fitted on. ``raw_scale``: the objective in the metrics' own units (Olmix), not min–max.
    ``notes``: lines for ``summary.md`` (an objective builder may append to the same list).
    """
    if choice == "lcb" and ensemble < 2:
        raise ConfigError(f"choice 'lcb' (the default) needs an ensemble of >= 2 regressors, got {ensemble}; "
                          "use --choice top_k_mean or argmax without one")
    if (token_counts is None) != (target_tokens is None):
        raise ConfigError("--token-counts and --target-tokens go together: α_d ≤ max_epochs · N_d / T needs both")
    mixtures = read_mixtures(mixtures_csv, id_column=id_column)
    domains = tuple(mixtures.columns)
    scores = read_swarm_csv(scores_csv, "scores", id_column)
    columns = [str(c) for c in scores.columns]
    if callable(objective):
        sobj = objective(columns)
        label = objective_label or "objective"
    else:
        sobj = resolve_objective(parse_objective(objective), columns, exclude_metrics, str(scores_csv))
        label = objective
    unmatched = [p for p in exclude_metrics if not matches([p], columns)]
    if unmatched:
        warnings.warn(f"--exclude-metrics patterns {unmatched} match no column of {scores_csv}", SwarmWarning,
                      stacklevel=2)
    common = _match_runs(mixtures, scores, mixtures_csv, scores_csv, strict)
    needed = len(domains) + 2
    if len(common) < needed:
        raise TooFewRunsError(
            f"fit needs at least {needed} runs (domains + 2) for {len(domains)} domains; {len(common)} run ids "
            f"appear in both {mixtures_csv} and {scores_csv}")
    dropped = len(mixtures) - len(common)
    metrics = list(sobj.metrics)
    Y = _numeric(scores.loc[common, sobj.source_columns], scores_csv, "score", ConfigError)
    X = mixtures.loc[common].to_numpy(dtype=float)
    train, test = _split_rows(len(common), test_fraction, test_count, seed, needed)
    per_metric = sobj.with_derived({c: Y[c].to_numpy(dtype=float) for c in Y.columns})
    observed = sobj.target_values(per_metric)
    surrogates = CapabilitySurrogates.fit(domains, X[train], {m: v[train] for m, v in per_metric.items()},
                                          seed=seed, cv_folds=cv_folds, ensemble=ensemble)
    model = AggregateSurrogates(surrogates, sobj)
    prior = _prior(prior, domains, kl_weight, X[train], domain_prior_required)
    targets = sobj.targets
    unknown_noise = sorted(set(noise or {}) - set(targets))
    if unknown_noise:
        raise ConfigError(f"--noise names metrics {unknown_noise} that are not in the objective {targets}")
    fitted = {t: v[train] for t, v in observed.items()}
    resolution = resolve_targets(fitted, dict(noise or {}), min_spread_in_noise) if noise else {}
    excluded = {m: r.reason for m, r in resolution.items() if not r.resolved}
    obj = sobj.parsed.objective(kl_weight=kl_weight * sobj.kl_scale, prior=prior if kl_weight > 0 else None,
                                excluded=excluded)
    constraints = build_constraints(domains, min_weight=min_weight, max_weight=max_weight, pinned=pinned,
                                    available_tokens=token_counts, target_tokens=target_tokens, max_epochs=max_epochs)
    scale = ScoreScale({t: 0.0 for t in targets}, {t: 1.0 for t in targets}) if raw_scale else fit_score_scale(fitted)
    result = search_mixture(model, obj, scale, n_samples=n_samples, seed=seed, choice=choice,
                            top_k=top_k, constraints=constraints, include=_mixtures(domains, X[train]))
    unconstrained = (search_mixture(model, obj, scale, n_samples=n_samples, seed=seed, choice=choice,
                                    top_k=top_k) if constraints.active else None)
    best_run = common[train][int(np.argmax(_values(fitted, obj, scale, X[train], domains)))]
    payload = {
        "weights": result.mixture.as_dict(),
        "predicted": result.predicted,
        "predicted_interval": {k: list(v) for k, v in result.intervals.items()},
        "predicted_objective": result.predicted_objective,
        "objective": label,
        "not_optimized": excluded,
        "choice": choice,
        "argmax": result.argmax.as_dict(),
        "top_k_mean": result.top_k_mean.as_dict(),
        "constraints": constraints.describe(),
        "constraint_reasons": dict(constraints.reasons),
        "unconstrained": None if unconstrained is None else unconstrained.mixture.as_dict(),
        "surrogate_cv": {m: {"r2": _num(q.r2), "spearman": _num(q.spearman)} for m, q in surrogates.quality.items()},
        "runs_used": int(len(common)),
        "runs_fitted": int(len(train)),
        "runs_held_out": int(len(test)),
        "runs_without_scores": int(dropped),
        "runs_without_mixture": int(len(scores) - len(common)),
        "best_observed_run": best_run,
        "n_samples": result.n_samples,
        "metrics": metrics,
        "excluded_metrics": list(sobj.excluded),
        "prior": prior,
    }
    rec = FitRecord(payload=payload, objective=sobj, search_objective=obj, scale=scale, model=model,
                    domains=domains, runs=list(common), X=X, per_metric=per_metric, train=train, test=test,
                    constraints=constraints, inputs={"mixtures": str(mixtures_csv), "scores": str(scores_csv),
                                                     "predict": None if predict_csv is None else str(predict_csv)},
                    options={"seed": seed, "n_samples": n_samples, "choice": choice, "top_k": top_k,
                             "ensemble": ensemble, "cv_folds": cv_folds, "raw_scale": raw_scale,
                             "kl_weight": kl_weight, "test_fraction": test_fraction, "test_count": test_count,
                             "token_counts": dict(token_counts or {}) or None, "target_tokens": target_tokens,
                             "max_epochs": max_epochs if target_tokens else None, "id_column": id_column},
                    record=record or {}, id_name=str(mixtures.index.name or "run"))
    if predict_csv is not None:
        rec.other = read_mixtures(predict_csv, domains, id_column=id_column)
    files = write_fit(Path(out_dir), rec, surrogates, notes)
    return FitResult(payload, surrogates, files)


def _prior(prior, domains, kl_weight, X, required: bool) -> dict[str, float] | None:
    """The KL prior over ``domains``: given (every domain needs a weight), else the mean swarm mixture."""
    if prior is not None:
        missing = sorted(set(domains) - set(prior))
        if missing:
            raise ConfigError(f"the prior (relative_sizes / --prior) has no weight for domains {missing}")
        extra = sorted(set(prior) - set(domains))
        if extra:
            warnings.warn(f"the prior names domains that are not in the mixtures CSV, ignored: {extra}", SwarmNotice,
                          stacklevel=3)
        total = math.fsum(float(prior[d]) for d in domains)
        if not total > 0:
            raise ConfigError(f"the prior's weights over the domains sum to {total}")
        return {d: float(prior[d]) / total for d in domains}
    if kl_weight > 0 or required:
        mean = X.mean(axis=0)
        return dict(zip(domains, (mean / mean.sum()).tolist()))
    return None


def _mixtures(domains, X):
    from mergemix_dagster.core.mixture import Mixture

    return [Mixture.from_array(domains, row) for row in X]


def _values(targets, objective, scale, X, domains) -> np.ndarray:
    from mergemix_dagster.core.search.objective import objective_values

    return objective_values(targets, objective, scale, X, domains)


def _num(v: float):
    return None if not math.isfinite(v) else float(v)


def _show(cell) -> str:
    return repr(cell) if isinstance(cell, str) else str(cell)
