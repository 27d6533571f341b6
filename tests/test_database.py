"""DuckDB evaluation database: idempotent upserts, MAP queries, simplex checks, cross-process locks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from mergemix_dagster.core.errors import DatabaseLockedError, MergeMixError, SimplexError
from mergemix_dagster.resources import EvaluationDatabase


def _rows(value: float = 0.5, stage: str = "s0") -> pd.DataFrame:
    rows = []
    for cid, alpha in [("c000", {"math": 1.0, "code": 0.0}), ("c001", {"math": 0.25, "code": 0.75})]:
        for task, cap in [("arith", "reasoning"), ("pyfunc", "coding")]:
            rows.append(
                dict(stage=stage, candidate_id=cid, kind="seed", alpha=alpha, task=task, metric="acc",
                     value=value, capability=cap, model_fingerprint=f"fp-{cid}")
            )
    return pd.DataFrame(rows)


def test_fresh_database_has_schema_and_empty_frames(tmp_path):
    db = EvaluationDatabase(path=str(tmp_path / "sub" / "db.duckdb"))
    empty = db.evaluations()
    assert empty.empty and list(empty.columns)[:4] == ["stage", "candidate_id", "kind", "alpha"]
    assert "value" in empty.columns and "evaluated_at" in empty.columns
    assert db.query("SELECT * FROM chosen_mixture").empty
    ro = EvaluationDatabase(path=str(tmp_path / "never-created.duckdb"))
    with ro.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM evaluations").fetchone()[0] == 0
    assert not (tmp_path / "never-created.duckdb").exists()


def test_ensure_schema_is_idempotent_on_any_connection():
    import duckdb

    con = duckdb.connect(":memory:")
    EvaluationDatabase.ensure_schema(con)
    EvaluationDatabase.ensure_schema(con)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"evaluations", "chosen_mixture"} <= tables
    cols = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                            "WHERE table_name = 'evaluations'").fetchall())
    assert cols["alpha"] == "MAP(VARCHAR, DOUBLE)" and cols["evaluated_at"] == "TIMESTAMP"
    con.close()


def test_upsert_is_idempotent_and_updates(tmp_path):
    db = EvaluationDatabase(path=str(tmp_path / "db.duckdb"))
    assert db.upsert_evaluations(_rows(0.5)) == 4
    assert db.upsert_evaluations(_rows(0.5)) == 4
    assert len(db.evaluations()) == 4
    db.upsert_evaluations(_rows(0.9))
    got = db.evaluations("s0")
    assert len(got) == 4 and (got["value"] == 0.9).all()
    assert db.query("SELECT count(*) AS n FROM evaluations")["n"].iloc[0] == 4
    db.upsert_evaluations(_rows(0.1, stage="s1"))
    assert len(db.evaluations()) == 8 and len(db.evaluations("s1")) == 4
    assert (db.evaluations("s0")["value"] == 0.9).all()
    # evaluated_at defaulted to now
    assert (datetime.now() - db.evaluations("s0")["evaluated_at"].max()).total_seconds() < 24 * 3600 + 60


def test_alpha_is_a_queryable_map_and_comes_back_as_dicts(tmp_path):
    db = EvaluationDatabase(path=str(tmp_path / "db.duckdb"))
    db.upsert_evaluations(_rows())
    frame = db.evaluations("s0")
    assert all(type(a) is dict for a in frame["alpha"])
    assert frame.set_index(["candidate_id", "task"]).loc[("c001", "arith"), "alpha"] == {"math": 0.25, "code": 0.75}
    q = db.query(
        "SELECT DISTINCT candidate_id, alpha['math'] AS w FROM evaluations ORDER BY candidate_id"
    )
    assert q["w"].tolist() == [1.0, 0.25]
    assert db.query("SELECT typeof(alpha) AS t FROM evaluations LIMIT 1")["t"].iloc[0] == "MAP(VARCHAR, DOUBLE)"
    q = db.query("SELECT count(*) AS n FROM evaluations WHERE alpha['code'] > ?", [0.5])
    assert q["n"].iloc[0] == 2


def test_nan_value_rejected_naming_the_row(tmp_path):
    db = EvaluationDatabase(path=str(tmp_path / "db.duckdb"))
    rows = _rows()
    rows.loc[2, "value"] = np.nan
    with pytest.raises(MergeMixError, match="row 2.*c001.*arith"):
        db.upsert_evaluations(rows)
    assert db.evaluations().empty  # nothing half-written


def test_chosen_mixture_replaces_and_validates(tmp_path):
    db = EvaluationDatabase(path=str(tmp_path / "db.duckdb"))
    db.upsert_chosen_mixture("s0", {"math": 0.6, "code": 0.4}, 0.7, 0.65, {"chosen_from": "search", "x": float("nan")})
    db.upsert_chosen_mixture("s0", {"math": 0.2, "code": 0.3, "sft": 0.5}, 0.8, None)
    db.upsert_chosen_mixture("s1", {"math": 1.0}, 0.5, 0.5)
    rows = db.query("SELECT * FROM chosen_mixture WHERE stage = 's0' ORDER BY domain")
    assert rows["domain"].tolist() == ["code", "math", "sft"]
    assert rows["weight"].tolist() == [0.3, 0.2, 0.5]
    assert rows["verified_utility"].isna().all() and (rows["predicted_utility"] == 0.8).all()
    assert json.loads(rows["details"].iloc[0]) == {}
    with pytest.raises(SimplexError):
        db.upsert_chosen_mixture("s0", {"math": 0.7, "code": 0.7}, 0.1, 0.1)
    with pytest.raises(SimplexError):
        db.upsert_chosen_mixture("s0", {"math": 1.5, "code": -0.5}, 0.1, 0.1)
    # the rejected writes left the previous choice intact
    assert len(db.query("SELECT * FROM chosen_mixture WHERE stage = 's0'")) == 3
    assert len(db.query("SELECT * FROM chosen_mixture")) == 4


HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS held (x INTEGER)")
print("locked", flush=True)
sys.stdin.readline()
con.close()
"""


