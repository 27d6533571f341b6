"""`mergemix fit` on swarms in their owners' formats: an Olmix fit config, mean(...) objectives, token caps,
a held-out split, and RegMix's published CSVs. Every swarm is small and made (or sliced) in the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mergemix_dagster.cli import main
from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.search.fit import fit_swarm
from mergemix_dagster.core.search.swarm_objective import parse_objective, resolve_objective

REGMIX = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "regmix"
DOMAINS = ["web", "code", "math", "books"]
FAST = ["--samples", "3000", "--ensemble", "2"]


def olmix_csv(frame: pd.DataFrame, runs: list[str], path: Path) -> None:
    """Olmix's layout: an unnamed row position, run, name, index, then the data columns."""
    out = frame.copy()
    out.insert(0, "run", runs)
    out.insert(1, "name", [f"swarm-{r}" for r in runs])
    out.insert(2, "index", range(len(runs)))
    out.to_csv(path)  # the pandas row position is the unnamed first column


@pytest.fixture(scope="module")
def olmix_swarm(tmp_path_factory):
    d = tmp_path_factory.mktemp("olmix")
    rng = np.random.default_rng(3)
    X = rng.dirichlet(np.ones(4), 40)
    runs = [f"r{i:02d}" for i in range(len(X))]
    olmix_csv(pd.DataFrame(X, columns=DOMAINS), runs, d / "ratios.csv")
    noise = rng.normal(0, 0.005, (len(X), 5))
    metrics = pd.DataFrame({
        "math_a": 2.0 - 1.5 * X[:, 2] + noise[:, 0],  # bits per byte: lower is better, math helps
        "math_b": 2.2 - 1.0 * X[:, 2] - 0.3 * X[:, 1] + noise[:, 1],
        "code_a": 1.8 - 1.2 * X[:, 1] + noise[:, 2],
        "code_noisy": 5.0 + 50.0 * X[:, 2] + noise[:, 3],  # dropped: would push math to 0 if it counted
        "unlisted": 1.0 + X[:, 0] + noise[:, 4],  # in no family: not in the objective
    })
    olmix_csv(metrics, runs, d / "metrics.csv")
    config = {
        "swarm": {"ratios": str(d / "ratios.csv"), "metrics": str(d / "metrics.csv")},
        "priors": {"relative_sizes": {"web": 0.5, "code": 0.2, "math": 0.1, "books": 0.2},
                   "token_counts": {"web": 900_000, "code": 60_000, "math": 40_000, "books": 500_000}},
        "eval": {"type": "offline", "tasks": {"math": ["math_a", "math_b"], "code": ["code_a", "code_noisy"]}},
        "regression": {"type": "log_linear", "seed": 0, "n_test": 0, "train_split": 1.0,
                       "aggregate_task_families": True},
        "proposer": {"type": "exact", "temperature": None, "kl_reg": 0.05, "fit_only": False, "make_worst_mix": False},
        "constraints": {"enabled": True, "target_tokens": 1_000_000, "repetition_factor": 4.0},
        "filtering": {"drop_metrics": ["code_noisy", "ultrachat_masked_ppl"], "obj_weights": {"math": "1/2.0",
                                                                                              "code": 1.5}},
    }
    (d / "fit.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return d


def test_olmix_config_fitted_end_to_end(olmix_swarm, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", "--olmix-config", str(olmix_swarm / "fit.yaml"), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr()
    unused = [line for line in printed.out.splitlines() if "not used" in line]
    assert len(unused) == 1  # the unused fields, in one line, with what is used instead
    for field in ("regression.type='log_linear'", "proposer.type='exact'", "proposer.temperature=None",
                  "used instead: one LightGBM regressor"):
        assert field in unused[0]
    assert "n_test" not in unused[0] and "kl_reg" not in unused[0] and "obj_weights" not in unused[0]
    assert "drop_metrics removes 1 tasks from their families' means" in printed.err
    payload = json.loads((out / "mixture.json").read_text())
    config = json.loads((out / "config.json").read_text())
    w = payload["weights"]
    # caps: α_d ≤ repetition_factor · token_counts_d / target_tokens, exactly, and the binding ones hold
    caps = {"web": 1.0, "code": 4.0 * 60_000 / 1_000_000, "math": 4.0 * 40_000 / 1_000_000, "books": 1.0}
    assert config["constraints"]["upper"] == caps
    assert all(w[d] <= caps[d] for d in DOMAINS) and abs(sum(w.values()) - 1) < 1e-12
    assert w["math"] == pytest.approx(caps["math"], abs=1e-9)  # math helps most: its cap binds
    assert "at its bound: token availability" in printed.out
    # dropped metrics dropped, families are means of their kept tasks, obj_weights applied (normalized)
    raw = pd.read_csv(olmix_swarm / "metrics.csv", index_col=0).set_index("run")
    assert list(pd.read_csv(out / "swarm_mixtures.csv").columns) == ["run", "split", *DOMAINS]
    swarm = pd.read_csv(out / "swarm_scores.csv", index_col="run")  # family "math" beside domain "math"
    assert list(swarm.columns) == ["math", "code"]
    assert np.allclose(swarm["math"], (raw["math_a"] + raw["math_b"]) / 2, atol=1e-12)
    assert np.allclose(swarm["code"], raw["code_a"], atol=1e-12)  # code_noisy dropped
    assert config["objective"]["aggregates"] == {"olmix_objective": {"math": 0.25, "code": 0.75}}
    assert config["objective"]["kl_weight"] == pytest.approx(0.05 / 2.0)  # kl_reg / Σ obj_weights: olmix's argmin
    assert config["objective"]["excluded_metrics"] == ["code_noisy"]
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns) == ["run", "math", "code", "objective"]
    assert np.allclose(preds["objective"], 0.25 * preds["math"] + 0.75 * preds["code"], atol=1e-12)
    for f in ("heldout.png", "weights.png", "tradeoff.png", "summary.md"):
        assert (out / f).stat().st_size > 1000
    assert (out / "surrogates" / "surrogates.json").is_file()
    assert "not used here" in (out / "summary.md").read_text()


def test_olmix_config_errors_are_named(olmix_swarm, tmp_path):
    from mergemix_dagster.core.search.olmix_config import read_olmix_config

    config = yaml.safe_load((olmix_swarm / "fit.yaml").read_text())
    config["filtering"]["obj_weights"] = {"nope": 1.0}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    spec = read_olmix_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="obj_weights names \\['nope'\\]"):
        fit_swarm(out_dir=tmp_path / "x", **spec.kwargs)
    config["constraints"]["target_tokens"] = None
    (tmp_path / "bad2.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="needs constraints.target_tokens"):
        read_olmix_config(tmp_path / "bad2.yaml")


@pytest.fixture(scope="module")
def bpb_swarm(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpb")
    rng = np.random.default_rng(5)
    X = rng.dirichlet(np.ones(3), 30)
    runs = [f"run{i}" for i in range(len(X))]
    mix = pd.DataFrame(X, columns=["a", "b", "c"])
    mix.insert(0, "run", runs)
    mix.to_csv(d / "mix.csv", index=False)
    scores = pd.DataFrame({"run": runs, "label": ["x"] * len(X), "a_bpb": 1.5 - X[:, 0], "b_bpb": 1.2 - 0.5 * X[:, 1],
                           "acc": 0.3 + 0.2 * X[:, 2]})
    scores.to_csv(d / "scores.csv", index=False)
    pd.DataFrame({"domain": ["a", "b", "c"], "tokens": [1_000, 30_000, 2_500]}).to_csv(d / "tokens.csv", index=False)
    return d


def test_mean_objectives_resolve_patterns_weights_and_exclusions():
    cols = ["a_bpb", "b_bpb", "acc"]
    p = parse_objective("maximize:acc,minimize:mean(*bpb*)")
    assert p.directions == {"acc": "maximize", "mean(*bpb*)": "minimize"}
    assert resolve_objective(p, cols).aggregates == {"mean(*bpb*)": {"a_bpb": 0.5, "b_bpb": 0.5}}
    p = parse_objective("minimize:mean(3*a_*+b_bpb)")
    assert resolve_objective(p, cols).aggregates == {"mean(3*a_*+b_bpb)": {"a_bpb": 0.75, "b_bpb": 0.25}}
    obj = resolve_objective(parse_objective("minimize:mean(*bpb*)"), cols, exclude=["b_*"])
    assert obj.aggregates == {"mean(*bpb*)": {"a_bpb": 1.0}} and obj.excluded == ("b_bpb",)
    with pytest.raises(ConfigError, match="matches no numeric column"):
        resolve_objective(parse_objective("minimize:mean(*loss*)"), cols)
    with pytest.raises(ConfigError, match="excluded"):
        resolve_objective(parse_objective("minimize:b_bpb"), cols, exclude=["b_*"])


def test_mean_objective_token_caps_and_held_out_split_from_the_cli(bpb_swarm, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", "--mixtures", str(bpb_swarm / "mix.csv"), "--scores", str(bpb_swarm / "scores.csv"),
                 "--objective", "minimize:mean(*bpb*)", "--token-counts", str(bpb_swarm / "tokens.csv"),
                 "--target-tokens", "10000", "--max-epochs", "2", "--test-fraction", "0.25", "--out", str(out),
                 *FAST]) == 0
    printed = capsys.readouterr()
    assert "'label' (not numeric)" in printed.err  # a label column is skipped with a note
    payload = json.loads((out / "mixture.json").read_text())
    assert payload["constraints"]["a"] == [0.0, 2 * 1_000 / 10_000]  # E·N_d/T, exactly
    assert payload["constraints"]["c"] == [0.0, 2 * 2_500 / 10_000] and "b" not in payload["constraints"]
    assert payload["weights"]["a"] <= 0.2 and payload["weights"]["c"] <= 0.5
    assert (payload["runs_held_out"], payload["runs_fitted"]) == (8, 22)
    assert set(payload["heldout"]["spearman"]) == {"a_bpb", "b_bpb", "objective"}
    assert "held-out Spearman (8 runs)" in printed.out
    held = pd.read_csv(out / "heldout.csv")
    fitted = pd.read_csv(out / "swarm_mixtures.csv").query("split == 'fitted'")["run"]
    assert len(held) == 8 and not set(held["run"]) & set(fitted)
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns) == ["run", "a_bpb", "b_bpb", "objective"]
    assert np.allclose(preds["objective"], (preds["a_bpb"] + preds["b_bpb"]) / 2, atol=1e-12)
    assert main(["fit", "--mixtures", str(bpb_swarm / "mix.csv"), "--scores", str(bpb_swarm / "scores.csv"),
                 "--objective", "minimize:mean(*bpb*)", "--target-tokens", "10000", "--out", str(tmp_path / "x")]) != 0
    assert "--token-counts and --target-tokens go together" in capsys.readouterr().err


