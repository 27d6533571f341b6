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

The database is an index, not the only copy: every write is also kept in the checkpoint store
(``resources/index.py``, under ``index/<stage>/``), and a missing or corrupt file is rebuilt from there
(``rebuild``; ``mergemix run`` does it before anything else, any connection does it for a missing file).

DuckDB allows one writing process per file. A second process waits up to ``lock_timeout_s`` for the
lock (DuckDB raises ``IOException: ... Could not set lock on file ...``) and then fails with
``DatabaseLockedError`` naming the file. Connections are short-lived, so waits are short.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping

import dagster as dg
import duckdb
import pandas as pd

from mergemix_dagster.core.errors import CorruptDatabaseError, DatabaseLockedError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.resources import index
from mergemix_dagster.resources.evaluation_rows import (
    EVALUATION_COLUMNS,
    item_tuple,
    json_safe,
    opt_float,
    stage_rows,
    utcnow,
)

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


TRAINING_SELECT = (
    "SELECT stage, run_id, study, map_keys(alpha) AS _ak, map_values(alpha) AS _av, seed, tokens, seconds, "
    "final_loss, checkpoint_uri, finished_at FROM training_runs"
)


def _is_lock_error(e: Exception) -> bool:
    text = str(e)
    return "Could not set lock" in text or "Conflicting lock" in text


