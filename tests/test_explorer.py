"""The explorer page's arithmetic (core/explore) equals the Python surrogates': the page's own script run under
node on the page's own data, and the Python mirror of it. No browser here: `make explorer-check` drives Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from mergemix_dagster.core.explore.page import ExplorerInputs, build_page, page_data
from mergemix_dagster.core.explore.trees import (
    ExplorerError,
    export_booster,
    export_surrogates,
    intervals_exported,
    predict_exported,
    predict_model,
)
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates

DOMAINS = ("web", "code", "math", "sft")
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not on PATH")


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.full(4, 0.6), size=16)
    X[X < 0.08] = 0.0  # mixtures with zero weights, as real designs have
    X /= X.sum(axis=1, keepdims=True)
    targets = {"code": 0.2 + 0.5 * X[:, 1] ** 0.5, "math": 0.1 + X[:, 2] * (1 - X[:, 2]), "flat": np.full(16, 0.3)}
    s = CapabilitySurrogates.fit(DOMAINS, X, targets, cv_folds=0, ensemble=4, params={"num_boost_round": 40})
    probes = np.vstack([X[:4], np.eye(4), rng.dirichlet(np.ones(4), size=8), [[0.5, 0.5, 0.0, 0.0]]])
    return s, X, targets, probes


def _inputs(s, X, targets, lower=(0, 0, 0, 0.05), upper=(0.5, 1, 1, 1)):
    return ExplorerInputs(title="t", source="s", surrogates=s, lower=list(lower), upper=list(upper), quantile=0.1,
                          measured_ids=[f"r{i}" for i in range(len(X))], measured_X=X, measured_scores=targets,
                          markers={"chosen": [0.3, 0.3, 0.3, 0.1], "uniform": [0.25] * 4})


def _node(script: str, payload: dict) -> dict:
    out = subprocess.run([NODE, "-e", script], check=False, input=json.dumps(payload), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _page_scripts(page: str) -> tuple[dict, str]:
    data = json.loads(re.search(r'<script id="mm-data" type="application/json">(.*?)</script>', page, re.DOTALL).group(1))
    model = re.search(r'<script id="mm-model">(.*?)</script>', page, re.DOTALL).group(1)
    return data, model


def _codes(nodes):
    for n in nodes:
        if isinstance(n, list):
            yield n[2]
            yield from _codes(n[3:])


NODE_PREDICT = """
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
eval(input.model.replace("if (typeof module", "globalThis.MM = MM; if (typeof module"));
const out = input.probes.map((x) => MM.predict(input.data.models, x, input.data.quantile));
process.stdout.write(JSON.stringify(out));
"""


def test_python_mirror_equals_surrogates(fitted):
    s, _, _, probes = fitted
    exported = export_surrogates(s)
    pred, iv = s.predict(probes), s.intervals(probes, 0.1)
    for i, x in enumerate(probes):
        p, q = predict_exported(exported, x.tolist()), intervals_exported(exported, x.tolist(), 0.1)
        for c in s.capabilities:
            assert p[c] == pytest.approx(pred[c][i], abs=1e-9)
            assert q[c] == pytest.approx(tuple(iv[c][i]), abs=1e-9)


@needs_node
def test_page_script_under_node_equals_surrogates(fitted):
    s, X, targets, probes = fitted
    data, model = _page_scripts(build_page(_inputs(s, X, targets)))
    got = _node(NODE_PREDICT, {"data": data, "model": model, "probes": probes.tolist()})
    pred, iv = s.predict(probes), s.intervals(probes, 0.1)
    worst = 0.0
    for i, row in enumerate(got):
        for c in s.capabilities:
            worst = max(worst, abs(row[c]["value"] - pred[c][i]), abs(row[c]["low"] - iv[c][i, 0]),
                        abs(row[c]["high"] - iv[c][i, 1]))
    assert worst <= 1e-6


@needs_node
def test_missing_value_rules_match_lightgbm():
    """Zero-as-missing and NaN-as-missing splits (default_left both ways) give LightGBM's own predictions."""
    import lightgbm as lgb

    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(200, 3))
    X[rng.random(X.shape) < 0.25] = 0.0
    Xn = X.copy()
    Xn[rng.random(X.shape) < 0.2] = np.nan
    y = np.nan_to_num(Xn[:, 0]) * 2 + (Xn[:, 1] == 0) + np.isnan(Xn[:, 2]) * 1.5 + rng.normal(0, 0.1, 200)
    params = {"objective": "regression", "num_leaves": 8, "min_data_in_leaf": 3, "verbose": -1, "seed": 0, "num_threads": 1}
    probes = np.vstack([Xn[:30], [[0.0, 0.0, 0.0], [np.nan, np.nan, np.nan], [1e-40, -1e-40, 0.3]]])
    for extra, train in (({"zero_as_missing": True}, X), ({}, Xn)):
        b = lgb.train({**params, **extra}, lgb.Dataset(train, label=y), num_boost_round=15)
        model = export_booster(b, 3, "test")
        kinds = {code & 3 for code in _codes(model["trees"])}
        assert kinds & {1, 2}, "the booster has no missing-value split to test"
        want = b.predict(probes)
        mirror = [predict_model(model, x) for x in probes.tolist()]
        assert np.abs(np.array(mirror) - want).max() <= 1e-9
        script = ("const i = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
                  "eval(i.js.replace('if (typeof module', 'globalThis.MM = MM; if (typeof module'));"
                  "process.stdout.write(JSON.stringify(i.x.map((r) => MM.evalModel(i.m, r.map((v) => v === null ? NaN : v)))));")
        from mergemix_dagster.core.explore.page import HERE

        js = (HERE / "explorer_model.js").read_text()
        got = _node(script, {"js": js, "m": model, "x": [[None if np.isnan(v) else v for v in r] for r in probes]})
        assert np.abs(np.array(got) - want).max() <= 1e-9