def test_regmix_csvs_fit_as_published(tmp_path):
    """RegMix's own files (id column ``index``, 17 domains): read as before, the id column's name kept."""
    mix = pd.read_csv(REGMIX / "train_mixture_1m.csv").head(40)
    loss = pd.read_csv(REGMIX / "train_pile_loss_1m.csv").head(40)
    mix.to_csv(tmp_path / "mix.csv", index=False)
    loss.to_csv(tmp_path / "loss.csv", index=False)
    target = "metric/the_pile_pile_cc_val_loss"
    res = fit_swarm(tmp_path / "mix.csv", tmp_path / "loss.csv", f"minimize:{target}", tmp_path / "out",
                    n_samples=2000, ensemble=2)
    assert res.payload["runs_used"] == 40 and len(res.payload["weights"]) == 17
    assert res.payload["metrics"] == [target] and res.payload["best_observed_run"] in set(mix["index"].astype(str))
    preds = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(preds.columns) == ["index", target, "objective"]
    assert np.array_equal(preds[target], preds["objective"])  # one target: the objective is that loss


def test_reuse_fits_the_earlier_runs_with_the_new_swarm_on_the_face_they_lie_on(tmp_path, capsys):
    """A 3-domain swarm fitted, then a 4th domain added and `math` revised: earlier runs without math are fitted
    with the new swarm (books = 0), earlier runs that weighted math are dropped and named."""
    rng = np.random.default_rng(5)

    def swarm(domains, n, name, zero_math=0):
        X = rng.dirichlet(np.ones(len(domains)), n)
        X[:zero_math, domains.index("math")] = 0.0
        X /= X.sum(axis=1, keepdims=True)
        runs = [f"{name}{i:02d}" for i in range(n)]
        pd.DataFrame(X, columns=domains, index=pd.Index(runs, name="run")).to_csv(tmp_path / f"{name}_mix.csv")
        score = 1.0 + X @ rng.uniform(0.1, 0.5, len(domains)) + rng.normal(0, 0.01, n)
        pd.DataFrame({"loss": score}, index=pd.Index(runs, name="run")).to_csv(tmp_path / f"{name}_scores.csv")

    swarm(["web", "code", "math"], 24, "old", zero_math=6)
    swarm(DOMAINS, 12, "new")
    base = ["fit", "--objective", "minimize:loss", *FAST]
    assert main([*base, "--mixtures", str(tmp_path / "old_mix.csv"), "--scores", str(tmp_path / "old_scores.csv"),
                 "--out", str(tmp_path / "first")]) == 0
    capsys.readouterr()
    assert main([*base, "--mixtures", str(tmp_path / "new_mix.csv"), "--scores", str(tmp_path / "new_scores.csv"),
                 "--reuse", str(tmp_path / "first"), "--revised", "math", "--out", str(tmp_path / "second")]) == 0
    err = capsys.readouterr().err
    assert "--reuse: 6 earlier runs fitted with the new swarm" in err and "18 dropped" in err
    assert "dropped reused:old10: weights math" in err and "(revised)" in err
    used = pd.read_csv(tmp_path / "second" / "swarm_mixtures.csv", index_col=0)
    reused = used.loc[[r for r in used.index if r.startswith("reused:")]]
    assert len(reused) == 6 and len(used) == 6 + 12 and list(used.columns[1:]) == DOMAINS
    assert (reused["books"] == 0).all() and (reused["math"] == 0).all()
    assert main([*base, "--mixtures", str(tmp_path / "new_mix.csv"), "--scores", str(tmp_path / "new_scores.csv"),
                 "--revised", "math", "--out", str(tmp_path / "third")]) == 2
    assert "ConfigError: --revised needs --reuse" in capsys.readouterr().err