class EvaluationDatabase(dg.ConfigurableResource):
    """``path``: the DuckDB file; ``lock_timeout_s``: how long to wait for another process's lock;
    ``store_root``: the checkpoint store that keeps a copy of every write (``resources/index.py``) and that a
    missing file is rebuilt from (empty: no copy, as in unit tests of the database alone)."""

    path: str = ".mergemix/mergemix.duckdb"
    lock_timeout_s: float = 30.0
    store_root: str = ""

    # --------------------------------------------------------------- schema
    @staticmethod
    def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
        """Create ``evaluations`` and ``chosen_mixture`` if missing (idempotent; ``connect`` calls it)."""
        conn.execute(SCHEMA)

    def _store(self):
        from mergemix_dagster.resources.store import CheckpointStore

        return CheckpointStore(root=self.store_root) if self.store_root else None

    # -------------------------------------------------------------- connect
    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection with the schema in place, closed on exit.

        A missing file is first rebuilt from the store's copy (when there is one). Retries while another
        process holds the file lock, then raises ``DatabaseLockedError``. ``read_only`` on a file that does
        not exist yields an in-memory database with the (empty) schema, so reads of a fresh project return
        empty results instead of failing.
        """
        path = Path(self.path).expanduser()
        if not path.exists() and self.store_root:
            self.rebuild()
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
            except duckdb.Error as e:
                if not _is_lock_error(e):
                    raise CorruptDatabaseError(
                        f"DuckDB file {path} cannot be opened: {str(e).splitlines()[0]}{self._hint()}"
                    ) from e
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
        except duckdb.IOException as e:  # a cut file opens, then fails when a read reaches the missing bytes
            if _is_lock_error(e):
                raise
            raise CorruptDatabaseError(f"DuckDB file {path} cannot be read: {str(e).splitlines()[0]}{self._hint()}") from e
        finally:
            con.close()

    # --------------------------------------------------- the store's copy
    def _hint(self) -> str:
        store = self._store()
        return " (`mergemix run` rebuilds it from the store)" if store is not None and index.count_records(store) else ""

    def state(self) -> str:
        """``ok``, ``missing`` or ``corrupt`` (``core.preflight.database_state``)."""
        from mergemix_dagster.core.preflight import database_state

        return database_state(self.path)

    def rebuild(self) -> dict[str, int] | None:
        """Rebuild a missing or corrupt file from the store's records; returns the row counts per table, or None
        when there is nothing to do (the file opens) or nothing to rebuild from (no records).

        A corrupt file is kept aside as ``<file>.corrupt-<time>``, not deleted. The new file is written beside
        and renamed into place, under ``<file>.rebuild.lock``, so a concurrent reader never sees half of it.
        """
        from filelock import FileLock

        store = self._store()
        if store is None or self.state() == "ok" or not index.count_records(store):
            return None
        path = Path(self.path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".rebuild.lock"):
            state = self.state()
            if state == "ok":
                return None
            records = index.read_records(store)
            tmp = path.with_name(f".{path.name}.rebuild-{os.getpid()}")
            tmp.unlink(missing_ok=True)
            con = duckdb.connect(str(tmp))
            try:
                self.ensure_schema(con)
                if records[index.EVALUATIONS]:
                    self._insert_evaluations(con, stage_rows(index.evaluation_frame(records[index.EVALUATIONS])))
                for r in records[index.CHOSEN]:
                    con.execute("INSERT INTO chosen_mixture VALUES (?, ?, ?, ?, ?, ?, ?)", [
                        r["stage"], r["domain"], r["weight"], r["predicted_utility"], r["verified_utility"],
                        r["details"], datetime.fromisoformat(r["chosen_at"]) if r.get("chosen_at") else None,
                    ])
                self._write_training_runs(con, records[index.TRAINING_RUNS])
            finally:
                con.close()
            wal = path.with_name(path.name + ".wal")
            if state == "corrupt":
                stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
                path.replace(path.with_name(f"{path.name}.corrupt-{stamp}"))
                if wal.exists():
                    wal.replace(path.with_name(f"{wal.name}.corrupt-{stamp}"))
            else:
                wal.unlink(missing_ok=True)  # a log of the deleted file must not be replayed into the new one
            tmp.replace(path)
        return {k: len(v) for k, v in records.items()}

    def copy_to_store(self) -> int:
        """Write the store's copy of every row when the store has none (a home made before the copy existed);
        returns how many records were written."""
        store = self._store()
        if store is None or index.count_records(store) or self.state() != "ok":
            return 0
        with self.connect() as con:  # held until the records are written: no write of another process in between
            if index.count_records(store):
                return 0
            self._flush_pending(con)
            records = index.evaluation_records(self._select_evaluations(con, "", []))
            for stage in [r[0] for r in con.execute("SELECT DISTINCT stage FROM chosen_mixture").fetchall()]:
                rows = con.execute("SELECT * FROM chosen_mixture WHERE stage = ?", [stage]).fetchall()
                key, record = index.chosen_record(stage, rows)
                records[key] = record
            runs = con.execute(TRAINING_SELECT).df()
            for r in runs.to_dict("records"):
                key, record = index.training_run_record(r | {"alpha": dict(zip(map(str, r.pop("_ak")), map(float, r.pop("_av"))))})
                records[key] = record
            for key, record in records.items():
                store.put_json(key, record, overwrite=True)
        return len(records)

    # ---------------------------------------------------------- evaluations
    @staticmethod
    def _insert_evaluations(con: duckdb.DuckDBPyConnection, staged: pd.DataFrame) -> None:
        """Replace the rows of ``staged``'s keys (inside the caller's transaction); ``_mm_rows`` stays registered."""
        con.register("_mm_rows", staged)
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

    def upsert_evaluations(self, rows: pd.DataFrame) -> int:
        """Insert or replace rows keyed by (stage, candidate_id, task, metric); returns the row count.

        ``alpha`` holds ``{domain: weight}`` dicts; ``evaluated_at`` is optional (default: now, UTC);
        ``item_values`` (optional) a sequence of per-item values or None per row.
        Within ``rows`` a repeated key keeps its last occurrence. A NaN ``value`` is refused.
        The store's record of each candidate written is replaced before the rows are committed.
        """
        if rows is None or len(rows) == 0:
            return 0
        staged = stage_rows(rows)
        store = self._store()
        with self.connect() as con:
            try:
                con.execute("BEGIN TRANSACTION")
                self._insert_evaluations(con, staged)
                if store is not None:
                    written = self._select_evaluations(con, "WHERE EXISTS (SELECT 1 FROM _mm_rows r WHERE "
                                                       "r.stage = e.stage AND r.candidate_id = e.candidate_id)", [])
                    for key, record in index.evaluation_records(written).items():
                        store.put_json(key, record, overwrite=True)
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("_mm_rows")
        return len(staged)

    @staticmethod
    def _select_evaluations(con: duckdb.DuckDBPyConnection, where: str, params: list) -> pd.DataFrame:
        sql = (
            "SELECT stage, candidate_id, kind, map_keys(alpha) AS _ak, map_values(alpha) AS _av, task, metric, "
            "value, capability, model_fingerprint, evaluated_at, evaluation_fingerprint, stderr, item_values "
            f"FROM evaluations e {where} ORDER BY stage, candidate_id, task, metric"
        )
        df = con.execute(sql, params).df()
        alphas = [
            {} if k is None else {str(a): float(b) for a, b in zip(list(k), list(v))}
            for k, v in zip(df["_ak"], df["_av"])
        ]
        df = df.drop(columns=["_ak", "_av"])
        df.insert(3, "alpha", pd.Series(alphas, index=df.index, dtype=object))
        df["item_values"] = pd.Series([item_tuple(v) for v in df["item_values"]], index=df.index, dtype=object)
        return df[EVALUATION_COLUMNS].reset_index(drop=True)

    def evaluations(self, stage: str | None = None) -> pd.DataFrame:
        """Rows of ``evaluations`` (of one stage, or all), ``alpha`` as plain ``{domain: weight}`` dicts,
        ``item_values`` as tuples of floats (None where a row has none)."""
        with self.connect(read_only=False) as con:
            if stage is None:
                return self._select_evaluations(con, "", [])
            return self._select_evaluations(con, "WHERE stage = ?", [stage])

    # -------------------------------------------------------- chosen mixture
    def upsert_chosen_mixture(
        self,
        stage: str,
        weights: Mapping[str, float],
        predicted_utility: float,
        verified_utility: float | None,
        details: Mapping | None = None,
    ) -> None:
        """Replace the chosen mixture of ``stage`` (one transaction, the store's record first). Weights must be
        on the simplex."""
        mixture = Mixture.from_dict(dict(weights))
        now = utcnow()
        blob = json.dumps(json_safe(dict(details or {})), sort_keys=True)
        rows = [
            (str(stage), d, float(w), opt_float(predicted_utility), opt_float(verified_utility), blob, now)
            for d, w in zip(mixture.domains, mixture.weights)
        ]
        store = self._store()
        with self.connect() as con:
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute("DELETE FROM chosen_mixture WHERE stage = ?", [str(stage)])
                con.executemany("INSERT INTO chosen_mixture VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                if store is not None:
                    store.put_json(*index.chosen_record(str(stage), rows), overwrite=True)
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
        """Insert or replace one finished training run (keyed by its content id); the store's record first.

        The checkpoint is already stored when this runs, so a rerun would reuse it and never record the run
        again: when the file stays locked past ``lock_timeout_s`` the row is kept in ``<db>.pending/`` and
        written by the next ``record_training_run`` or ``training_runs`` instead of being lost.
        """
        row = {
            "stage": stage, "run_id": run_id, "study": study, "alpha": {str(k): float(v) for k, v in alpha.items()},
            "seed": int(seed), "tokens": int(tokens), "seconds": float(seconds), "final_loss": opt_float(final_loss),
            "checkpoint_uri": checkpoint_uri, "finished_at": utcnow().isoformat(),
        }
        store = self._store()
        if store is not None:
            store.put_json(*index.training_run_record(row), overwrite=True)
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
        return Path(self.path).expanduser().with_name(Path(self.path).name + ".pending")

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

    def training_runs(self, stage: str | None = None) -> pd.DataFrame:
        """Rows of ``training_runs`` of ``stage`` (or all), ``alpha`` as plain dicts (pending rows written first)."""
        if self._pending_dir().is_dir():
            with self.connect() as con:
                self._flush_pending(con)
        where = "WHERE stage = ?" if stage is not None else ""
        df = self.query(f"{TRAINING_SELECT} {where} ORDER BY stage, run_id", [stage] if stage is not None else [])
        df.insert(3, "alpha", [dict(zip(map(str, k), map(float, v))) for k, v in zip(df["_ak"], df["_av"])])
        return df.drop(columns=["_ak", "_av"])

    # ---------------------------------------------------------------- query
    def query(self, sql: str, params: Any = None) -> pd.DataFrame:
        """Run any SQL (``?`` placeholders) and return a DataFrame; the schema exists beforehand."""
        with self.connect() as con:
            return con.execute(sql, params or []).df()
