"""The explorer page of a finished stage (``core/explore``): written by ``chosen_mixture`` beside the stage's
report, and again by ``mergemix explore --stage`` from what the store and DuckDB keep.

Both use the surrogates ``store_final_surrogates`` kept (refitted on every measured mixture: what the chosen
mixture was searched on), the measured table they were fitted on, the stage's bounds and its chosen mixture.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mergemix_dagster.core.errors import MergeMixError
from mergemix_dagster.core.explore.page import ExplorerInputs, write_page
from mergemix_dagster.core.explore.sources import stage_inputs
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.steps.mixture_choice import final_surrogates_key_of
from mergemix_dagster.steps.search_inputs import measured_table, round_history

EXPLORER_FILE = "explorer.html"


def explorer_path(s: Settings, stage: str) -> Path:
    return layout.reports_dir(s.home_path, stage) / EXPLORER_FILE


def _others(payload: dict) -> dict[str, dict]:
    """Mixtures worth marking beside the chosen one: the search's choice when a measured mixture won, and the
    optimum without constraints when the constraints moved it."""
    out, chosen, search = {}, payload.get("weights") or {}, payload.get("search_choice") or {}
    if search and max(abs(w - chosen.get(d, 0.0)) for d, w in search.items()) > 1e-4:  # stored rounded to 1e-6
        out["search choice"] = search
    if payload.get("unconstrained_optimum"):
        out["unconstrained optimum"] = payload["unconstrained_optimum"]
    return out


def _bounds(domains, described: dict) -> tuple[list[float], list[float]]:
    """``MixtureConstraints.describe()`` (only the bounded domains) back to full lower/upper lists."""
    return ([float(described.get(d, [0.0, 1.0])[0]) for d in domains],
            [float(described.get(d, [0.0, 1.0])[1]) for d in domains])


def stage_explorer_inputs(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str,
                          surrogates: CapabilitySurrogates | None = None, table=None,
                          payload: dict | None = None) -> ExplorerInputs:
    """What the stage's page shows; what is not handed over is read back (the store's mixture.json and final
    surrogates, DuckDB's measured table), with a named error when the stage has not finished."""
    if payload is None:
        key = layout.mixture_key(stage)
        if not store.exists(key):
            raise MergeMixError(f"stage {stage!r} has no mixture.json in {s.store_uri}; run `mergemix run --stage {stage}`")
        payload = store.get_json(key)
    if table is None:
        table = measured_table(s, store, database, stage, len(round_history(store, stage)))
    key = final_surrogates_key_of(s, stage, table)
    if surrogates is None:
        if not store.exists(key):
            raise MergeMixError(
                f"stage {stage!r}: no final surrogates at {key} for the mixtures measured now (evaluations changed "
                f"since the choice?); run `mergemix run --stage {stage}` again")
        with tempfile.TemporaryDirectory() as tmp:
            surrogates = CapabilitySurrogates.load(store.get_dir(key, Path(tmp)))
    lower, upper = _bounds(surrogates.domains, payload.get("constraints") or {})
    return stage_inputs(stage, surrogates, table, lower, upper, s.search.lcb_quantile, payload["weights"],
                        payload.get("base") or {}, _others(payload), str(payload.get("objective", "")),
                        store.uri(key))


def write_stage_explorer(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str,
                         out: Path | None = None, **handed) -> Path:
    return write_page(stage_explorer_inputs(s, store, database, stage, **handed), out or explorer_path(s, stage))


__all__ = ["EXPLORER_FILE", "explorer_path", "stage_explorer_inputs", "write_stage_explorer"]
