"""Faults of issue 19 where results live: DuckDB is an index rebuilt from the store, a deleted checkpoint is made
again, and a stage name is checked where it enters (CLI, sensor, ``stage add``), with ``stage remove``.

The pipeline tests run ``mergemix run`` on the smoke config in its own home (a subprocess, as a user would), then
damage that home; docs/reliability.md lists the same cases. tests/test_faults.py holds the faults of issue 10.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from mergemix_dagster.core.errors import CorruptDatabaseError, DatabaseMissingError
from mergemix_dagster.core.preflight import check_home
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase

BIN = Path(sys.executable).parent


def _rows(candidate: str, value: float) -> pd.DataFrame:
    return pd.DataFrame([{
        "stage": "s0", "candidate_id": candidate, "kind": "seed", "alpha": {"math": 0.25, "code": 0.75},
        "task": t, "metric": "acc", "value": value, "capability": "math", "model_fingerprint": "f" * 16,
        "evaluation_fingerprint": "e" * 16, "stderr": 0.01, "item_values": [1.0, float("nan"), 0.0],
    } for t in ("arith", "facts")])


def _tables(db: EvaluationDatabase) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return (db.evaluations(), db.query("SELECT * FROM chosen_mixture ORDER BY stage, domain"), db.training_runs())


def _assert_same(a, b) -> None:
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x, y)


# ------------------------------------------------------------------------- DuckDB is an index (unit)


def test_every_database_write_is_kept_in_the_store_and_a_deleted_file_is_rebuilt(tmp_path):
    path = tmp_path / "home" / "mergemix.duckdb"
    db = EvaluationDatabase(path=str(path), store_root=str(tmp_path / "store"))
    db.upsert_evaluations(_rows("c1", 0.5))
    db.upsert_evaluations(_rows("c2", 0.25))
    db.upsert_evaluations(_rows("c1", 0.75))  # a rescore replaces the candidate's record, as it replaces its rows
    db.upsert_chosen_mixture("s0", {"math": 0.4, "code": 0.6}, 0.3, float("nan"), {"why": "test", "x": float("inf")})
    db.record_training_run("s0", "expert:math:v1", "expert", {"math": 1.0}, 0, 1000, 1.5, 2.0, "/store/x")
    before = _tables(db)
    assert sorted(Path(tmp_path / "store" / "index" / "s0").rglob("*.json")) != []
    path.unlink()
    after = _tables(db)  # any read rebuilds a missing file
    _assert_same(before, after)
    assert after[0]["value"].tolist() == [0.75, 0.75, 0.25, 0.25]
    assert pd.isna(after[0]["item_values"][0][1])  # a missing item stays missing
    assert db.rebuild() is None  # nothing to do: the file opens


def test_a_corrupt_database_is_kept_aside_and_rebuilt_or_refused_by_name(tmp_path):
    path = tmp_path / "mergemix.duckdb"
    db = EvaluationDatabase(path=str(path), store_root=str(tmp_path / "store"))
    db.upsert_evaluations(_rows("c1", 0.5))
    db.query("CHECKPOINT")
    before = _tables(db)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a cut copy: opens, then fails on a read
    assert db.state() == "corrupt"
    with pytest.raises(CorruptDatabaseError, match="mergemix run` rebuilds it from the store"):
        db.evaluations()
    counts = db.rebuild()
    assert counts == {"evaluations": 2, "chosen_mixture": 0, "training_runs": 0}
    _assert_same(before, _tables(db))
    assert len(list(tmp_path.glob("mergemix.duckdb.corrupt-*"))) == 1  # kept, not deleted
    # without a copy in the store a corrupt file is refused by name; a missing one with results in the store too
    home = tmp_path / "h"
    (home / "x").mkdir(parents=True)
    bad = home / "bad.duckdb"
    bad.write_bytes(b"not a database" * 100)
    assert [type(e) for e in check_home(home, str(bad), {"records": 0})[0]] == [CorruptDatabaseError]
    assert check_home(home, str(bad), {"records": 3})[1][0].endswith("rebuilds it from the 3 records in the store")
    errors, _ = check_home(home, str(home / "gone.duckdb"), {"records": 0, "results": ["s0"]})
    assert [type(e) for e in errors] == [DatabaseMissingError] and "stages ['s0'] have results" in str(errors[0])


def test_a_home_made_before_the_copy_gets_it(tmp_path):
    path = tmp_path / "mergemix.duckdb"
    EvaluationDatabase(path=str(path)).upsert_evaluations(_rows("c1", 0.5))  # no store: an older home
    EvaluationDatabase(path=str(path)).upsert_chosen_mixture("s0", {"math": 0.4, "code": 0.6}, 0.3, 0.2)
    db = EvaluationDatabase(path=str(path), store_root=str(tmp_path / "store"))
    before = _tables(db)
    assert db.copy_to_store() == 2  # one record per candidate, one per chosen mixture
    assert db.copy_to_store() == 0  # once
    path.unlink()
    _assert_same(before, _tables(db))


# ------------------------------------------------------------------------ a finished smoke home


def _mergemix(home: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"MERGEMIX_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([BIN / "mergemix", "--config", str(config), *args], capture_output=True, text=True,
                          env=env, timeout=900)


def _mixture_lines(stdout: str) -> dict[str, str]:
    """The chosen mixture as `mergemix run` prints it: domain -> weight."""
    lines = stdout.split("Chosen mixture for stage 's0':\n", 1)[1].splitlines()
    return dict(line.split() for line in lines[: lines.index(next(x for x in lines if "predicted objective" in x))])


@pytest.fixture(scope="module")
def smoke_home(tmp_path_factory):
    """Stage s0 of the smoke config, run once through `mergemix run` in a home of its own."""
    from mergemix_dagster.core.settings import load_settings, resolve_config_path

    root = tmp_path_factory.mktemp("smoke-home")
    raw = yaml.safe_load(resolve_config_path("smoke").read_text()) | {"home": str(root / "home")}
    config = root / "smoke.yaml"
    config.write_text(yaml.safe_dump(raw))
    first = _mergemix(root / "home", config, "run")
    assert first.returncode == 0, first.stderr[-3000:]
    return root / "home", config, load_settings(str(config)), _mixture_lines(first.stdout)


def test_a_deleted_or_cut_database_is_rebuilt_by_run_with_the_same_mixture(smoke_home):
    home, config, settings, mixture = smoke_home
    db = EvaluationDatabase(path=settings.database_path)  # no store: reads only what the file holds
    before = _tables(db)
    assert len(before[0]) and len(before[1]) and len(before[2])
    Path(settings.database_path).unlink()
    check = _mergemix(home, config, "check")
    assert check.returncode == 0 and "`mergemix run` rebuilds it from the" in check.stdout
    rerun = _mergemix(home, config, "run")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"mergemix: rebuilt {settings.database_path} from the store: {len(before[0])} evaluation rows" in rerun.stdout
    assert "_job " not in rerun.stdout  # nothing reran: the rows are back, so nothing is missing
    assert _mixture_lines(rerun.stdout) == mixture
    _assert_same(before, _tables(db))

    path = Path(settings.database_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    show = _mergemix(home, config, "show")
    assert show.returncode == 2 and "CorruptDatabaseError" in show.stderr and "Traceback" not in show.stderr
    rerun = _mergemix(home, config, "run")
    assert rerun.returncode == 0 and "mergemix: rebuilt" in rerun.stdout, rerun.stderr[-3000:]
    assert _mixture_lines(rerun.stdout) == mixture
    assert list(path.parent.glob("mergemix.duckdb.corrupt-*"))
    _assert_same(before, _tables(db))


def test_a_deleted_expert_checkpoint_is_retrained(smoke_home):
    home, config, settings, mixture = smoke_home
    store = CheckpointStore(root=settings.store_uri)
    pointer = store.get_json("stages/s0/experts/math/current.json")
    shutil.rmtree(home / "store" / pointer["key"])
    check = _mergemix(home, config, "check")
    assert check.returncode == 0 and "expert 'math' of stage 's0'" in check.stdout and "is gone" in check.stdout
    rerun = _mergemix(home, config, "run")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    jobs = [line.split()[:2] for line in rerun.stdout.splitlines() if line.strip().endswith(" s") and "_job" in line]
    assert jobs[0] == ["experts_job", "math|s0"] and ["experts_job", "code|s0"] not in jobs
    assert store.exists(store.get_json("stages/s0/experts/math/current.json")["key"])
    assert "is gone" not in _mergemix(home, config, "check").stdout


def _partitions(home: Path) -> list[str]:
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        return instance.get_dynamic_partitions("stage")


def test_bad_or_unknown_stage_names_are_refused_before_anything_is_registered(smoke_home, monkeypatch, capsys):
    from mergemix_dagster.cli import main

    home, config, settings, _ = smoke_home
    monkeypatch.setenv("MERGEMIX_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))  # restored after the test
    for stage, error in [("../../../escape", "InvalidStageNameError"), ("s9", "UnknownStageError")]:
        assert main(["--config", str(config), "run", "--stage", stage]) == 2
        err = capsys.readouterr().err
        assert f"mergemix: error: {error}" in err and "Traceback" not in err
    assert "known: s0" in err and "mergemix stage add" in err
    assert _partitions(home) == ["s0"]

    # stage add: a pickle checkpoint is refused; a safetensors one is registered; stage remove takes it out
    base = home / "store" / CheckpointStore(root=settings.store_uri).get_json("stages/s0/base/current.json")["key"]
    pickle_ckpt = home.parent / "pickle-ckpt"
    pickle_ckpt.mkdir()
    shutil.copy(base / "config.json", pickle_ckpt)
    (pickle_ckpt / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    assert main(["--config", str(config), "stage", "add", "s1", "--checkpoint", str(pickle_ckpt)]) == 2
    assert "StoreError: stage 's1': no safetensors weights" in capsys.readouterr().err
    assert main(["--config", str(config), "stage", "add", "s1", "--checkpoint", str(base)]) == 0
    assert _partitions(home) == ["s0", "s1"]
    capsys.readouterr()
    assert main(["--config", str(config), "stage", "remove", "s1"]) == 0
    out = capsys.readouterr().out
    assert "removed" in out and "kept:" in out and "stages/s1" in out
    assert _partitions(home) == ["s0"]
    assert main(["--config", str(config), "run", "--stage", "s1"]) == 2  # removed: unknown again
    assert "UnknownStageError" in capsys.readouterr().err
    assert main(["--config", str(config), "stage", "remove", "s0"]) == 2  # the initial stage stays
    assert main(["--config", str(config), "stage", "add", "s1", "--checkpoint", str(base)]) == 0  # back again
    assert _partitions(home) == ["s0", "s1"]


def test_the_checkpoint_sensor_skips_folders_that_are_not_stage_names(tmp_path):
    from mergemix_dagster.core.settings import Settings
    from mergemix_dagster.defs.sensors import stage_checkpoint_sensor
    from mergemix_dagster.resources.settings import PipelineSettings

    watch = tmp_path / "watch"
    for name in ("s1", "bad name", "x" * 70):
        (watch / name).mkdir(parents=True)
        (watch / name / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (watch / name / "model.safetensors").write_bytes(b"")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "stages": {"watch": str(watch)},
                                      "domains": [{"name": "math", "capability": "math"}, {"name": "code", "capability": "code"}]}))
    Settings.model_validate(yaml.safe_load(config.read_text()))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={
            "settings": PipelineSettings(config=str(config)), "store": CheckpointStore(root=str(tmp_path / "store"))})
        result = stage_checkpoint_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["s1"]
    assert result.dynamic_partitions_requests[0].partition_keys == ["s1"]


# ------------------------------------------------------------------ content, not metadata, decides freshness


def test_a_corpus_edited_in_place_with_the_same_size_and_mtime_is_found_by_check_full(tmp_path, monkeypatch):
    from mergemix_dagster.assets.corpora import files_fingerprint
    from mergemix_dagster.core.settings import Settings
    from mergemix_dagster.resources.content_hash import changed_sources

    monkeypatch.setenv("MERGEMIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MERGEMIX_VERIFY", raising=False)
    corpus = tmp_path / "math.jsonl"
    corpus.write_text(json.dumps({"text": "1 plus 1 equals 2."}) + "\n")
    settings = Settings(domains=[{"name": "math", "paths": [str(corpus)]}, {"name": "code"}])
    first = files_fingerprint([str(corpus)])
    os.utime(corpus, ns=(corpus.stat().st_atime_ns, corpus.stat().st_mtime_ns + 10**9))
    assert files_fingerprint([str(corpus)]) == first  # touched, same bytes: nothing to re-read
    stat = corpus.stat()
    corpus.write_text(json.dumps({"text": "1 plus 1 equals 3."}) + "\n")  # same size
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime, as a careless copy leaves it
    assert files_fingerprint([str(corpus)]) == first  # the fast path cannot see it
    (line,) = changed_sources(settings)  # `mergemix check --full` re-reads every local corpus file
    assert str(corpus) in line and "size and mtime did not" in line
    assert files_fingerprint([str(corpus)]) != first  # so the next `mergemix run` re-reads the domain
    assert changed_sources(settings) == []
