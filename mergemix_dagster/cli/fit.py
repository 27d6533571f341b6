"""``mergemix fit``: surrogates and a mixture search on a swarm of runs trained elsewhere (RegMix/Olmix style).

Why its own module: it is the one verb that needs neither the pipeline nor Dagster (two CSVs in, a folder
out), and it has the most options; the search itself lives in ``core.search.fit``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from mergemix_dagster.cli.options import repeatable, verb


@verb(
    "fit", "fit surrogates on a swarm of trained runs (CSV) and search the best mixture, without the pipeline",
    "  mergemix fit --mixtures mix.csv --scores scores.csv --objective 'minimize:pile_loss' --out fit/\n"
    "  mergemix fit --mixtures mix.csv --scores scores.csv --objective 'maximize:acc,minimize:0.5*bpb' \\\n"
    "      --out fit/ --predict authors_mix.csv --max-weight web=0.5 --choice top_k_mean\n"
    "the run id is --id-column, else the first of run, run_id, id, name present, else the first column;\n"
    "columns without numbers (labels), with a blank header or named index are ignored with a note;\n"
    "rows within 1e-2 of the simplex are renormalized",
)
@click.option("--mixtures", metavar="MIXTURES", required=True, help="CSV: run id, then one column per domain weight")
@click.option("--scores", metavar="SCORES", required=True, help="CSV: run id, then one column per metric")
@click.option("--objective", metavar="OBJECTIVE", required=True,
              help="maximize:COL, minimize:COL, minimize:0.7*a+0.3*b, or terms joined by commas")
@click.option("--out", metavar="OUT", required=True, help="output directory (mixture.json, surrogates/, predictions.csv)")
@click.option("--predict", metavar="PREDICT", default="", help="CSV of other mixtures to predict (writes predictions.csv)")
@click.option("--id-column", metavar="ID_COLUMN", default="",
              help="run-id column of every CSV (default: the first of run, run_id, id, name, else the first column)")
@click.option("--strict", is_flag=True, default=False,
              help="run ids in only one of --mixtures / --scores are an error, not a warning")
@click.option("--samples", metavar="SAMPLES", type=int, default=100_000, help="objective evaluations of the search")
@click.option("--choice", default="lcb", type=click.Choice(["top_k_mean", "argmax", "lcb"]), show_default=True,
              help="lcb: highest lower confidence bound over the --ensemble (needs >= 2); top_k_mean: mean of the "
                   "--top-k best points; argmax (benchmarks/README.md: lcb rated best on public swarms)")
@click.option("--top-k", metavar="TOP_K", type=int, default=100, help="points averaged by top_k_mean")
@click.option("--ensemble", metavar="ENSEMBLE", type=int, default=8, help="bootstrap regressors per metric for intervals")
@click.option("--seed", metavar="SEED", type=int, default=0)
@repeatable("--min-weight", "DOMAIN=W")
@repeatable("--max-weight", "DOMAIN=W")
@repeatable("--pin", "DOMAIN=W")
@click.option("--kl-weight", metavar="KL_WEIGHT", type=float, default=0.0,
              help="penalty toward the prior (default: mean swarm mixture)")
@repeatable("--prior", "DOMAIN=W", help="prior mixture for --kl-weight")
@repeatable("--noise", "METRIC=SE", help="standard error of a metric (e.g. its std over seeds); a metric the swarm "
                                         "moves by less is reported and not optimized")
def fit(config: str, mixtures: str, scores: str, objective: str, out: str, predict: str, id_column: str, strict: bool,
        samples: int, choice: str, top_k: int, ensemble: int, seed: int, min_weight: list[str], max_weight: list[str], pin: list[str],
        kl_weight: float, prior: list[str], noise: list[str]) -> int:
    """Fit + search on a swarm of trained runs (RegMix/Olmix style) — no pipeline, no Dagster.

    ``config`` is accepted like on every verb and not read: the CSVs say everything.
    """
    from mergemix_dagster.core.search.fit import (
        SwarmNotice,
        SwarmWarning,
        fit_swarm,
        parse_bounds,
    )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SwarmWarning)
        try:
            result = fit_swarm(
                Path(mixtures), Path(scores), objective, Path(out),
                predict_csv=Path(predict) if predict else None, n_samples=samples, seed=seed,
                choice=choice, top_k=top_k, ensemble=ensemble,
                min_weight=parse_bounds(min_weight, "--min-weight"),
                max_weight=parse_bounds(max_weight, "--max-weight"), pinned=parse_bounds(pin, "--pin"),
                kl_weight=kl_weight, prior=parse_bounds(prior, "--prior") or None,
                noise=parse_bounds(noise, "--noise") or None, id_column=id_column or None, strict=strict,
            )
        finally:  # said even when the fit then fails (e.g. unmatched ids leaving too few runs)
            for w in caught:
                if issubclass(w.category, SwarmWarning):
                    kind = "note" if issubclass(w.category, SwarmNotice) else "warning"
                    print(f"mergemix: {kind}: {w.message}", file=sys.stderr)
    p = result.payload
    print(f"objective {p['objective']} ({p['choice']}), {p['runs_used']} runs, {p['n_samples']:,} points searched")
    for d, w in sorted(p["weights"].items(), key=lambda kv: -kv[1]):
        print(f"  {d:<24} {w:.4f}")
    for m, reason in p["not_optimized"].items():
        print(f"  NOTE {m} is not optimized: {reason}")
    for m, v in p["predicted"].items():
        lo, hi = p["predicted_interval"].get(m, (float("nan"), float("nan")))
        cv = p["surrogate_cv"][m]["spearman"]
        print(f"  predicted {m}: {v:.4f} [{lo:.4f}, {hi:.4f}]  (surrogate CV Spearman {cv if cv is None else round(cv, 3)})")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0


COMMANDS: list[click.Command] = [fit]
