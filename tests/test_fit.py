"""`mergemix fit`: surrogates and search on a swarm of trained runs given as CSV files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mergemix_dagster.cli import main
from mergemix_dagster.core.errors import ConfigError, SimplexError
from mergemix_dagster.core.search.fit import SwarmWarning, fit_swarm, parse_objective, read_mixtures

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
    assert list(preds.columns) == ["run", "loss"] and list(preds["run"]) == ["uniform", "authors"]
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
