"""The store's copy of what DuckDB holds, so the database is an index that can be rebuilt, not the only copy.

Every write of ``EvaluationDatabase`` (an evaluation, a chosen mixture, a training run) is also written to the
checkpoint store as a small JSON record under ``index/<stage>/`` (keys in ``layout``), before the database
commits it: one record per candidate (all of its rows), one per stage's chosen mixture, one per training run.
A later write replaces the record, as it replaces the rows. A missing or corrupt DuckDB file is rebuilt from
these records (``EvaluationDatabase.rebuild``): the same rows, timestamps and per-item values.

Values are JSON: ``alpha`` a ``{domain: weight}`` object, ``item_values`` a list (``null`` for a missing
item), timestamps ISO strings (UTC, no zone), NaN as ``null``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from mergemix_dagster.resources import layout
from mergemix_dagster.resources.evaluation_rows import json_safe

EVALUATIONS, CHOSEN, TRAINING_RUNS = "evaluations", "chosen_mixture", "training_runs"


def evaluation_records(frame: pd.DataFrame) -> dict[str, dict]:
    """store key -> record of every (stage, candidate) in ``frame`` (all of that candidate's rows)."""
    records: dict[str, dict] = {}
    for (stage, candidate), rows in frame.groupby(["stage", "candidate_id"], sort=True):
        out = [json_safe({k: (None if v is None else v) for k, v in row.items()}) for row in rows.to_dict("records")]
        records[layout.index_evaluations_key(str(stage), str(candidate))] = {
            "table": EVALUATIONS, "stage": str(stage), "candidate_id": str(candidate), "rows": out,
        }
    return records


def chosen_record(stage: str, rows: Iterable[tuple]) -> tuple[str, dict]:
    """(store key, record) of one stage's chosen mixture, from the rows ``upsert_chosen_mixture`` inserts."""
    names = ["stage", "domain", "weight", "predicted_utility", "verified_utility", "details", "chosen_at"]
    return layout.index_chosen_key(stage), {
        "table": CHOSEN, "stage": stage, "rows": [json_safe(dict(zip(names, r))) for r in rows],
    }


def training_run_record(row: Mapping) -> tuple[str, dict]:
    """(store key, record) of one training run (the row ``record_training_run`` writes)."""
    return layout.index_training_run_key(row["stage"], row["run_id"]), {"table": TRAINING_RUNS, **json_safe(dict(row))}


def read_records(store) -> dict[str, list[dict]]:
    """Every record under ``index/``, by table (``evaluations`` holds rows, not records)."""
    out: dict[str, list[dict]] = {EVALUATIONS: [], CHOSEN: [], TRAINING_RUNS: []}
    for key in store.list_keys(layout.INDEX_PREFIX):
        if not key.endswith(".json"):
            continue
        record = store.get_json(key)
        table = record.get("table")
        if table == EVALUATIONS:
            out[EVALUATIONS] += record["rows"]
        elif table == CHOSEN:
            out[CHOSEN] += record["rows"]
        elif table == TRAINING_RUNS:
            out[TRAINING_RUNS].append(record)
    return out


def count_records(store) -> int:
    """How many index records the store holds (0: nothing to rebuild from)."""
    return sum(1 for k in store.list_keys(layout.INDEX_PREFIX) if k.endswith(".json"))


def evaluation_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows read back from records as a frame ``EvaluationDatabase.upsert_evaluations`` accepts."""
    frame = pd.DataFrame(rows)
    if "item_values" in frame.columns:
        frame["item_values"] = pd.Series(
            [None if v is None else [float("nan") if x is None else float(x) for x in v] for v in frame["item_values"]],
            index=frame.index, dtype=object,
        )
    return frame


def copy_summary(store, database_path: str) -> dict:
    """What ``mergemix check`` says of the database: ``records`` (how many the store holds) and, when the file
    is missing and there are none, ``results`` (stages with a chosen mixture in the store, now unreadable)."""
    records = count_records(store)
    if records or Path(database_path).expanduser().exists():
        return {"records": records, "results": []}
    keys = store.list_keys(layout.STAGES_PREFIX)
    return {"records": 0, "results": sorted({k.split("/")[1] for k in keys if k.count("/") == 2 and k.endswith("/mixture.json")})}
