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
    "  mergemix fit --mixtures ratios.csv --scores metrics.csv --objective 'minimize:mean(*bpb*)' \\\n"
    "      --exclude-metrics 'lab_bench*' --token-counts tokens.csv --target-tokens 6e12 --max-epochs 4 \\\n"
    "      --test-fraction 0.2 --out fit/\n"
    "  mergemix fit --olmix-config dclm_per_family.yaml --out fit/   # an olmix fit config (docs/fit.md)\n"
    "the run id is --id-column, else the first of run, run_id, id, name present, else the first column;\n"
    "columns without numbers (labels), with a blank header or named index are ignored with a note;\n"
    "rows within 1e-2 of the simplex are renormalized",
)
@click.option("--olmix-config", metavar="OLMIX_CONFIG", default="",
              help="an olmix fit config (swarm, priors, constraints, proposer.kl_reg, filtering): its objective, "
                   "prior and repetition caps; --mixtures/--scores then replace swarm.ratios/metrics")
@click.option("--mixtures", metavar="MIXTURES", default="", help="CSV: run id, then one column per domain weight")
@click.option("--scores", metavar="SCORES", default="", help="CSV: run id, then one column per metric")
@click.option("--objective", metavar="OBJECTIVE", default="",
              help="maximize:COL, minimize:COL, minimize:0.7*a+0.3*b, minimize:mean(*bpb*), "
                   "minimize:mean(2*math_*+code_*), or terms joined by commas")
@click.option("--out", metavar="OUT", required=True,
              help="output directory (mixture.json, config.json, surrogates/, predictions.csv, PNGs, summary.md)")
@click.option("--predict", metavar="PREDICT", default="",
              help="CSV of other mixtures to predict into predictions.csv (default: the swarm's runs)")
@click.option("--id-column", metavar="ID_COLUMN", default="",
              help="run-id column of every CSV (default: the first of run, run_id, id, name, else the first column)")
@click.option("--strict", is_flag=True, default=False,
              help="run ids in only one of --mixtures / --scores are an error, not a warning")
@repeatable("--exclude-metrics", "PATTERN", help="score columns (fnmatch patterns, comma-separated or repeated) "
                                                 "left out of every mean(...)")
@click.option("--token-counts", metavar="TOKEN_COUNTS", default="",
              help="available tokens per domain: CSV (domain,tokens) or JSON/YAML mapping; with --target-tokens")
@click.option("--target-tokens", metavar="TARGET_TOKENS", type=float, default=None,
              help="tokens of the real run T: caps α_d ≤ max_epochs · N_d / T")
@click.option("--max-epochs", metavar="MAX_EPOCHS", type=float, default=4.0, show_default=True,
              help="E: passes allowed over a domain's tokens")
@click.option("--test-fraction", metavar="TEST_FRACTION", type=float, default=0.0,
              help="runs held out (seeded by --seed), never fitted on: held-out Spearman per metric and objective")
@click.option("--reuse", metavar="PREVIOUS_FIT_DIR", default="",
              help="fit the new swarm together with the runs of an earlier `mergemix fit --out` folder: domains "
                   "added since are 0 in them, runs that weighted a removed or --revised domain are dropped")