def test_locked_by_another_process_raises_database_locked(tmp_path):
    path = tmp_path / "db.duckdb"
    db = EvaluationDatabase(path=str(path), lock_timeout_s=0.5)
    db.upsert_evaluations(_rows())
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        with pytest.raises(DatabaseLockedError, match="db.duckdb"):
            db.upsert_evaluations(_rows(0.7))
        elapsed = time.monotonic() - start
        assert 0.4 < elapsed < 5
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    # once released, writes go through
    db.upsert_evaluations(_rows(0.7))
    assert (db.evaluations()["value"] == 0.7).all()


def test_waits_for_a_short_lock(tmp_path):
    path = tmp_path / "db.duckdb"
    EvaluationDatabase(path=str(path)).query("SELECT 1")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.replace("sys.stdin.readline()", "time.sleep(1.0)"), str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        db = EvaluationDatabase(path=str(path), lock_timeout_s=20)
        assert db.upsert_evaluations(_rows()) == 4
    finally:
        holder.wait(timeout=30)


def test_stderr_round_trips_and_older_files_gain_the_column(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))  # a file from before the stderr column
    con.execute("CREATE TABLE evaluations (stage VARCHAR NOT NULL, candidate_id VARCHAR NOT NULL, kind VARCHAR, "
                "alpha MAP(VARCHAR, DOUBLE), task VARCHAR NOT NULL, metric VARCHAR NOT NULL, value DOUBLE, "
                "capability VARCHAR, model_fingerprint VARCHAR, evaluated_at TIMESTAMP, "
                "PRIMARY KEY (stage, candidate_id, task, metric))")
    con.close()
    db = EvaluationDatabase(path=str(path))
    rows = _rows(0.5)
    rows["stderr"] = [0.01, float("nan"), None, 0.02]
    db.upsert_evaluations(rows)
    got = db.evaluations().sort_values(["candidate_id", "task"])
    assert got["stderr"].iloc[0] == pytest.approx(0.01) and got["stderr"].iloc[3] == pytest.approx(0.02)
    assert got["stderr"].iloc[1:3].isna().all()  # NaN and missing are stored as NULL, never as a number
    db.upsert_evaluations(_rows(0.6))  # rows without stderr (older callers) still insert
    assert db.evaluations()["stderr"].isna().all() and (db.evaluations()["value"] == 0.6).all()


