"""``mergemix``: run the pipeline for a stage, register stages, show chosen mixtures.

Everything here goes through the same Dagster definitions and instance the UI shows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path

from mergemix_dagster.core.errors import MergeMixError
from mergemix_dagster.resources import layout


def _settings_and_defs(config: str):
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.core.settings import load_settings

    settings = load_settings(config or None)
    return settings, build_definitions(settings, config=config)


def cmd_run(args: argparse.Namespace) -> int:
    from mergemix_dagster.runner.stage import dagster_instance, run_stage

    settings, defs = _settings_and_defs(args.config)
    _preflight(settings)
    instance = dagster_instance(settings)
    stage = args.stage or settings.initial_stage
    print(f"mergemix: stage {stage!r}, {len(settings.domain_names)} domains {list(settings.domain_names)}")
    print(f"mergemix: results under {settings.home_path}, Dagster instance {instance.root_directory}")

    def on_step(job: str, partition, seconds: float) -> None:
        print(f"  {job:<16} {str(partition or '-'):<14} {seconds:7.1f} s", flush=True)

    if settings.search.hierarchy != "none":  # sub-domains: both levels, in the direction's order (docs/hierarchy.md)
        from mergemix_dagster.runner.hierarchy import run_hierarchy as run_stage
    timings = run_stage(
        defs, settings, instance, stage, on_step=on_step, log_level=args.log_level,
        on_check_failed=lambda line: print(f"  warning: {line}", flush=True),
    )
    print("\nStage timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    _print_mixture(settings, stage, instance.root_directory)
    _print_checks(instance, stage)
    return 0


def _print_checks(instance, stage: str) -> None:
    from mergemix_dagster.runner.checks import latest_check_results

    results = latest_check_results(instance, stage)
    if not results:
        return
    bad = [r for r in results if not r.passed]
    print(f"\nAsset checks of stage {stage!r}: {len(results) - len(bad)} passed, {len(bad)} failed")
    for r in bad:
        print(f"  {r.severity:<5} {r.asset}:{r.check}  {r.description}")


def _print_mixture(settings, stage: str, dagster_home: str = "") -> None:
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase

    db = EvaluationDatabase(path=settings.database_path)
    rows = db.query("SELECT domain, weight, predicted_utility, verified_utility FROM chosen_mixture WHERE stage = ?", [stage])
    if rows.empty:
        print(f"no chosen mixture for stage {stage!r} yet")
        return
    print(f"\nChosen mixture for stage {stage!r}:")
    for _, r in rows.iterrows():
        print(f"  {r['domain']:<10} {r['weight']:.3f}")
    r0 = rows.iloc[0]
    print(f"  predicted utility {r0['predicted_utility']:.3f}, verified utility {r0['verified_utility']:.3f}")
    store = CheckpointStore(root=settings.store_uri)
    key = layout.mixture_key(stage)
    details = store.get_json(key) if store.exists(key) else {}
    if details.get("degenerate"):
        print(f"  WARNING degenerate mixture: {details['degenerate']}")
    for cap, reason in (details.get("not_optimized") or {}).items():
        print(f"  NOTE {cap} is not optimized: {reason}")
    print(f"\nmixture.json:  {store.uri(layout.mixture_key(stage))}")
    print(f"DuckDB:        {settings.database_path}  (tables: evaluations, chosen_mixture, training_runs)")
    home = dagster_home or os.environ.get("DAGSTER_HOME", "")
    print(f"Dagster UI:    DAGSTER_HOME={shlex.quote(home)} .venv/bin/dg dev   (or: make ui)")
    print(f"Report:        .venv/bin/mergemix report --stage {stage}")


def cmd_show(args: argparse.Namespace) -> int:
    from mergemix_dagster.core.settings import load_settings

    settings = load_settings(args.config or None)
    from mergemix_dagster.resources import EvaluationDatabase

    db = EvaluationDatabase(path=settings.database_path)
    rows = db.query("SELECT stage, domain, weight, predicted_utility, verified_utility FROM chosen_mixture ORDER BY stage, domain")
    if args.json:
        print(json.dumps(rows.to_dict("records"), indent=2, default=str))
        return 0
    print(rows.to_string(index=False) if not rows.empty else "no chosen mixtures yet")
    from mergemix_dagster.assets.evaluations import expert_vs_base_markdown

    for stage in sorted(set(rows["stage"])) if not rows.empty else []:
        frame = db.evaluations(stage)
        frame = frame[frame["kind"].isin(["seed", "base"])]
        print(f"\nExperts vs base on their own capability, stage {stage}:\n{expert_vs_base_markdown(settings, frame)[0]}")
        spread = frame[frame["kind"] == "seed"].groupby("task")["value"].agg(["min", "mean", "max"])
        print(f"\nSeed candidates' scores by task, stage {stage}:\n{spread.to_markdown(floatfmt='.3f')}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a finished stage's mixture in trainer formats (docs/exports.md)."""
    import warnings
    from pathlib import Path

    from mergemix_dagster.core.errors import OverRepetitionWarning
    from mergemix_dagster.core.training.exports import FORMATS, chosen_weights, token_plan_for, write_exports
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.core.settings import load_settings

    settings = load_settings(args.config or None)
    store = CheckpointStore(root=settings.store_uri)
    key = layout.mixture_key(args.stage)
    if not store.exists(key):
        raise MergeMixError(f"stage {args.stage!r} has no mixture.json in {settings.store_uri}; run `mergemix run`")
    payload = store.get_json(key)
    available = dict(payload.get("available_tokens") or {})
    for item in args.available_tokens:
        name, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise MergeMixError(f"--available-tokens takes NAME=TOKENS, got {item!r}")
        available[name.strip()] = int(count)
    with warnings.catch_warnings():  # reported below, once, in plain words
        warnings.simplefilter("ignore", OverRepetitionWarning)
        plan = token_plan_for(chosen_weights(payload), settings, available, payload.get("available_documents"))
    out = Path(args.out) if args.out else layout.exports_dir(settings.home_path, args.stage)
    formats = list(FORMATS) if "all" in args.format else (args.format or None)
    written = write_exports(payload, plan, settings, out, formats)
    for fmt, path in written.items():
        print(f"{fmt:<10} {path}")
    if plan is None:
        print("no token plan: set target.tokens and give the available tokens (--available-tokens NAME=TOKENS)")
    elif plan.over_repeated:
        detail = ", ".join(f"{n} ({plan.allocation(n).epochs:.2f})" for n in plan.over_repeated)
        print(f"warning: over {plan.max_epochs:g} epochs: {detail}", file=sys.stderr)
    return 0