@repeatable("--revised", "DOMAIN", help="with --reuse: a domain whose data changed since the earlier fit")
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
def fit(config: str, olmix_config: str, mixtures: str, scores: str, objective: str, out: str, predict: str,
        id_column: str, strict: bool, exclude_metrics: list[str], token_counts: str, target_tokens: float | None,
        max_epochs: float, test_fraction: float, reuse: str, revised: list[str], samples: int, choice: str, top_k: int, ensemble: int, seed: int,
        min_weight: list[str], max_weight: list[str], pin: list[str], kl_weight: float, prior: list[str],
        noise: list[str]) -> int:
    """Fit + search on a swarm of trained runs (RegMix/Olmix style) — no pipeline, no Dagster.

    ``config`` is accepted like on every verb and not read: the CSVs (or the olmix config) say everything.
    """
    from mergemix_dagster.core.errors import ConfigError
    from mergemix_dagster.core.search.fit import (
        SwarmNotice,
        SwarmWarning,
        fit_swarm,
        parse_bounds,
        read_token_counts,
    )

    common = {"predict_csv": Path(predict) if predict else None, "n_samples": samples, "seed": seed,
              "choice": choice, "top_k": top_k, "ensemble": ensemble,
              "min_weight": parse_bounds(min_weight, "--min-weight"),
              "max_weight": parse_bounds(max_weight, "--max-weight"), "pinned": parse_bounds(pin, "--pin"),
              "noise": parse_bounds(noise, "--noise") or None, "id_column": id_column or None, "strict": strict,
              "exclude_metrics": [p.strip() for item in exclude_metrics for p in item.split(",") if p.strip()],
              "test_fraction": test_fraction}
    if olmix_config:
        from mergemix_dagster.core.search.olmix_config import read_olmix_config

        clash = [f for f, v in (("--objective", objective), ("--kl-weight", kl_weight), ("--prior", prior),
                                ("--token-counts", token_counts), ("--target-tokens", target_tokens)) if v]
        if clash:
            raise ConfigError(f"{', '.join(clash)} cannot be combined with --olmix-config, which sets them")
        spec = read_olmix_config(Path(olmix_config), Path(mixtures) if mixtures else None,
                                 Path(scores) if scores else None)
        print(spec.unused)
        spec.notes.append(spec.unused)
        kwargs = {**common, **spec.kwargs}
    else:
        missing = [f for f, v in (("--mixtures", mixtures), ("--scores", scores), ("--objective", objective)) if not v]
        if missing:
            raise ConfigError(f"{', '.join(missing)} required (or --olmix-config)")
        if (token_counts == "") != (target_tokens is None):
            raise ConfigError("--token-counts and --target-tokens go together")
        kwargs = {**common, "mixtures_csv": Path(mixtures), "scores_csv": Path(scores), "objective": objective,
                  "kl_weight": kl_weight, "prior": parse_bounds(prior, "--prior") or None,
                  "token_counts": read_token_counts(Path(token_counts)) if token_counts else None,
                  "target_tokens": None if target_tokens is None else int(target_tokens), "max_epochs": max_epochs}
    if revised and not reuse:
        raise ConfigError("--revised needs --reuse")
    if reuse:
        from mergemix_dagster.core.search.swarm_reuse import union_swarm

        if "mixtures_csv" not in kwargs:
            raise ConfigError("--reuse needs --mixtures and --scores (the new swarm)")
        union = union_swarm(Path(reuse), kwargs["mixtures_csv"], kwargs["scores_csv"], Path(out) / "reuse",
                            id_column or None, [d for item in revised for d in item.split(",") if d])
        kwargs |= {"mixtures_csv": union.mixtures_csv, "scores_csv": union.scores_csv}
        for line in union.notes():
            print(f"mergemix: note: {line}", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SwarmWarning)
        try:
            result = fit_swarm(out_dir=Path(out), **kwargs)
        finally:  # said even when the fit then fails (e.g. unmatched ids leaving too few runs)
            for w in caught:
                if issubclass(w.category, SwarmWarning):
                    kind = "note" if issubclass(w.category, SwarmNotice) else "warning"
                    print(f"mergemix: {kind}: {w.message}", file=sys.stderr)
            for note in kwargs.get("notes") or []:
                if not note.startswith("olmix config fields not used"):  # printed first, on stdout
                    print(f"mergemix: note: {note}", file=sys.stderr)
    _print(result.payload)
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0


def _print(p: dict) -> None:
    print(f"objective {p['objective']} ({p['choice']}), {p['runs_used']} runs ({p['runs_held_out']} held out), "
          f"{p['n_samples']:,} points searched")
    reasons = p.get("constraint_reasons", {})
    for d, w in sorted(p["weights"].items(), key=lambda kv: -kv[1]):
        hi = p["constraints"].get(d, [0.0, 1.0])[1]
        bound = f"  (at its bound: {reasons.get(d, '')})" if d in p["constraints"] and abs(w - hi) < 1e-9 else ""
        print(f"  {d:<24} {w:.4f}{bound}")
    for m, reason in p["not_optimized"].items():
        print(f"  NOTE {m} is not optimized: {reason}")
    for m, v in p["predicted"].items():
        lo, hi = p["predicted_interval"].get(m, (float("nan"), float("nan")))
        cv = p["surrogate_cv"].get(m, {}).get("spearman")
        cv_text = f"  (surrogate CV Spearman {cv if cv is None else round(cv, 3)})" if m in p["surrogate_cv"] else ""
        print(f"  predicted {m}: {v:.4f} [{lo:.4f}, {hi:.4f}]{cv_text}")
    held = (p.get("heldout") or {}).get("spearman")
    if held:
        print(f"held-out Spearman ({p['heldout']['runs']} runs):")
        for m, rho in held.items():
            print(f"  {m:<40} {'n/a' if rho is None else f'{rho:.3f}'}")


COMMANDS: list[click.Command] = [fit]
