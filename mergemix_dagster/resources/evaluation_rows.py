"""Evaluation rows as DuckDB takes them and as JSON keeps them: the columns, the checks a row passes before it is
written, and the conversions of per-item values, optional floats and timestamps (``database`` and ``index``)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np
import pandas as pd

from mergemix_dagster.core.errors import MergeMixError

EVALUATION_COLUMNS = [
    "stage",
    "candidate_id",
    "kind",
    "alpha",
    "task",
    "metric",
    "value",
    "capability",
    "model_fingerprint",
    "evaluated_at",
    "evaluation_fingerprint",
    "stderr",
    "item_values",
]
CHOSEN_COLUMNS = ["stage", "domain", "weight", "predicted_utility", "verified_utility", "details", "chosen_at"]
KEY = ["stage", "candidate_id", "task", "metric"]
OPTIONAL = ("evaluated_at", "evaluation_fingerprint", "stderr", "item_values")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def json_safe(obj: Any) -> Any:
    """JSON-serializable copy with NaN/inf as null (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (pd.Timestamp, datetime)):
        return obj.isoformat()
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if pd.isna(obj):
        return None
    return str(obj)


def item_list(i: int, v: Any) -> list[float] | None:
    """A row's per-item values as a list of floats (NaN kept: a missing item), or None for none given."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    try:
        values = [float(x) for x in v]
    except (TypeError, ValueError) as e:
        raise MergeMixError(f"evaluation row {i}: item_values must be a sequence of numbers, got {v!r}") from e
    return values or None


def item_tuple(v: Any) -> tuple[float, ...] | None:
    """A stored ``item_values`` cell as a tuple of floats (NULL elements as NaN), or None for a NULL cell."""
    if v is None or (np.ndim(v) == 0 and pd.isna(v)):
        return None
    if isinstance(v, np.ma.MaskedArray):  # DuckDB hands a list with NULL elements back masked
        v = v.astype(float).filled(np.nan)
    return tuple(float("nan") if x is None or pd.isna(x) else float(x) for x in v)


def opt_float(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def stage_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows checked and shaped as ``EvaluationDatabase`` takes them (see ``upsert_evaluations``)."""
    missing = [c for c in EVALUATION_COLUMNS if c not in rows.columns and c not in OPTIONAL]
    if missing:
        raise MergeMixError(f"evaluation rows lack columns {missing}; have {list(rows.columns)}")
    df = rows.reset_index(drop=True).copy()
    for col in KEY:
        if df[col].isna().any():
            bad = int(np.where(df[col].isna())[0][0])
            raise MergeMixError(f"evaluation row {bad} has no {col}: {df.iloc[bad].to_dict()}")
    values = pd.to_numeric(df["value"], errors="coerce")
    if values.isna().any():
        bad = int(np.where(values.isna())[0][0])
        r = df.iloc[bad]
        raise MergeMixError(
            f"evaluation row {bad} (stage={r['stage']!r}, candidate={r['candidate_id']!r}, task={r['task']!r}, "
            f"metric={r['metric']!r}) has a NaN or non-numeric value: {r['value']!r}"
        )
    df["value"] = values.astype(float)
    keys, vals = [], []
    for i, a in enumerate(df["alpha"]):
        try:
            d = dict(a)
            keys.append([str(k) for k in d])
            vals.append([float(v) for v in d.values()])
        except (TypeError, ValueError) as e:
            raise MergeMixError(f"evaluation row {i}: alpha must be a {{domain: weight}} mapping, got {a!r}") from e
    df["alpha_keys"] = keys
    df["alpha_values"] = vals
    if "evaluated_at" not in df.columns:
        df["evaluated_at"] = utcnow()
    ts = pd.to_datetime(df["evaluated_at"], errors="coerce", utc=True, format="mixed").dt.tz_convert(None)
    df["evaluated_at"] = ts.fillna(pd.Timestamp(utcnow()))
    if "evaluation_fingerprint" not in df.columns:
        df["evaluation_fingerprint"] = None
    df["stderr"] = [opt_float(v) for v in df["stderr"]] if "stderr" in df.columns else None
    items = df["item_values"] if "item_values" in df.columns else [None] * len(df)
    df["item_values"] = pd.Series([item_list(i, v) for i, v in enumerate(items)], index=df.index, dtype=object)
    for col in ["stage", "candidate_id", "kind", "task", "metric", "capability", "model_fingerprint", "evaluation_fingerprint"]:
        df[col] = df[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    df = df.drop_duplicates(KEY, keep="last")
    return df[
        ["stage", "candidate_id", "kind", "alpha_keys", "alpha_values", "task", "metric", "value",
         "capability", "model_fingerprint", "evaluated_at", "evaluation_fingerprint", "stderr", "item_values"]
    ]

