"""The DuckDB evaluation database: every benchmark score of every candidate, and the chosen mixtures.

Tables
------
``evaluations(stage, candidate_id, kind, alpha MAP(VARCHAR, DOUBLE), task, metric, value, capability,
model_fingerprint, evaluated_at, evaluation_fingerprint, stderr, item_values DOUBLE[])``, primary key
``(stage, candidate_id, task, metric)``. ``item_values`` holds the benchmark's per-item metric values in
document order (their mean is ``value``), so two candidates can be compared item by item
(``core.evaluation.paired``); a missing (NaN) item is a NULL element, read back as NaN. The column is NULL
for rows written without items (older files, non-mean metrics).
Columns added later are added to older files by ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``.
``alpha`` is a DuckDB ``MAP``; in DuckDB ≥ 1.1 (this project pins 2.0) subscripting returns the value
itself, not a one-element list, and ``NULL`` for a domain that is not in the map::

    SELECT candidate_id, alpha['math'] AS w_math, value FROM evaluations WHERE task = 'arith'

(``map_keys(alpha)`` / ``map_values(alpha)`` / ``map_extract_value(alpha, 'math')`` also work.)

``chosen_mixture(stage, domain, weight, predicted_utility, verified_utility, details JSON, chosen_at)``,
primary key ``(stage, domain)``: one row per domain of the chosen mixture of each stage.

``training_runs(stage, run_id, study, alpha MAP(VARCHAR, DOUBLE), seed, tokens, seconds, final_loss,
checkpoint_uri, finished_at)``, primary key ``(stage, run_id)``: every model this project trained (experts,
reference runs of the validation study), so search costs are computed from what actually ran.

DuckDB allows one writing process per file. A second process waits up to ``lock_timeout_s`` for the
lock (DuckDB raises ``IOException: ... Could not set lock on file ...``) and then fails with
``DatabaseLockedError`` naming the file. Connections are short-lived, so waits are short.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

from mergemix_dagster.core.errors import CorruptDatabaseError, DatabaseLockedError, MergeMixError
from mergemix_dagster.core.mixture import Mixture

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
_KEY = ["stage", "candidate_id", "task", "metric"]
_OPTIONAL = ("evaluated_at", "evaluation_fingerprint", "stderr", "item_values")

SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    stage VARCHAR NOT NULL,
    candidate_id VARCHAR NOT NULL,
    kind VARCHAR,
    alpha MAP(VARCHAR, DOUBLE),
    task VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    value DOUBLE,
    capability VARCHAR,
    model_fingerprint VARCHAR,
    evaluated_at TIMESTAMP,
    evaluation_fingerprint VARCHAR,
    PRIMARY KEY (stage, candidate_id, task, metric)
);
CREATE TABLE IF NOT EXISTS chosen_mixture (
    stage VARCHAR NOT NULL,
    domain VARCHAR NOT NULL,
    weight DOUBLE,
    predicted_utility DOUBLE,
    verified_utility DOUBLE,
    details JSON,
    chosen_at TIMESTAMP,
    PRIMARY KEY (stage, domain)
);
CREATE TABLE IF NOT EXISTS training_runs (
    stage VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    study VARCHAR,
    alpha MAP(VARCHAR, DOUBLE),
    seed INTEGER,
    tokens BIGINT,
    seconds DOUBLE,
    final_loss DOUBLE,
    checkpoint_uri VARCHAR,
    finished_at TIMESTAMP,
    PRIMARY KEY (stage, run_id)
);
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS evaluation_fingerprint VARCHAR;
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS stderr DOUBLE;
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS item_values DOUBLE[];
"""


def _is_lock_error(e: Exception) -> bool:
    text = str(e)
    return "Could not set lock" in text or "Conflicting lock" in text


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _json_safe(obj: Any) -> Any:
    """JSON-serializable copy with NaN/inf as null (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def _item_list(i: int, v: Any) -> list[float] | None:
    """A row's per-item values as a list of floats (NaN kept: a missing item), or None for none given."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    try:
        values = [float(x) for x in v]
    except (TypeError, ValueError) as e:
        raise MergeMixError(f"evaluation row {i}: item_values must be a sequence of numbers, got {v!r}") from e
    return values or None


