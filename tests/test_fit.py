"""`mergemix fit`: surrogates and search on a swarm of trained runs given as CSV files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mergemix_dagster.cli import main
from mergemix_dagster.core.errors import ConfigError, SimplexError, TooFewRunsError, UnmatchedRunsError
from mergemix_dagster.core.search.fit import SwarmNotice, SwarmWarning, fit_swarm, parse_objective, read_mixtures

OLMIX = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "olmix"

K = 17
DOMAINS = [f"dom{i:02d}" for i in range(K)]
TARGET = np.full(K, 0.2 / (K - 1))
TARGET[5] = 0.8  # the best mixture puts 0.8 on one domain: Dirichlet(1) sampling never gets there at K=17


def loss(X: np.ndarray) -> np.ndarray:
    return 2.0 + 3.0 * ((X - TARGET) ** 2).sum(axis=1)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    d = tmp_path_factory.mktemp("swarm")
    rng = np.random.default_rng(0)
    X = np.vstack([rng.dirichlet(np.full(K, 0.3), 300), np.eye(K)])
    runs = [f"run{i:04d}" for i in range(len(X))]
    mix = pd.DataFrame(np.round(X, 3), columns=DOMAINS)  # rounded like a published CSV: sums 0.99x–1.00x
    mix.insert(0, "run", runs)
    mix.to_csv(d / "mix.csv", index=False)
    scores = pd.DataFrame({"run": runs, "loss": loss(X) + rng.normal(0, 0.002, len(X)), "acc": 1 - loss(X) / 10})
    scores.to_csv(d / "scores.csv", index=False)
    authors = pd.DataFrame([np.full(K, 1 / K), TARGET], columns=DOMAINS)
    authors.insert(0, "run", ["uniform", "authors"])
    authors.to_csv(d / "authors.csv", index=False)
    return d


def test_fit_cli_minimizes_loss_and_writes_outputs(swarm, tmp_path, capsys):
    out = tmp_path / "fit"
    code = main(["fit", "--mixtures", str(swarm / "mix.csv"), "--scores", str(swarm / "scores.csv"),
                 "--objective", "minimize:loss", "--out", str(out), "--predict", str(swarm / "authors.csv"),
                 "--samples", "60000", "--choice", "argmax"])
    assert code == 0
    printed = capsys.readouterr()
    assert "renormalized" in printed.err  # rounded rows were put back on the simplex, and we said so
    payload = json.loads((out / "mixture.json").read_text())
    w = np.array([payload["weights"][d] for d in DOMAINS])
    assert abs(w.sum() - 1) < 1e-12 and (w >= 0).all()
    # the chosen mixture is concentrated where the true optimum is, and predicted no worse than the best run
    assert w[5] == w.max() and w[5] > 0.4
    lo, hi = payload["predicted_interval"]["loss"]
    assert lo <= payload["predicted"]["loss"] <= hi + 1e-9
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns) == ["run", "loss", "objective"] and list(preds["run"]) == ["uniform", "authors"]
    assert payload["predicted"]["loss"] <= preds.set_index("run").loc["authors", "loss"] + 0.01
    assert true_loss(w) < loss(np.full((1, K), 1 / K))[0]


def true_loss(w):
    return float(loss(w[None, :])[0])


def test_fit_constraints_hold_exactly_and_unconstrained_is_reported(swarm, tmp_path):
    with pytest.warns(SwarmWarning):
        result = fit_swarm(swarm / "mix.csv", swarm / "scores.csv", "minimize:loss", tmp_path / "c",
                           n_samples=20_000, choice="top_k_mean", max_weight={"dom05": 0.5},
                           min_weight={"dom00": 0.05})
    w = result.payload["weights"]
    assert w["dom05"] <= 0.5 and w["dom00"] >= 0.05
    assert result.payload["unconstrained"]["dom05"] > 0.5


def test_fit_reports_a_metric_within_its_noise_and_does_not_optimize_it(swarm, tmp_path, capsys):
    out = tmp_path / "noise"
    assert main(["fit", "--mixtures", str(swarm / "mix.csv"), "--scores", str(swarm / "scores.csv"),
                 "--objective", "minimize:loss,maximize:acc", "--out", str(out), "--samples", "20000",
                 "--noise", "acc=10", "--noise", "loss=0.002"]) == 0
    payload = json.loads((out / "mixture.json").read_text())
    assert list(payload["not_optimized"]) == ["acc"] and "noise" in payload["not_optimized"]["acc"]
    assert "NOTE acc is not optimized" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="not in the objective"):
        fit_swarm(swarm / "mix.csv", swarm / "scores.csv", "minimize:loss", tmp_path / "x", noise={"acc": 1.0})


def test_rows_off_the_simplex_are_refused_by_name(tmp_path):
    frame = pd.DataFrame({"run": ["a", "b"], "x": [0.5, 0.6], "y": [0.5, 0.5]})  # b sums to 1.1
    frame.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(SimplexError, match="run 'b'.*1.100000"):
        read_mixtures(tmp_path / "m.csv")
    pd.DataFrame({"run": ["a"], "x": [-0.1], "y": [1.1]}).to_csv(tmp_path / "neg.csv", index=False)
    with pytest.raises(SimplexError, match="negative"):
        read_mixtures(tmp_path / "neg.csv")


def test_objective_parsing():
    p = parse_objective("minimize:0.7*loss_a+0.3*loss_b")
    assert p.weights == {"loss_a": 0.7, "loss_b": 0.3} and set(p.directions.values()) == {"minimize"}
    p = parse_objective("maximize:acc,minimize:2*bpb")
    assert p.directions == {"acc": "maximize", "bpb": "minimize"} and p.weights == {"acc": 1.0, "bpb": 2.0}
    for bad in ("loss", "lower:loss", "minimize:-1*loss", ""):
        with pytest.raises(ConfigError):
            parse_objective(bad)


def test_unknown_objective_column_is_named(swarm, tmp_path):
    with pytest.raises(ConfigError, match="nope"):
        fit_swarm(swarm / "mix.csv", swarm / "scores.csv", "minimize:nope", tmp_path / "x", n_samples=1000)


def small_swarm(d: Path, n: int = 24, extra_mix: int = 0, extra_scores: int = 0, index: bool = False) -> Path:
    """3 domains, ``n`` runs in both files, plus ids only in the mixtures / only in the scores."""
    rng = np.random.default_rng(1)
    X = rng.dirichlet(np.ones(3), n + extra_mix + extra_scores)
    runs = [f"r{i:03d}" for i in range(len(X))]
    mix = pd.DataFrame(X, columns=["a", "b", "c"])
    mix.insert(0, "run", runs)
    scores = pd.DataFrame({"run": runs, "loss": 2 + ((X - 0.5) ** 2).sum(axis=1)})
    mix.iloc[: n + extra_mix].to_csv(d / "mix.csv", index=index)
    pd.concat([scores.iloc[:n], scores.iloc[n + extra_mix:]]).to_csv(d / "scores.csv", index=index)
    return d


FAST = ["--samples", "2000", "--choice", "argmax", "--ensemble", "2"]


def test_ids_in_only_one_file_are_a_warning_with_count_and_examples_or_an_error_with_strict(tmp_path, capsys,
                                                                                           monkeypatch):
    monkeypatch.setenv("MERGEMIX_HOME", str(tmp_path / "home"))
    d = small_swarm(tmp_path, extra_mix=20, extra_scores=2)
    argv = ["fit", "--mixtures", str(d / "mix.csv"), "--scores", str(d / "scores.csv"), "--objective",
            "minimize:loss", "--out", str(tmp_path / "out"), *FAST]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: 20 run ids of" in err and "'r024'" in err  # the count and examples of runs without scores
    assert "2 run ids of" in err and "'r044'" in err  # and of scores without a mixture
    payload = json.loads((tmp_path / "out" / "mixture.json").read_text())
    assert (payload["runs_used"], payload["runs_without_scores"], payload["runs_without_mixture"]) == (24, 20, 2)
    assert main([*argv, "--strict"]) != 0
    assert "UnmatchedRunsError: 20 run ids" in capsys.readouterr().err
    with pytest.raises(UnmatchedRunsError):
        fit_swarm(d / "mix.csv", d / "scores.csv", "minimize:loss", tmp_path / "x", strict=True)


def test_non_finite_cells_name_the_run_id_and_the_column(tmp_path):
    d = small_swarm(tmp_path)
    scores = pd.read_csv(d / "scores.csv")
    scores.loc[4, "loss"] = np.inf
    scores.to_csv(d / "inf.csv", index=False)
    with pytest.raises(ConfigError, match="run 'r004', column 'loss': score inf"):
        fit_swarm(d / "mix.csv", d / "inf.csv", "minimize:loss", tmp_path / "x", n_samples=1000)
    mix = pd.read_csv(d / "mix.csv")
    mix.loc[7, "b"] = np.nan
    mix.to_csv(d / "nan.csv", index=False)
    with pytest.raises(SimplexError, match="run 'r007', column 'b'"):
        read_mixtures(d / "nan.csv")
    mix = pd.read_csv(d / "mix.csv").astype({"c": object})
    mix.loc[3, "c"] = "0.1x"  # a typo in a weight column: not mistaken for a label column and ignored
    mix.to_csv(d / "typo.csv", index=False)
    with pytest.raises(SimplexError, match="run 'r003', column 'c': weight '0.1x'"):
        read_mixtures(d / "typo.csv")


def test_fewer_runs_than_domains_plus_two_is_a_named_error_before_fitting(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MERGEMIX_HOME", str(tmp_path / "home"))
    d = small_swarm(tmp_path, n=4)
    with pytest.raises(TooFewRunsError, match="at least 5 runs .* 3 domains; 4 run ids"):
        fit_swarm(d / "mix.csv", d / "scores.csv", "minimize:loss", tmp_path / "x", n_samples=1000)
    assert not (tmp_path / "x").exists()  # nothing fitted, nothing written
    assert main(["fit", "--mixtures", str(d / "mix.csv"), "--scores", str(d / "scores.csv"), "--objective",
                 "minimize:loss", "--out", str(tmp_path / "y"), *FAST]) != 0
    assert "TooFewRunsError" in capsys.readouterr().err


def test_olmix_id_columns_are_recognised(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MERGEMIX_HOME", str(tmp_path / "home"))
    with pytest.warns(SwarmNotice, match="run id column 'run'; ignored columns 'Unnamed: 0' .*'name' .*'index'"):
        ratios = read_mixtures(OLMIX / "dclm_ratios.csv")  # the published format: ,run,name,index,<domains>
    assert ratios.index[0] == "19g3guks" and "name" not in ratios.columns and "index" not in ratios.columns
    assert ratios.shape[1] == 24 and np.allclose(ratios.sum(axis=1), 1)
    # the same layout end to end, with an Olmix-like name and index column and the pandas row position
    d = small_swarm(tmp_path, index=True)
    for f in ("mix.csv", "scores.csv"):
        frame = pd.read_csv(d / f, index_col=0)
        frame.insert(1, "name", [f"exp-{r}" for r in frame["run"]])
        frame.insert(2, "index", range(len(frame)))
        frame.to_csv(d / f)
    argv = ["fit", "--mixtures", str(d / "mix.csv"), "--scores", str(d / "scores.csv"), "--objective",
            "minimize:loss", *FAST]
    assert main([*argv, "--out", str(tmp_path / "o1")]) == 0
    assert "note: mixtures CSV" in capsys.readouterr().err
    assert json.loads((tmp_path / "o1" / "mixture.json").read_text())["best_observed_run"].startswith("r0")
    assert main([*argv, "--out", str(tmp_path / "o2"), "--id-column", "name"]) == 0
    assert json.loads((tmp_path / "o2" / "mixture.json").read_text())["best_observed_run"].startswith("exp-r0")
    assert main([*argv, "--out", str(tmp_path / "o3"), "--id-column", "nope"]) != 0
    assert "has no id column 'nope'" in capsys.readouterr().err
