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

from .core.errors import MergeMixError


def _settings_and_defs(config: str):
    from .definitions import build_definitions
    from .settings import load_settings

    settings = load_settings(config or None)
    return settings, build_definitions(settings, config=config)


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import dagster_instance, run_stage

    settings, defs = _settings_and_defs(args.config)
    instance = dagster_instance(settings)
    stage = args.stage or settings.initial_stage
    print(f"mergemix: stage {stage!r}, {len(settings.domain_names)} domains {list(settings.domain_names)}")
    print(f"mergemix: results under {settings.home_path}, Dagster instance {instance.root_directory}")

    def on_step(job: str, partition, seconds: float) -> None:
        print(f"  {job:<16} {str(partition or '-'):<14} {seconds:7.1f} s", flush=True)

    timings = run_stage(defs, settings, instance, stage, on_step=on_step, log_level=args.log_level)
    print("\nStage timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    _print_mixture(settings, stage, instance.root_directory)
    _print_checks(instance, stage)
    return 0


def _print_checks(instance, stage: str) -> None:
    from .checks import latest_check_results

    results = latest_check_results(instance, stage)
    if not results:
        return
    bad = [r for r in results if not r.passed]
    print(f"\nAsset checks of stage {stage!r}: {len(results) - len(bad)} passed, {len(bad)} failed")
    for r in bad:
        print(f"  {r.severity:<5} {r.asset}:{r.check}  {r.description}")


def _print_mixture(settings, stage: str, dagster_home: str = "") -> None:
    from .resources import CheckpointStore, EvaluationDatabase

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
    print(f"\nmixture.json:  {store.uri(f'stages/{stage}/mixture.json')}")
    print(f"DuckDB:        {settings.database_path}  (tables: evaluations, chosen_mixture, training_runs)")
    home = dagster_home or os.environ.get("DAGSTER_HOME", "")
    print(f"Dagster UI:    DAGSTER_HOME={shlex.quote(home)} .venv/bin/dg dev   (or: make ui)")
    print(f"Report:        .venv/bin/mergemix report --stage {stage}")


def cmd_show(args: argparse.Namespace) -> int:
    from .settings import load_settings

    settings = load_settings(args.config or None)
    from .resources import EvaluationDatabase

    db = EvaluationDatabase(path=settings.database_path)
    rows = db.query("SELECT stage, domain, weight, predicted_utility, verified_utility FROM chosen_mixture ORDER BY stage, domain")
    if args.json:
        print(json.dumps(rows.to_dict("records"), indent=2, default=str))
        return 0
    print(rows.to_string(index=False) if not rows.empty else "no chosen mixtures yet")
    from .assets.evaluations import expert_vs_base_markdown

    for stage in sorted(set(rows["stage"])) if not rows.empty else []:
        frame = db.evaluations(stage)
        frame = frame[frame["kind"].isin(["seed", "base"])]
        print(f"\nExperts vs base on their own capability, stage {stage}:\n{expert_vs_base_markdown(settings, frame)[0]}")
        spread = frame[frame["kind"] == "seed"].groupby("task")["value"].agg(["min", "mean", "max"])
        print(f"\nSeed candidates' scores by task, stage {stage}:\n{spread.to_markdown(floatfmt='.3f')}")
    return 0


def cmd_stage_add(args: argparse.Namespace) -> int:
    from .pipeline import dagster_instance, register_stage
    from .resources import CheckpointStore
    from .settings import load_settings

    settings = load_settings(args.config or None)
    if not args.checkpoint:
        if args.name != settings.initial_stage:
            raise MergeMixError(f"stage {args.name!r} needs --checkpoint (only the initial stage uses the base)")
        added = register_stage(dagster_instance(settings), args.name)
        print(f"initial stage {args.name!r} ({'added' if added else 'already present'})")
        return 0
    store = CheckpointStore(root=settings.store_uri)
    key = f"stages/{args.name}/registration.json"
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

    from .assets.base import recipe_from
    from .assets.loading import base_checkpoint, corpus_documents
    from .core.corpora import tokenize_documents
    from .core.mixture import Mixture
    from .core.model import load_checkpoint, save_checkpoint
    from .core.train import train
    from .resources import CheckpointStore, EvaluationDatabase

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
    report = train(model, streams, mixture, recipe)
    save_checkpoint(model, tokenizer, out)
    print(f"checkpoint {out} (loss {report.final_loss:.3f}, {report.seconds:.0f} s)")
    if not args.no_register:
        args.checkpoint, args.force = str(out), False
        return cmd_stage_add(args)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .pipeline import dagster_instance, run_validation

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
    report = settings.home_path / "validation" / stage / "report.md"
    print(report.read_text())
    print(f"validation job: {seconds:.0f} s; report {report}; plots in {report.parent}")
    _print_checks(instance, stage)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .pipeline import dagster_instance, run_report

    settings, defs = _settings_and_defs(args.config)
    run_report(defs, dagster_instance(settings))
    path = settings.home_path / "stage_comparison.json"
    print(path.read_text() if path.exists() else "no chosen mixtures yet")
    print(f"plot: {settings.home_path / 'stage_comparison.png'}")
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
    from .assets.report import stage_report
    from .core.report import render_markdown
    from .pipeline import dagster_instance
    from .settings import load_settings

    settings = load_settings(args.config or None)
    stage = args.stage or settings.initial_stage
    text = render_markdown(stage_report(settings, dagster_instance(settings), stage))
    path = Path(args.output) if args.output else settings.home_path / "reports" / stage / "report.md"
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
    try:
        return args.func(args)
    except MergeMixError as exc:
        print(f"mergemix: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