def _item_tuple(v: Any) -> tuple[float, ...] | None:
    """A stored ``item_values`` cell as a tuple of floats (NULL elements as NaN), or None for a NULL cell."""
    if v is None or (np.ndim(v) == 0 and pd.isna(v)):
        return None
    if isinstance(v, np.ma.MaskedArray):  # DuckDB hands a list with NULL elements back masked
        v = v.astype(float).filled(np.nan)
    return tuple(float("nan") if x is None or pd.isna(x) else float(x) for x in v)


def _opt_float(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


class EvaluationDatabase(dg.ConfigurableResource):
    """``path``: the DuckDB file; ``lock_timeout_s``: how long to wait for another process's lock."""

    path: str = ".mergemix/mergemix.duckdb"
    lock_timeout_s: float = 30.0

    # --------------------------------------------------------------- schema
    @staticmethod
    def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
        """Create ``evaluations`` and ``chosen_mixture`` if missing (idempotent; ``connect`` calls it)."""
        conn.execute(SCHEMA)

    # -------------------------------------------------------------- connect
    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection with the schema in place, closed on exit.

        Retries while another process holds the file lock, then raises ``DatabaseLockedError``.
        ``read_only`` on a file that does not exist yet yields an in-memory database with the (empty)
        schema, so reads of a fresh project return empty results instead of failing.
        """
        path = Path(self.path).expanduser()
        if read_only and not path.exists():
            con = duckdb.connect(":memory:")
            try:
                self.ensure_schema(con)
                yield con
            finally:
                con.close()
            return
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + max(0.0, float(self.lock_timeout_s))
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.IOException as e:
                if not _is_lock_error(e):
                    raise CorruptDatabaseError(f"DuckDB file {path} cannot be opened: {str(e).splitlines()[0]}") from e
                now = time.monotonic()
                if now >= deadline:
                    raise DatabaseLockedError(
                        f"DuckDB file {path} is locked by another process (waited {self.lock_timeout_s:g}s): {e}"
                    ) from e
                time.sleep(min(delay * (1 + random.random()), deadline - now))
                delay = min(delay * 2, 1.0)
        try:
            if not read_only:
                self.ensure_schema(con)
            yield con
        finally:
            con.close()

    # ---------------------------------------------------------- evaluations
    def upsert_evaluations(self, rows: pd.DataFrame) -> int:
        """Insert or replace rows keyed by (stage, candidate_id, task, metric); returns the row count.

        ``alpha`` holds ``{domain: weight}`` dicts; ``evaluated_at`` is optional (default: now, UTC);
        ``item_values`` (optional) a sequence of per-item values or None per row.
        Within ``rows`` a repeated key keeps its last occurrence. A NaN ``value`` is refused.
        """
        if rows is None or len(rows) == 0:
            return 0
        missing = [c for c in EVALUATION_COLUMNS if c not in rows.columns and c not in _OPTIONAL]
        if missing:
            raise MergeMixError(f"evaluation rows lack columns {missing}; have {list(rows.columns)}")
        df = rows.reset_index(drop=True).copy()
        for col in _KEY:
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
            df["evaluated_at"] = _utcnow()
        ts = pd.to_datetime(df["evaluated_at"], errors="coerce", utc=True).dt.tz_convert(None)
        df["evaluated_at"] = ts.fillna(pd.Timestamp(_utcnow()))
        if "evaluation_fingerprint" not in df.columns:
            df["evaluation_fingerprint"] = None
        df["stderr"] = [_opt_float(v) for v in df["stderr"]] if "stderr" in df.columns else None
        items = df["item_values"] if "item_values" in df.columns else [None] * len(df)
        df["item_values"] = pd.Series([_item_list(i, v) for i, v in enumerate(items)], index=df.index, dtype=object)
        for col in ["stage", "candidate_id", "kind", "task", "metric", "capability", "model_fingerprint", "evaluation_fingerprint"]:
            df[col] = df[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
        df = df.drop_duplicates(_KEY, keep="last")
        staged = df[
            ["stage", "candidate_id", "kind", "alpha_keys", "alpha_values", "task", "metric", "value",
             "capability", "model_fingerprint", "evaluated_at", "evaluation_fingerprint", "stderr", "item_values"]
        ]
        with self.connect() as con:
            con.register("_mm_rows", staged)
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute(
                    "DELETE FROM evaluations e USING _mm_rows r WHERE e.stage = r.stage AND "
                    "e.candidate_id = r.candidate_id AND e.task = r.task AND e.metric = r.metric"
                )
                con.execute(  # columns named: older files gained theirs by ALTER, in their own order
                    f"INSERT INTO evaluations ({', '.join(EVALUATION_COLUMNS)}) SELECT stage, candidate_id, kind, "
                    "MAP(CAST(alpha_keys AS VARCHAR[]), CAST(alpha_values AS DOUBLE[])), task, metric, "
                    "value, capability, model_fingerprint, CAST(evaluated_at AS TIMESTAMP), evaluation_fingerprint, "
                    "CAST(stderr AS DOUBLE), CAST(item_values AS DOUBLE[]) FROM _mm_rows"
                )
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("_mm_rows")
        return len(staged)

    def evaluations(self, stage: str | None = None) -> pd.DataFrame:
        """Rows of ``evaluations`` (of one stage, or all), ``alpha`` as plain ``{domain: weight}`` dicts,
        ``item_values`` as tuples of floats (None where a row has none)."""
        sql = (
            "SELECT stage, candidate_id, kind, map_keys(alpha) AS _ak, map_values(alpha) AS _av, task, metric, "
            "value, capability, model_fingerprint, evaluated_at, evaluation_fingerprint, stderr, item_values "
            "FROM evaluations"
        )
        params: list = []
        if stage is not None:
            sql += " WHERE stage = ?"
            params.append(stage)
        sql += " ORDER BY stage, candidate_id, task, metric"
        with self.connect(read_only=False) as con:
            df = con.execute(sql, params).df()
        alphas = [
            {} if k is None else {str(a): float(b) for a, b in zip(list(k), list(v))}
            for k, v in zip(df["_ak"], df["_av"])
        ]
        df = df.drop(columns=["_ak", "_av"])
        df.insert(3, "alpha", pd.Series(alphas, index=df.index, dtype=object))
        df["item_values"] = pd.Series([_item_tuple(v) for v in df["item_values"]], index=df.index, dtype=object)
        return df[EVALUATION_COLUMNS].reset_index(drop=True)

    # -------------------------------------------------------- chosen mixture
    def upsert_chosen_mixture(
        self,
        stage: str,
        weights: Mapping[str, float],
        predicted_utility: float,
        verified_utility: float | None,
        details: Mapping | None = None,
    ) -> None:
        """Replace the chosen mixture of ``stage`` (one transaction). Weights must be on the simplex."""
        mixture = Mixture.from_dict(dict(weights))
        now = _utcnow()
        blob = json.dumps(_json_safe(dict(details or {})), sort_keys=True)
        rows = [
            (str(stage), d, float(w), _opt_float(predicted_utility), _opt_float(verified_utility), blob, now)
            for d, w in zip(mixture.domains, mixture.weights)
        ]
        with self.connect() as con:
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute("DELETE FROM chosen_mixture WHERE stage = ?", [str(stage)])
                con.executemany("INSERT INTO chosen_mixture VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise

    def chosen_mixture(self, stage: str) -> dict[str, float] | None:
        """``{domain: weight}`` of the chosen mixture of ``stage``, or None."""
        df = self.query("SELECT domain, weight FROM chosen_mixture WHERE stage = ? ORDER BY domain", [stage])
        return None if df.empty else dict(zip(df["domain"], df["weight"].astype(float)))

    # --------------------------------------------------------- training runs
    def record_training_run(
        self,
        stage: str,
        run_id: str,
        study: str,
        alpha: Mapping[str, float],
        seed: int,
        tokens: int,
        seconds: float,
        final_loss: float,
        checkpoint_uri: str,
    ) -> None:
        """Insert or replace one finished training run (keyed by its content id).

        The checkpoint is already stored when this runs, so a rerun would reuse it and never record the run
        again: when the file stays locked past ``lock_timeout_s`` the row is kept in ``<db>.pending/`` and
        written by the next ``record_training_run`` or ``training_runs`` instead of being lost.
        """
        row = {
            "stage": stage, "run_id": run_id, "study": study, "alpha": {str(k): float(v) for k, v in alpha.items()},
            "seed": int(seed), "tokens": int(tokens), "seconds": float(seconds), "final_loss": _opt_float(final_loss),
            "checkpoint_uri": checkpoint_uri, "finished_at": _utcnow().isoformat(),
        }
        try:
            with self.connect() as con:
                self._write_training_runs(con, [row])
                self._flush_pending(con)
        except DatabaseLockedError:
            folder = self._pending_dir()
            folder.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(f"{stage}\0{run_id}".encode()).hexdigest()[:24]
            tmp = folder / f".{name}.tmp"
            tmp.write_text(json.dumps(row))
            tmp.replace(folder / f"{name}.json")

    def _pending_dir(self) -> Path:
        path = Path(self.path).expanduser()
        return path.with_name(path.name + ".pending")

    @staticmethod
    def _write_training_runs(con: duckdb.DuckDBPyConnection, rows: list[dict]) -> None:
        for r in rows:
            con.execute("DELETE FROM training_runs WHERE stage = ? AND run_id = ?", [r["stage"], r["run_id"]])
            con.execute(
                "INSERT INTO training_runs VALUES (?, ?, ?, MAP(CAST(? AS VARCHAR[]), CAST(? AS DOUBLE[])), ?, ?, ?, ?, ?, ?)",
                [r["stage"], r["run_id"], r["study"], list(r["alpha"]), list(r["alpha"].values()), r["seed"], r["tokens"],
                 r["seconds"], r["final_loss"], r["checkpoint_uri"], datetime.fromisoformat(r["finished_at"])],
            )

    def _flush_pending(self, con: duckdb.DuckDBPyConnection) -> int:
        """Write the training runs kept aside while the file was locked; returns how many."""
        folder = self._pending_dir()
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        for f in files:
            self._write_training_runs(con, [json.loads(f.read_text())])
            f.unlink()
        return len(files)

    def training_runs(self, stage: str) -> pd.DataFrame:
        """Rows of ``training_runs`` of ``stage``, ``alpha`` as plain dicts (pending rows written first)."""
        if self._pending_dir().is_dir():
            with self.connect() as con:
                self._flush_pending(con)
        df = self.query(
            "SELECT stage, run_id, study, map_keys(alpha) AS _ak, map_values(alpha) AS _av, seed, tokens, seconds, "
            "final_loss, checkpoint_uri, finished_at FROM training_runs WHERE stage = ? ORDER BY run_id",
            [stage],
        )
        df.insert(3, "alpha", [dict(zip(map(str, k), map(float, v))) for k, v in zip(df["_ak"], df["_av"])])
        return df.drop(columns=["_ak", "_av"])

    # ---------------------------------------------------------------- query
    def query(self, sql: str, params: Any = None) -> pd.DataFrame:
        """Run any SQL (``?`` placeholders) and return a DataFrame; the schema exists beforehand."""
        with self.connect() as con:
            return con.execute(sql, params or []).df()