def test_item_values_round_trip_keyed_and_resumable(tmp_path):
    db = EvaluationDatabase(path=str(tmp_path / "db.duckdb"))
    rows = _rows(0.5)
    rows["item_values"] = [(0.0, 1.0), np.array([1.0, 0.0]), None, [0.25, float("nan"), 0.75]]
    assert db.upsert_evaluations(rows) == 4
    got = db.evaluations("s0").sort_values(["candidate_id", "task"]).reset_index(drop=True)
    assert list(got.columns)[-1] == "item_values"
    assert got["item_values"][0] == (0.0, 1.0) and got["item_values"][1] == (1.0, 0.0)
    assert got["item_values"][2] is None
    a, b, c = got["item_values"][3]
    assert (a, c) == (0.25, 0.75) and np.isnan(b)  # a missing item stays missing, in its place
    rows["item_values"] = [(1.0, 1.0), (0.0,), (0.5,), None]
    db.upsert_evaluations(rows)  # the same keys again: replaced, never duplicated
    again = db.evaluations("s0").sort_values(["candidate_id", "task"]).reset_index(drop=True)
    assert len(again) == 4 and again["item_values"][0] == (1.0, 1.0) and again["item_values"][3] is None
    typed = dict(db.query("SELECT column_name, data_type FROM information_schema.columns "
                          "WHERE table_name = 'evaluations'").values.tolist())
    assert typed["item_values"] == "DOUBLE[]"
    assert db.query("SELECT list_avg(item_values) AS m FROM evaluations WHERE candidate_id = 'c000' "
                    "AND task = 'arith'")["m"][0] == 1.0  # queryable with DuckDB's list functions
    bad = _rows(0.5)
    bad["item_values"] = [["x"], None, None, None]
    with pytest.raises(MergeMixError, match="item_values"):
        db.upsert_evaluations(bad)


def test_older_files_open_and_gain_item_values(tmp_path):
    """A file from before ``item_values`` (here also before stderr/fingerprint) opens; old rows read as None."""
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE evaluations (stage VARCHAR NOT NULL, candidate_id VARCHAR NOT NULL, kind VARCHAR, "
                "alpha MAP(VARCHAR, DOUBLE), task VARCHAR NOT NULL, metric VARCHAR NOT NULL, value DOUBLE, "
                "capability VARCHAR, model_fingerprint VARCHAR, evaluated_at TIMESTAMP, "
                "PRIMARY KEY (stage, candidate_id, task, metric))")
    con.execute("INSERT INTO evaluations VALUES ('s0', 'c_old', 'seed', MAP(['math'], [1.0]), 'arith', 'acc', 0.5, "
                "'reasoning', 'fp', TIMESTAMP '2024-01-01 00:00:00')")
    con.close()
    db = EvaluationDatabase(path=str(path))
    old = db.evaluations("s0")
    assert len(old) == 1 and old["item_values"][0] is None and old["value"][0] == 0.5
    rows = _rows(0.5)
    rows["item_values"] = [(0.0, 1.0)] * 4
    db.upsert_evaluations(rows)  # the old row's key is not among these: it stays, without items
    got = db.evaluations("s0")
    assert len(got) == 5 and got["item_values"].isna().sum() == 1