@needs_node
def test_slider_moves_stay_on_the_simplex_within_bounds(fitted):
    s, X, targets, _ = fitted
    data, model = _page_scripts(build_page(_inputs(s, X, targets)))
    script = """
const i = JSON.parse(require("fs").readFileSync(0, "utf8"));
eval(i.model.replace("if (typeof module", "globalThis.MM = MM; if (typeof module"));
const lo = i.lo, hi = i.hi; let x = MM.project([0.7, 0.1, 0.1, 0.1], lo, hi); const out = [x];
let seed = 7; const rnd = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
for (let n = 0; n < 300; n++) { x = MM.setWeight(x, n % 4, rnd() * 1.2 - 0.1, lo, hi); out.push(x); }
out.push(MM.setWeight(x, 0, 0.4, lo, hi));
process.stdout.write(JSON.stringify(out));
"""
    xs = np.array(_node(script, {"model": model, "lo": data["lower"], "hi": data["upper"]}))
    assert np.abs(xs.sum(axis=1) - 1).max() <= 1e-12
    assert (xs >= np.array(data["lower"]) - 1e-15).all() and (xs <= np.array(data["upper"]) + 1e-15).all()
    assert xs[-1, 0] == pytest.approx(0.4)  # a reachable value is taken exactly
    assert xs[0, 0] == pytest.approx(0.5)  # web's bound of 0.5 holds when a mixture is loaded


def test_page_is_offline_and_refuses_what_it_cannot_show(fitted):
    s, X, targets, _ = fitted
    page = build_page(_inputs(s, X, targets))
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|https?://(?!www\.w3\.org/2000/svg)", page)
    assert "default-src 'none'" in page
    with pytest.raises(ExplorerError, match="no mixture satisfies the bounds"):
        page_data(_inputs(s, X, targets, lower=(0.5, 0.5, 0.1, 0)))
    with pytest.raises(ExplorerError, match="quantile"):
        page_data(ExplorerInputs(**{**_inputs(s, X, targets).__dict__, "quantile": 0.7}))
    import lightgbm as lgb

    poisson = lgb.train({"objective": "poisson", "verbose": -1, "min_data_in_leaf": 2, "num_threads": 1},
                        lgb.Dataset(X, label=targets["code"]), num_boost_round=2)
    with pytest.raises(ExplorerError, match="output transform"):
        export_booster(poisson, 4, "poisson")


def test_fit_folder_missing_files_is_a_named_error(tmp_path):
    from mergemix_dagster.core.explore.sources import fit_inputs

    (tmp_path / "mixture.json").write_text("{}")
    with pytest.raises(ExplorerError, match="not a `mergemix fit --out` folder: missing config.json"):
        fit_inputs(tmp_path)


def test_fit_folder_becomes_a_page_with_its_bounds_runs_and_markers(fitted, tmp_path):
    """A folder laid out as core/search/fit_outputs.write_fit writes it (written here by hand, no search)."""
    import pandas as pd

    from mergemix_dagster.cli import main

    s, X, targets, _ = fitted
    s.save(tmp_path / "surrogates")
    runs = pd.Index([f"run{i}" for i in range(len(X))], name="run")
    mixtures = pd.DataFrame(X, columns=list(DOMAINS), index=runs)
    mixtures.insert(0, "split", ["held_out" if i < 2 else "fitted" for i in range(len(X))])
    mixtures.to_csv(tmp_path / "swarm_mixtures.csv")
    pd.DataFrame(targets, index=runs).to_csv(tmp_path / "swarm_scores.csv")
    (tmp_path / "mixture.json").write_text(json.dumps({
        "weights": dict(zip(DOMAINS, [0.4, 0.3, 0.2, 0.1])), "best_observed_run": "run5", "objective": "maximize:code"}))
    (tmp_path / "config.json").write_text(json.dumps({
        "domains": list(DOMAINS), "objective": {"terms": {"code": {"direction": "maximize", "weight": 1.0}},
                                                "prior": dict(zip(DOMAINS, [0.25] * 4))},
        "constraints": {"lower": dict(zip(DOMAINS, [0, 0, 0, 0.05])), "upper": dict(zip(DOMAINS, [0.5, 1, 1, 1]))}}))
    out = tmp_path / "page.html"
    assert main(["explore", "--fit", str(tmp_path), "-o", str(out)]) == 0
    data, _ = _page_scripts(out.read_text())
    assert data["lower"] == [0, 0, 0, 0.05] and data["upper"] == [0.5, 1, 1, 1]
    assert [m["name"] for m in data["markers"]] == ["chosen", "best measured run (run5)", "prior", "uniform"]
    assert data["markers"][1]["weights"] == pytest.approx(X[5].tolist())
    assert data["measured"]["ids"][:3] == ["run0 (held out)", "run1 (held out)", "run2"]
    assert data["directions"] == {"code": "maximize", "math": "", "flat": ""}
    assert data["models"]["flat"]["main"] == {"const": 0.3}
