"""benchmarks/swarms.py on a tiny synthetic swarm (not the shipped data): every choice rule returns a point of
the simplex, the judge rates them, and the registered decision rule reads the figures as written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.settings.search import SearchSettings

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "swarms.py"
K = 4


@pytest.fixture(scope="module")
def swarms():
    spec = importlib.util.spec_from_file_location("swarms_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the script's dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _tiny(swarms, n=60):
    rng = np.random.default_rng(0)
    X = np.round(rng.dirichlet(np.full(K, 0.5), size=n), 3)  # rounded like the published CSVs
    best = np.array([0.6, 0.3, 0.1, 0.0])
    y = ((X / X.sum(1, keepdims=True) - best) ** 2).sum(axis=1) + rng.normal(0, 0.005, n)
    ids = [f"r{i}" for i in range(n)]
    mix = pd.DataFrame(X, index=ids, columns=[f"d{i}" for i in range(K)])
    return swarms.Swarm("tiny", mix, pd.Series(y, index=ids), ids[:40], ids[40:],
                        {"uniform": np.full(K, 1 / K)}, "synthetic")


def test_every_choice_rule_returns_a_simplex_point_and_is_judged(swarms, tmp_path):
    judge = {**swarms.JUDGE_PARAMS, "num_iterations": 50, "min_data_in_leaf": 5}
    res = swarms.evaluate_swarm(_tiny(swarms), seeds=(0,), n_samples=2_000, judge_params=judge, work=tmp_path)
    for rule in swarms.RULES:
        for m in res["rules"][rule]["mix"]:
            assert m.shape == (K,) and (m >= 0).all() and abs(m.sum() - 1) < 1e-9
        assert len(res["rules"][rule]["judge"]) == 1 and np.isfinite(res["rules"][rule]["judge"]).all()
    assert len(res["heldout_spearman"]) == 1 and res["heldout_spearman"][0] > 0.5  # a learnable bowl
    assert "uniform" in res["refs"] and any(n.startswith("best train run (r") for n in res["refs"])


def _fake(judged: dict[str, list[float]], run_std=1.0) -> dict:
    return {"rules": {r: {"judge": v} for r, v in judged.items()}, "run_std": run_std}


def test_decision_rule_as_registered(swarms):
    base = [1.0, 1.0, 1.0]
    better = {"top_k_mean": base, "argmax": [1.1, 1.1, 1.1], "lcb": [0.9, 0.95, 0.92]}
    assert swarms.decide({"a": _fake(better), "b": _fake(better)})[0] == "lcb"
    # lower on average but worse beyond one SE on one swarm: fails
    worse_on_b = {"top_k_mean": base, "argmax": [1.1] * 3, "lcb": [1.02, 1.03, 1.02]}
    much_better = {"top_k_mean": base, "argmax": [1.1] * 3, "lcb": [0.5, 0.5, 0.5]}
    assert swarms.decide({"a": _fake(much_better), "b": _fake(worse_on_b)})[0] is None
    assert swarms.decide({"a": _fake({"top_k_mean": base, "argmax": base, "lcb": base})})[0] is None


def test_lcb_default_without_an_ensemble_is_a_named_config_error():
    assert SearchSettings().choice == "lcb"
    with pytest.raises(ValueError, match="needs search.ensemble >= 2"):
        SearchSettings(ensemble=0)
    assert SearchSettings(ensemble=0, choice="top_k_mean").choice == "top_k_mean"


def test_fit_lcb_without_an_ensemble_fails_before_fitting(tmp_path):
    from mergemix_dagster.core.search.fit import fit_swarm

    with pytest.raises(ConfigError, match="needs an ensemble"):
        fit_swarm(tmp_path / "missing.csv", tmp_path / "missing.csv", "minimize:y", tmp_path, ensemble=0)