def cmd_stage_add(args: argparse.Namespace) -> int:
    from mergemix_dagster.runner.stage import dagster_instance, register_stage
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.core.settings import load_settings

    settings = load_settings(args.config or None)
    _check_new_stage(settings, args.name, args.checkpoint)
    if not args.checkpoint:
        if args.name != settings.initial_stage:
            raise MergeMixError(f"stage {args.name!r} needs --checkpoint (only the initial stage uses the base)")
        added = register_stage(dagster_instance(settings), args.name)
        print(f"initial stage {args.name!r} ({'added' if added else 'already present'})")
        return 0
    store = CheckpointStore(root=settings.store_uri)
    key = layout.stage_registration(args.name)
    if store.exists(key) and not args.force:
        existing = store.get_json(key)
        if existing.get("checkpoint") != args.checkpoint:
            raise MergeMixError(
                f"stage {args.name!r} is already registered with {existing.get('checkpoint')!r}; "
                "pick a new stage name (or --force to re-point it)"
            )
    store.put_json(key, {"stage": args.name, "checkpoint": args.checkpoint}, overwrite=True)
    added = register_stage(dagster_instance(settings), args.name)
    print(f"stage {args.name!r} -> {args.checkpoint} ({'added' if added else 'already present'})")
    return 0


def cmd_midtrain(args: argparse.Namespace) -> int:
    """Continue training a stage's base on its chosen mixture: the real run MergeMix hands off to.

    On the embedded default this makes the mid-training checkpoint that becomes the next stage.
    """
    from pathlib import Path

    from mergemix_dagster.core.training.loop import recipe_from
    from mergemix_dagster.resources.artifacts import base_checkpoint, corpus_documents
    from mergemix_dagster.core.data.corpora import tokenize_documents
    from mergemix_dagster.core.mixture import Mixture
    from mergemix_dagster.core.training.model import load_checkpoint, save_checkpoint
    from mergemix_dagster.core.training.loop import train
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase

    settings, _ = _settings_and_defs(args.config)
    store = CheckpointStore(root=settings.store_uri)
    rows = EvaluationDatabase(path=settings.database_path).query(
        "SELECT domain, weight FROM chosen_mixture WHERE stage = ?", [args.from_stage]
    )
    if rows.empty:
        raise MergeMixError(f"stage {args.from_stage!r} has no chosen mixture yet: run `mergemix run` first")
    mixture = Mixture.from_dict(dict(zip(rows["domain"], rows["weight"])), settings.domain_names)
    watch = Path(settings.stages.watch or settings.home_path / "checkpoints")
    out = watch / args.name
    if out.exists():
        raise MergeMixError(f"{out} already exists; choose another --name")
    model, tokenizer = load_checkpoint(base_checkpoint(store, args.from_stage)[0])
    streams = {d: tokenize_documents(corpus_documents(store, d)[0], tokenizer) for d in settings.domain_names}
    recipe = recipe_from(settings.experts.model_copy(update={"tokens": args.tokens}))
    print(f"mid-training {args.from_stage} on {mixture.label()} for {args.tokens:,} tokens")
    # progress lines, and a train state next to the output: rerunning after a kill resumes the run
    state_dir = out.parent / f".{out.name}.state"
    report = train(model, streams, mixture, recipe, on_log=lambda p: print(f"  {p.line()}", flush=True),
                   state_dir=state_dir, save_every=max(1, recipe.steps // 10))
    if report.resumed_from_step:
        print(f"resumed from step {report.resumed_from_step} ({state_dir})")
    save_checkpoint(model, tokenizer, out)
    print(f"checkpoint {out} (loss {report.final_loss:.3f}, {report.seconds:.0f} s)")
    if not args.no_register:
        args.checkpoint, args.force = str(out), False
        return cmd_stage_add(args)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from mergemix_dagster.runner.stage import dagster_instance, run_validation

    settings, defs = _settings_and_defs(args.config)
    stage = args.stage or settings.initial_stage
    v = settings.validation
    print(
        f"mergemix: validating stage {stage!r}: {v.n_mixtures} mixtures + {len(v.dual_alphas)} dual-capability points "
        f"trained with the expert recipe ({settings.experts.tokens:,} tokens each), {v.quality_seeds} seed(s) per "
        "mixture-quality arm; finished runs are reused",
        flush=True,
    )
    instance = dagster_instance(settings)
    seconds = run_validation(defs, settings, instance, stage, log_level=args.log_level)
    report = layout.validation_dir(settings.home_path, stage) / "report.md"
    print(report.read_text())
    print(f"validation job: {seconds:.0f} s; report {report}; plots in {report.parent}")
    _print_checks(instance, stage)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mergemix_dagster.runner.stage import dagster_instance, run_report

    settings, defs = _settings_and_defs(args.config)
    run_report(defs, dagster_instance(settings))
    path = settings.home_path / "stage_comparison.json"
    print(path.read_text() if path.exists() else "no chosen mixtures yet")
    print(f"plot: {layout.stage_comparison_plot(settings.home_path)}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit + search on a swarm of trained runs (RegMix/Olmix style) — no pipeline, no Dagster."""
    import warnings
    from pathlib import Path

    from mergemix_dagster.core.search.fit import SwarmWarning, fit_swarm, parse_bounds

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SwarmWarning)
        result = fit_swarm(
            Path(args.mixtures), Path(args.scores), args.objective, Path(args.out),
            predict_csv=Path(args.predict) if args.predict else None, n_samples=args.samples, seed=args.seed,
            choice=args.choice, top_k=args.top_k, ensemble=args.ensemble,
            min_weight=parse_bounds(args.min_weight, "--min-weight"),
            max_weight=parse_bounds(args.max_weight, "--max-weight"), pinned=parse_bounds(args.pin, "--pin"),
            kl_weight=args.kl_weight, prior=parse_bounds(args.prior, "--prior") or None,
            noise=parse_bounds(args.noise, "--noise") or None,
        )
    for w in caught:
        if issubclass(w.category, SwarmWarning):
            print(f"mergemix: warning: {w.message}", file=sys.stderr)
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


def _common_options() -> argparse.ArgumentParser:
    """Options every subcommand accepts, before or after its name (``mergemix show --config smoke``).

    ``SUPPRESS`` keeps a subcommand from overwriting a value given before the subcommand.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", default=argparse.SUPPRESS,
        help="settings YAML path or bundled name (default, smoke); default $MERGEMIX_CONFIG",
    )
    return common


def _subcommand(sub, name: str, common, help: str, examples: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, parents=[common], help=help, description=help[:1].upper() + help[1:] + ".",
        epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs,
    )


def cmd_report(args: argparse.Namespace) -> int:
    from mergemix_dagster.runner.report import stage_report
    from mergemix_dagster.core.report import render_markdown
    from mergemix_dagster.runner.stage import dagster_instance
    from mergemix_dagster.core.settings import load_settings

    settings = load_settings(args.config or None)
    stage = args.stage or settings.initial_stage
    text = render_markdown(stage_report(settings, dagster_instance(settings), stage))
    path = Path(args.output) if args.output else layout.reports_dir(settings.home_path, stage) / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="mergemix",
        description="Choose LLM mid-training data mixtures by merging per-domain experts (MergeMix), on Dagster.",
        epilog=(
            "examples:\n"
            "  mergemix run --config smoke          # the whole pipeline on the smoke config (~2 min)\n"
            "  mergemix show --config smoke         # chosen mixtures, experts vs base\n"
            "  mergemix report --stage s0           # one self-contained report, prints its path\n"
            "  mergemix <command> --help            # options and examples of one command"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", default="", help="settings YAML path or bundled name (default, smoke); default $MERGEMIX_CONFIG"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    run = _subcommand(
        sub, "run", common, "materialize every missing or stale asset of a stage and print the chosen mixture",
        "  mergemix run                         # stage s0 on $MERGEMIX_CONFIG (default: the embedded default)\n"
        "  mergemix run --config smoke          # a two-minute run that proves the plumbing\n"
        "  mergemix run --stage s1 --log-level INFO",
    )
    run.add_argument("--stage", default="", help="stage to optimize (default: the initial stage, s0)")
    run.add_argument("--log-level", default="WARNING", help="Dagster console log level (DEBUG, INFO, WARNING)")
    run.set_defaults(func=cmd_run)

    show = _subcommand(
        sub, "show", common, "print the chosen mixture of every stage",
        "  mergemix show --config smoke\n  mergemix show --json | jq '.[] | select(.stage == \"s0\")'",
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_show)

    from mergemix_dagster.core.training.exports import FORMATS as EXPORT_FORMATS

    export = _subcommand(
        sub, "export", common, "write a finished stage's mixture for trainers (HF, Megatron, OLMo, JSON)",
        "  mergemix export --stage s0 --format megatron\n  mergemix export --format all --out exports/",
    )
    export.add_argument("--stage", default="s0", help="stage whose mixture.json to export (default s0)")
    export.add_argument(
        "--format",
        action="append",
        default=[],
        choices=[*EXPORT_FORMATS, "all"],
        help="format to write (repeatable; default: export.formats of the settings)",
    )
    export.add_argument("--out", default="", help="output folder (default <home>/exports/<stage>)")
    export.add_argument(
        "--available-tokens",
        action="append",
        default=[],
        metavar="NAME=TOKENS",
        help="available tokens of a domain/sub-domain, for the token plan (repeatable)",
    )
    export.set_defaults(func=cmd_export)

    stage = _subcommand(
        sub, "stage", common, "manage stages (mid-training checkpoints)",
        "  mergemix stage add s0\n  mergemix stage add s1 --checkpoint /ckpts/step-5000",
    )
    stage_sub = stage.add_subparsers(dest="stage_command", required=True, metavar="stage_command")
    add = _subcommand(
        stage_sub, "add", common, "register a mid-training checkpoint as a new stage",
        "  mergemix stage add s0                                   # the initial stage (uses model.base)\n"
        "  mergemix stage add s1 --checkpoint /ckpts/step-5000     # a local HF directory\n"
        "  mergemix stage add s2 --checkpoint s3://bucket/step-9000 --config my.yaml",
    )
    add.add_argument("name", help="stage name, e.g. s1")
    add.add_argument(
        "--checkpoint", default="", help="HF checkpoint directory, s3:// URI or hub id (not for the initial stage)"
    )
    add.add_argument("--force", action="store_true", help="re-point an existing stage to another checkpoint")
    add.set_defaults(func=cmd_stage_add)

    midtrain = _subcommand(
        sub, "midtrain", common, "train a stage's base on its chosen mixture; register the result as a stage",
        "  mergemix midtrain --from-stage s0 --name s1\n  mergemix midtrain --name s1 --tokens 500000 --no-register",
    )
    midtrain.add_argument("--from-stage", default="s0", help="stage whose base and chosen mixture to use")
    midtrain.add_argument("--name", required=True, help="name of the new stage / checkpoint folder, e.g. s1")
    midtrain.add_argument("--tokens", type=int, default=250_000, help="tokens to train (default 250000)")
    midtrain.add_argument("--no-register", action="store_true", help="only write the checkpoint")
    midtrain.set_defaults(func=cmd_midtrain)

    validate = _subcommand(
        sub, "validate", common,
        "proxy-fidelity study: train reference models on real mixtures, compare with merged proxies",
        "  mergemix validate                    # stage s0; runs `mergemix run` first if needed\n"
        "  mergemix validate --config smoke --stage s0",
    )
    validate.add_argument("--stage", default="", help="stage to validate (default: the initial stage, s0)")
    validate.add_argument("--log-level", default="INFO", help="Dagster console log level (DEBUG, INFO, WARNING)")
    validate.set_defaults(func=cmd_validate)

    fit = _subcommand(
        sub, "fit", common,
        "fit surrogates on a swarm of trained runs (CSV) and search the best mixture, without the pipeline",
        "  mergemix fit --mixtures mix.csv --scores scores.csv --objective 'minimize:pile_loss' --out fit/\n"
        "  mergemix fit --mixtures mix.csv --scores scores.csv --objective 'maximize:acc,minimize:0.5*bpb' \\\n"
        "      --out fit/ --predict authors_mix.csv --max-weight web=0.5 --choice lcb\n"
        "both CSVs share their first column as the run id; rows within 1e-2 of the simplex are renormalized",
    )
    fit.add_argument("--mixtures", required=True, help="CSV: run id, then one column per domain weight")
    fit.add_argument("--scores", required=True, help="CSV: run id, then one column per metric")
    fit.add_argument("--objective", required=True,
                     help="maximize:COL, minimize:COL, minimize:0.7*a+0.3*b, or terms joined by commas")
    fit.add_argument("--out", required=True, help="output directory (mixture.json, surrogates/, predictions.csv)")
    fit.add_argument("--predict", default="", help="CSV of other mixtures to predict (writes predictions.csv)")
    fit.add_argument("--samples", type=int, default=100_000, help="objective evaluations of the search")
    fit.add_argument("--choice", default="top_k_mean", choices=["top_k_mean", "argmax", "lcb"])
    fit.add_argument("--top-k", type=int, default=100, help="points averaged by top_k_mean")
    fit.add_argument("--ensemble", type=int, default=8, help="bootstrap regressors per metric for intervals")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--min-weight", action="append", default=[], metavar="DOMAIN=W")
    fit.add_argument("--max-weight", action="append", default=[], metavar="DOMAIN=W")
    fit.add_argument("--pin", action="append", default=[], metavar="DOMAIN=W")
    fit.add_argument("--kl-weight", type=float, default=0.0, help="penalty toward the prior (default: mean swarm mixture)")
    fit.add_argument("--prior", action="append", default=[], metavar="DOMAIN=W", help="prior mixture for --kl-weight")
    fit.add_argument("--noise", action="append", default=[], metavar="METRIC=SE",
                     help="standard error of a metric (e.g. its std over seeds); a metric the swarm moves by less "
                          "is reported and not optimized")
    fit.set_defaults(func=cmd_fit)

    check = _subcommand(
        sub, "check", common, "check the config against the world (paths, base, tokenizer, tasks) before training",
        "  mergemix check\n  mergemix check --config my.yaml --full",
    )
    check.add_argument("--full", action="store_true", help="also verify every stored checkpoint's full content hash")
    check.set_defaults(func=cmd_check)

    compare = _subcommand(
        sub, "compare", common, "compare the chosen mixtures of all stages (table, plot)",
        "  mergemix compare\n  mergemix compare --config my.yaml",
    )
    compare.set_defaults(func=cmd_compare)

    report = _subcommand(
        sub, "report", common,
        "write one self-contained markdown report of a stage (mixture, trade-offs, plots, checks, cost); print its path",
        "  mergemix report                      # stage s0 -> $MERGEMIX_HOME/reports/s0/report.md\n"
        "  mergemix report --stage s1 --config my.yaml -o s1.md",
    )
    report.add_argument("--stage", default="", help="stage to report on (default: the initial stage, s0)")
    report.add_argument("-o", "--output", default="", help="file to write (default: <home>/reports/<stage>/report.md)")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=".* is currently in beta")  # Dagster's BetaWarning: see definitions.py
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:  # keep the terminal to our own progress lines
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # pragma: no cover - cosmetic only
        pass
    if getattr(args, "log_level", None) == "WARNING" and args.command == "run":
        args.log_level = "CRITICAL"  # a failed step's trace goes to the log file, not the terminal
    try:
        return args.func(args)
    except Exception as exc:
        named = named_error(exc)
        trace = _write_trace(exc)
        if named is None:
            print(f"mergemix: unexpected error: {type(exc).__name__}: {_first_line(exc)}\n  trace: {trace}", file=sys.stderr)
            return 1
        print(f"mergemix: error: {type(named).__name__}: {named}", file=sys.stderr)
        if trace:
            print(f"  trace: {trace}", file=sys.stderr)
        return 2


def _preflight(settings) -> None:
    """``mergemix check`` before a run: the first problem stops it before anything trains."""
    from mergemix_dagster.core.preflight import check_settings

    report = check_settings(settings, _registered_stages(settings))
    for warning in report.warnings:
        print(f"mergemix: warning: {warning}", file=sys.stderr)
    report.raise_first()


def _registered_stages(settings) -> dict[str, str]:
    """stage -> checkpoint of every stage registered in the store (``stage add``, the sensor)."""
    from pathlib import Path

    from mergemix_dagster.resources import CheckpointStore

    store = CheckpointStore(root=settings.store_uri)
    if not store.is_s3 and not Path(settings.store_uri).is_dir():
        return {}
    keys = [k for k in store.list_keys(layout.STAGES_PREFIX) if k.endswith("/registration.json")]
    return {k.split("/")[1]: store.get_json(k).get("checkpoint", "") for k in keys}


def _check_new_stage(settings, name: str, checkpoint: str) -> None:
    from mergemix_dagster.core.preflight import check_base, check_checkpoint
    from mergemix_dagster.core.settings import check_stage_name

    check_stage_name(name)
    if checkpoint:
        base_config = None if settings.model.base == "embedded" else check_base(settings.model.base, {})[0]
        m = settings.model
        embedded = {"model_type": "llama", "hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
                    "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads}
        problems = check_checkpoint(name, checkpoint, base_config, embedded if base_config is None else None)
        if problems:
            raise problems[0]


def cmd_check(args: argparse.Namespace) -> int:
    """Every config problem at once, each a named error and one line; exit 2 when there is any."""
    from mergemix_dagster.core.preflight import check_settings
    from mergemix_dagster.core.settings import load_settings

    settings = load_settings(args.config or None)
    report = check_settings(settings, _registered_stages(settings))
    if args.full and report.ok:
        report.errors += _verify_stored_checkpoints(settings)
    for line in report.lines():
        print(f"  {line}")
    print(f"mergemix check: {'OK' if report.ok else f'{len(report.errors)} problem(s)'}"
          f"{f', {len(report.warnings)} warning(s)' if report.warnings else ''}")
    return 0 if report.ok else 2


def _verify_stored_checkpoints(settings) -> list[MergeMixError]:
    """Every current base and expert checkpoint against its full recorded hash (reads every byte)."""
    import os

    from mergemix_dagster.resources.artifacts import checkpoint_dir
    from mergemix_dagster.resources import CheckpointStore

    store = CheckpointStore(root=settings.store_uri)
    os.environ["MERGEMIX_VERIFY"] = "full"
    problems: list[MergeMixError] = []
    pointers = [k for k in store.list_keys(layout.STAGES_PREFIX) if k.endswith("current.json") and ("/base/" in k or "/experts/" in k)]
    for key in pointers:
        parts = key.split("/")  # stages/<stage>/base/current.json, stages/<stage>/experts/<domain>/current.json
        what = f"expert {parts[3]!r} of stage {parts[1]!r}" if parts[2] == "experts" else f"base checkpoint of stage {parts[1]!r}"
        try:
            checkpoint_dir(store, key, what)
        except MergeMixError as exc:
            problems.append(exc)
    return problems


def named_error(exc: BaseException) -> MergeMixError | None:
    """The project's named error behind ``exc``: itself, one in its cause chain, or a known outside
    failure mapped to one (S3 unreachable or no credentials, a corrupt or locked DuckDB file, a home
    that is a file)."""
    from mergemix_dagster.core.errors import CorruptDatabaseError, StoreError

    seen = exc
    while seen is not None:
        if isinstance(seen, MergeMixError):
            return seen
        seen = seen.__cause__ or seen.__context__
    module = type(exc).__module__
    if module.startswith("botocore"):
        return StoreError(f"S3 is not reachable ({type(exc).__name__}: {_first_line(exc)})")
    if module.startswith("duckdb"):
        return CorruptDatabaseError(f"the DuckDB file cannot be used ({type(exc).__name__}: {_first_line(exc)})")
    if isinstance(exc, (NotADirectoryError, FileExistsError, PermissionError)):
        return StoreError(f"{exc.strerror}: {exc.filename}")
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _write_trace(exc: BaseException) -> str:
    """The full traceback in ``<home>/logs/`` (or the temp dir when the home is unusable); its path."""
    import os
    import tempfile
    import time
    import traceback
    from pathlib import Path

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    name = f"mergemix-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (Path(os.environ.get("MERGEMIX_HOME", ".mergemix")) / "logs", Path(tempfile.gettempdir()) / "mergemix-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return str(folder / name)
        except OSError:
            continue
    return ""


if __name__ == "__main__":
    sys.exit(main())


def hierarchy_main(argv: list[str] | None = None) -> int:
    """``--config hierarchy [--stage s0] [--study]``
    (what ``make hierarchy`` runs): both levels of a stage, then optionally the trained study."""
    from mergemix_dagster.runner.hierarchy import run_hierarchy, run_study
    from mergemix_dagster.runner.stage import home_lock
    from mergemix_dagster.resources.layout import study_key
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.runner.stage import dagster_instance
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.core.settings import load_settings

    parser = argparse.ArgumentParser(description=hierarchy_main.__doc__)
    parser.add_argument("--config", default="", help="settings YAML or bundled name (default: $MERGEMIX_CONFIG)")
    parser.add_argument("--stage", default=None)
    parser.add_argument("--study", action="store_true", help="also train and compare the three arms (6 reference runs; ~15 min of the ~1 h on 2 CPU cores)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    settings = load_settings(args.config or None)
    defs = build_definitions(settings, config=args.config)
    instance = dagster_instance(settings)
    stage = args.stage or settings.initial_stage
    with home_lock(settings):
        run_hierarchy(defs, settings, instance, stage, log_level=args.log_level,
                      on_step=lambda job, part, sec: print(f"  {job:<22} {str(part or '-'):<18} {sec:7.1f} s", flush=True))
        store = CheckpointStore(root=settings.store_uri)
        mixture = store.get_json(layout.mixture_key(stage))
        print(f"\n{settings.search.hierarchy} mixture of stage {stage!r} (coarse × fine):")
        for name, w in mixture["weights"].items():
            print(f"  {name:<18} {w:.3f}")
        if args.study:
            run_study(defs, instance, stage, log_level=args.log_level)
            print("\n" + store.get_json(study_key(stage))["markdown"])
    return 0
