"""The command line: `dagster asset materialize` over the whole graph, and mergemix's own errors/help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_help_describes_every_command():
    out = subprocess.run([BIN / "mergemix", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("run", "show", "stage", "midtrain", "compare"):
        assert command in out


def test_bad_config_fails_with_named_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains: [{name: only_one}]\n")
    proc = subprocess.run([BIN / "mergemix", "--config", str(bad), "show"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "ConfigError" in proc.stderr and "at least two domains" in proc.stderr


@pytest.mark.skipif(os.environ.get("MERGEMIX_SKIP_CLI_SMOKE") == "1", reason="explicitly skipped")
def test_dagster_asset_materialize_whole_graph_on_smoke_config(tmp_path):
    env = os.environ | {
        "MERGEMIX_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "MERGEMIX_CONFIG": "smoke",
        "BIN": str(BIN),
    }
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "smoke_materialize.sh")], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "smoke materialize OK" in proc.stdout
    con = duckdb.connect(str(tmp_path / "home" / "mergemix.duckdb"), read_only=True)
    n_seed = con.execute("SELECT count(*) FROM evaluations WHERE kind = 'seed'").fetchall()[0][0]
    assert n_seed == 8 * 4  # smoke: 8 candidates x 4 tasks
    weights = [w for (w,) in con.execute("SELECT weight FROM chosen_mixture WHERE stage = 's0'").fetchall()]
    assert len(weights) == 4 and min(weights) >= 0 and abs(sum(weights) - 1) < 1e-9
    # the validation group through the same CLI: its reference runs are recorded next to the experts
    studies = dict(con.execute("SELECT study, count(*) FROM training_runs GROUP BY study").fetchall())
    assert studies["expert"] == 4 and studies["fidelity"] == 4  # smoke: validation.n_mixtures = 4
    assert "Overall Spearman" in proc.stdout
