"""The choice rules of ``mergemix fit`` on public swarms of trained runs, judged by a regressor fitted on all runs.

Issue 18, build 4. For each swarm shipped under ``benchmarks/data/`` (nothing is downloaded at run time):

1. ``mergemix fit``'s own code (``core.search.fit.fit_swarm``, the defaults of the CLI except ``--choice lcb``,
   which also returns the ``top_k_mean`` and ``argmax`` mixtures of the same search) is run on the swarm's
   *train* runs, once per fit seed;
2. its surrogate's Spearman ρ over the *held-out* runs is reported;
3. the mixture of every choice rule, the peer's published mixture and the natural prior are rated by the
   *judge*: a LightGBM regressor with RegMix's own hyper-parameters, fitted on *all* runs of the swarm (train
   and held out). The judge's training data include the train runs the surrogate saw: it is a second opinion
   from a stronger regressor, not an independent measurement, and a mixture far from every run is rated by
   extrapolation. A second judge (the surrogate's own small-data parameters, fitted on all runs) is printed
   beside it and takes no part in the decision;
4. the decision rule pre-registered in ``benchmarks/README.md`` is applied and its verdict printed.

    .venv/bin/python benchmarks/swarms.py                # 3 swarms x 5 seeds, the registered run
    .venv/bin/python benchmarks/swarms.py --swarms regmix-1m --seeds 0 --samples 20000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mergemix_dagster.core.search.fit import fit_swarm
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates

DATA = Path(__file__).resolve().parent / "data"
RULES = ("top_k_mean", "argmax", "lcb")
TODAY = "top_k_mean"
SEEDS = (0, 1, 2, 3, 4)
N_SAMPLES = 100_000  # the CLI's default --samples
# RegMix's regression.ipynb hyper-parameters (its early stopping needs a test set; the judge has none and
# runs the 1000 rounds), one thread, deterministic
JUDGE_PARAMS = {
    "objective": "regression", "boosting_type": "gbdt", "learning_rate": 0.01, "num_iterations": 1000,
    "seed": 42, "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbose": -1,
}
# mixture_config/synthesize_mixture.py get_token_distribution() of sail-sg/regmix b004d3a
REGMIX_PRIOR = {
    "arxiv": 0.113285273, "freelaw": 0.079608651, "nih_exporter": 0.003913491, "pubmed_central": 0.185375901,
    "wikipedia_en": 0.051081359, "dm_mathematics": 0.015962925, "github": 0.101750772, "philpapers": 0.003707518,
    "stackexchange": 0.066529351, "enron_emails": 0.001750772, "gutenberg_pg_19": 0.027085479,
    "pile_cc": 0.236869207, "ubuntu_irc": 0.01184346, "europarl": 0.007929969, "hackernews": 0.008032956,
    "pubmed_abstracts": 0.038825953, "uspto_backgrounds": 0.046446962,
}
PILE_CC = "metric/the_pile_pile_cc_val_loss"


@dataclass
class Swarm:
    """Runs of one swarm: weights, the objective to *minimize*, the train/held-out split, reference mixtures."""

    name: str
    mixtures: pd.DataFrame          # run id -> one column per domain
    objective: pd.Series            # run id -> value (lower is better)
    train: list[str]
    heldout: list[str]
    references: dict[str, np.ndarray]
    what: str


# --------------------------------------------------------------------------------------------- loading
def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _regmix_mix(path: Path, columns) -> np.ndarray:
    train = _yaml(path)["train"]
    w = np.array([float(train[c]) for c in columns])
    return w / w.sum()


def _regmix(scale: str) -> Swarm:
    d = DATA / "regmix"
    tr_x = pd.read_csv(d / "train_mixture_1m.csv", index_col=0)
    te_x = pd.read_csv(d / f"test_mixture_{scale}.csv", index_col=0)
    te_y = pd.read_csv(d / f"test_pile_loss_{scale}.csv", index_col=0)[PILE_CC]
    te_x.index = [f"test-{i}" for i in te_x.index]
    te_y.index = [f"test-{i}" for i in te_y.index]
    cols = list(tr_x.columns)
    refs = {
        "peer: RegMix published": _regmix_mix(d / "regmix.yaml", cols),
        "natural prior (tokens)": np.array([REGMIX_PRIOR[c.removeprefix("train_the_pile_")] for c in cols]),
        "Pile human mixture": _regmix_mix(d / "human.yaml", cols),
    }
    refs["natural prior (tokens)"] /= refs["natural prior (tokens)"].sum()
    if scale == "1m":  # RegMix's own split: fit on the 512, hold out the 256
        tr_y = pd.read_csv(d / "train_pile_loss_1m.csv", index_col=0)[PILE_CC]
        tr_x.index = [f"train-{i}" for i in tr_x.index]
        tr_y.index = [f"train-{i}" for i in tr_y.index]
        mix, y = pd.concat([tr_x, te_x]), pd.concat([tr_y, te_y])
        return Swarm("regmix-1m", mix, y, list(tr_x.index), list(te_x.index), refs,
                     "RegMix 1M proxies, Pile-CC validation loss; fit on 512, 256 held out")
    ids = list(te_x.index)  # 60M: 256 runs only; fit on ids 1..192, hold out 193..256
    return Swarm("regmix-60m", te_x, te_y, ids[:192], ids[192:], refs,
                 "RegMix 60M models, Pile-CC validation loss; fit on runs 1-192, 193-256 held out")


def _ratio(text) -> float:
    num, _, den = str(text).partition("/")
    return float(num) / float(den or 1)


def _olmix() -> Swarm:
    d = DATA / "olmix"
    cfg = _yaml(d / "dclm_per_family.yaml")
    ratios = pd.read_csv(d / "dclm_ratios.csv").set_index("run")
    metrics = pd.read_csv(d / "dclm_metrics.csv").set_index("run").loc[ratios.index]
    domains = [c for c in ratios.columns if c not in ("Unnamed: 0", "name", "index")]
    drop = set(cfg["filtering"]["drop_metrics"])
    weights = {f: _ratio(w) for f, w in cfg["filtering"]["obj_weights"].items()}  # "7/52.0"
    objective = sum(weights[f] * metrics[[t for t in tasks if t not in drop]].mean(axis=1)
                    for f, tasks in cfg["eval"]["tasks"].items()) / sum(weights.values())
    prior = np.array([cfg["priors"]["relative_sizes"][c] for c in domains])
    ids = [str(i) for i in ratios.index]
    mix = ratios[domains].set_axis(ids)
    return Swarm("olmix-dclm", mix, pd.Series(objective.to_numpy(), index=ids),
                 ids[:96], ids[96:], {"natural prior (tokens)": prior / prior.sum()},
                 "Olmix DCLM 30M proxies, family-weighted mean BPB (its fit config); fit on the first 96 "
                 "rows, last 31 held out")


LOADERS = {"regmix-1m": lambda: _regmix("1m"), "regmix-60m": lambda: _regmix("60m"), "olmix-dclm": _olmix}


# ------------------------------------------------------------------------------------------ measuring
def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def fit_judge(X: np.ndarray, y: np.ndarray, params: dict):
    import lightgbm as lgb

    return lgb.train(dict(params), lgb.Dataset(X, label=y, params={"verbose": -1}))


def judge_cv_spearman(X: np.ndarray, y: np.ndarray, params: dict, folds: int = 5) -> float:
    """Out-of-fold Spearman of the judge (folds fixed by seed 0): how far its ratings can be trusted."""
    ids = np.random.default_rng(0).permutation(len(y)) % folds
    oof = np.empty(len(y))
    for f in range(folds):
        oof[ids == f] = fit_judge(X[ids != f], y[ids != f], params).predict(X[ids == f])
    return _spearman(oof, y)


def evaluate_swarm(swarm: Swarm, seeds=SEEDS, n_samples: int = N_SAMPLES, judge_params: dict | None = None,
                   work: Path | None = None) -> dict:
    """Fit, choose and judge one swarm; every figure of its table, per seed where it depends on the seed."""
    judge_params = dict(JUDGE_PARAMS if judge_params is None else judge_params)
    domains = list(swarm.mixtures.columns)
    # weights are rounded to 3 decimals (rows sum to 0.996-1.003): renormalized here as `mergemix fit` does
    mixtures = swarm.mixtures.div(swarm.mixtures.sum(axis=1), axis=0)
    X = mixtures.to_numpy(dtype=float)
    y = swarm.objective.loc[swarm.mixtures.index].to_numpy(dtype=float)
    judge = fit_judge(X, y, judge_params)
    second = CapabilitySurrogates.fit(domains, X, {"y": y}, seed=0, cv_folds=0)
    rate = {"judge": lambda M: judge.predict(np.atleast_2d(M)),
            "judge2": lambda M: second.predict(np.atleast_2d(M))["y"]}
    train = mixtures.loc[swarm.train]
    ho_X = mixtures.loc[swarm.heldout].to_numpy(dtype=float)
    ho_y = swarm.objective.loc[swarm.heldout].to_numpy(dtype=float)
    best_train = swarm.objective.loc[swarm.train].idxmin()
    refs = dict(swarm.references)
    refs[f"best train run ({best_train})"] = mixtures.loc[best_train].to_numpy(dtype=float)
    out = {"rules": {r: {"mix": [], "judge": [], "judge2": [], "predicted": []} for r in RULES},
           "heldout_spearman": [], "cv_spearman": [], "seconds": []}
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmp = Path(tmp)
        train.rename_axis("run").to_csv(tmp / "mix.csv")
        swarm.objective.loc[swarm.train].rename("objective").rename_axis("run").to_frame().to_csv(tmp / "y.csv")
        for seed in seeds:
            t0 = time.perf_counter()
            res = fit_swarm(tmp / "mix.csv", tmp / "y.csv", "minimize:objective", tmp / f"fit{seed}",
                            n_samples=n_samples, seed=seed, choice="lcb")
            out["seconds"].append(time.perf_counter() - t0)
            p = res.payload
            mixes = {"lcb": p["weights"], "argmax": p["argmax"], "top_k_mean": p["top_k_mean"]}
            for r in RULES:
                m = np.array([mixes[r][d] for d in domains])
                out["rules"][r]["mix"].append(m)
                for j, f in rate.items():
                    out["rules"][r][j].append(float(f(m)[0]))
                out["rules"][r]["predicted"].append(float(res.surrogates.predict(m[None, :])["objective"][0]))
            out["heldout_spearman"].append(_spearman(res.surrogates.predict(ho_X)["objective"], ho_y))
            out["cv_spearman"].append(p["surrogate_cv"]["objective"]["spearman"])
    out["refs"] = {n: {"mix": m, "judge": float(rate["judge"](m)[0]), "judge2": float(rate["judge2"](m)[0])}
                   for n, m in refs.items()}
    out["judge_cv_spearman"] = judge_cv_spearman(X, y, judge_params)
    out["run_std"] = float(np.std(y, ddof=1))
    out["best_measured"] = float(y.min())
    out["domains"] = domains
    return out


def decide(results: dict[str, dict], today: str = TODAY) -> tuple[str | None, list[str]]:
    """The pre-registered rule (benchmarks/README.md): a rule R replaces ``today`` when (a) the mean over the
    swarms of its standardized seed-mean judged difference (R − today) / std of the swarm's measured runs is
    < 0 and (b) on no swarm is R's seed-mean judged loss above today's by more than one standard error of the
    paired per-seed differences. Of several such rules, the lowest mean standardized difference wins."""
    lines, passing = [], {}
    for rule in (r for r in RULES if r != today):
        z, worse = [], []
        for name, res in results.items():
            diff = np.array(res["rules"][rule]["judge"]) - np.array(res["rules"][today]["judge"])
            se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
            z.append(float(diff.mean()) / res["run_std"])
            if diff.mean() > se:
                worse.append(name)
            lines.append(f"  {rule} - {today} on {name}: {diff.mean():+.4f} (SE {se:.4f}; {z[-1]:+.3f} run std)")
        ok = float(np.mean(z)) < 0 and not worse
        lines.append(f"  {rule}: mean standardized difference {np.mean(z):+.3f}; worse beyond 1 SE on "
                     f"{worse or 'no swarm'} -> {'passes' if ok else 'fails'}")
        if ok:
            passing[rule] = float(np.mean(z))
    winner = min(passing, key=passing.get) if passing else None
    return winner, lines


# ---------------------------------------------------------------------------------------------- table
def _top(m: np.ndarray, domains) -> str:
    i = int(np.argmax(m))
    return f"{m[i]:.3f} {domains[i].removeprefix('train_the_pile_')}"


def report(swarm: Swarm, res: dict) -> None:
    sp = np.array(res["heldout_spearman"])
    print(f"\n== {swarm.name}: {swarm.what}")
    print(f"   {len(swarm.mixtures)} runs, {len(res['domains'])} domains; measured objective: best run "
          f"{res['best_measured']:.4f}, std over runs {res['run_std']:.4f}")
    print(f"   surrogate (fit on {len(swarm.train)}) held-out Spearman over {len(swarm.heldout)}: "
          f"{sp.mean():.3f} ± {sp.std():.3f} (seeds {', '.join(f'{v:.3f}' for v in sp)}); "
          f"its 5-fold CV Spearman {np.mean(res['cv_spearman']):.3f}")
    print(f"   judge (fit on all {len(swarm.mixtures)}) 5-fold CV Spearman {res['judge_cv_spearman']:.3f}")
    print(f"   {'mixture':<34}{'judge (mean±sd over seeds)':>28}{'judge2':>9}{'surrogate':>11}  max weight")
    for r in RULES:
        v = res["rules"][r]
        j, mx = np.array(v["judge"]), [_top(m, res["domains"]) for m in v["mix"]]
        label = f"{r}{' (today)' if r == TODAY else ''}"
        print(f"   {label:<34}{j.mean():>18.4f} ± {j.std():.4f}{np.mean(v['judge2']):>9.4f}"
              f"{np.mean(v['predicted']):>11.4f}  {mx[0]}" + (f" (seed 0; max {max(np.max(m) for m in v['mix']):.3f})"
                                                              if len(mx) > 1 else ""))
        print(f"   {'':<34}per seed: {', '.join(f'{x:.4f}' for x in j)}")
    for n, ref in res["refs"].items():
        print(f"   {n:<34}{ref['judge']:>27.4f}{ref['judge2']:>9.4f}{'':>11}  {_top(ref['mix'], res['domains'])}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--swarms", nargs="+", default=list(LOADERS), choices=list(LOADERS))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ap.add_argument("--samples", type=int, default=N_SAMPLES, help="objective evaluations of each search")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = {}
    for name in args.swarms:
        swarm = LOADERS[name]()
        results[name] = evaluate_swarm(swarm, seeds=args.seeds, n_samples=args.samples)
        report(swarm, results[name])
    winner, lines = decide(results)
    registered = (args.swarms == list(LOADERS) and args.seeds == list(SEEDS) and args.samples == N_SAMPLES)
    print(f"\ndecision rule (benchmarks/README.md){'' if registered else ' — NOT the registered run'}:")
    print("\n".join(lines))
    print(f"verdict: {'keep ' + TODAY if winner is None else winner + ' becomes the default'}")
    print(f"wall {time.perf_counter() - t0:.0f} s; fit+search per seed "
          f"{np.mean([s for r in results.values() for s in r['seconds']]):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
