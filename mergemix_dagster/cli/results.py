"""``mergemix show``, ``export``, ``compare`` and ``report``: the verbs that read what runs produced.

Why together: none of them trains anything; they read DuckDB and the checkpoint store (``compare`` runs
only the small comparison job) and print or write the results in a form for people or for trainers.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from mergemix_dagster.cli.common import load, settings_and_defs
from mergemix_dagster.cli.options import repeatable, stage_option, verb
from mergemix_dagster.core.errors import MergeMixError
from mergemix_dagster.core.training.exports import FORMATS as EXPORT_FORMATS
from mergemix_dagster.resources import layout


@verb(
    "show", "print the chosen mixture of every stage",
    "  mergemix show --config smoke\n  mergemix show --json | jq '.[] | select(.stage == \"s0\")'",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def show(config: str, as_json: bool) -> int:
    from mergemix_dagster.resources import EvaluationDatabase

    settings = load(config)
    db = EvaluationDatabase(path=settings.database_path, store_root=settings.store_uri)
    rows = db.query("SELECT stage, domain, weight, predicted_utility, verified_utility FROM chosen_mixture ORDER BY stage, domain")
    if as_json:
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


@verb(
    "export", "write a finished stage's mixture for trainers (HF, Megatron, OLMo, JSON)",
    "  mergemix export --stage s0 --format megatron\n  mergemix export --format all --out exports/",
)
@stage_option("s0", "stage whose mixture.json to export (default s0)")
@repeatable(
    "--format", None, type=click.Choice([*EXPORT_FORMATS, "all"]),
    help="format to write (repeatable; default: export.formats of the settings)",
)
@click.option("--out", metavar="OUT", default="", help="output folder (default <home>/exports/<stage>)")
@repeatable(
    "--available-tokens", "NAME=TOKENS", help="available tokens of a domain/sub-domain, for the token plan (repeatable)"
)
def export(config: str, stage: str, format: list[str], out: str, available_tokens: list[str]) -> int:
    """Write a finished stage's mixture in trainer formats (docs/exports.md)."""
    from mergemix_dagster.core.errors import OverRepetitionWarning
    from mergemix_dagster.core.training.exports import (
        FORMATS,
        chosen_weights,
        token_plan_for,
        write_exports,
    )
    from mergemix_dagster.resources import CheckpointStore

    settings = load(config)
    store = CheckpointStore(root=settings.store_uri)
    key = layout.mixture_key(stage)
    if not store.exists(key):
        raise MergeMixError(f"stage {stage!r} has no mixture.json in {settings.store_uri}; run `mergemix run`")
    payload = store.get_json(key)
    available = dict(payload.get("available_tokens") or {})
    for item in available_tokens:
        name, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise MergeMixError(f"--available-tokens takes NAME=TOKENS, got {item!r}")
        available[name.strip()] = int(count)
    with warnings.catch_warnings():  # reported below, once, in plain words
        warnings.simplefilter("ignore", OverRepetitionWarning)
        plan = token_plan_for(chosen_weights(payload), settings, available, payload.get("available_documents"))
    folder = Path(out) if out else layout.exports_dir(settings.home_path, stage)
    formats = list(FORMATS) if "all" in format else (format or None)
    written = write_exports(payload, plan, settings, folder, formats)
    for fmt, path in written.items():
        print(f"{fmt:<10} {path}")
    if plan is None:
        print("no token plan: set target.tokens and give the available tokens (--available-tokens NAME=TOKENS)")
    elif plan.over_repeated:
        detail = ", ".join(f"{n} ({plan.allocation(n).epochs:.2f})" for n in plan.over_repeated)
        print(f"warning: over {plan.max_epochs:g} epochs: {detail}", file=sys.stderr)
    return 0


@verb(
    "compare", "compare the chosen mixtures of all stages (table, plot)",
    "  mergemix compare\n  mergemix compare --config my.yaml",
)
def compare(config: str) -> int:
    from mergemix_dagster.runner.stage import dagster_instance, run_report

    settings, defs = settings_and_defs(config)
    run_report(defs, dagster_instance(settings))
    path = settings.home_path / "stage_comparison.json"
    print(path.read_text() if path.exists() else "no chosen mixtures yet")
    print(f"plot: {layout.stage_comparison_plot(settings.home_path)}")
    return 0


@verb(
    "report",
    "write one self-contained markdown report of a stage (mixture, trade-offs, plots, checks, cost); print its path",
    "  mergemix report                      # stage s0 -> $MERGEMIX_HOME/reports/s0/report.md\n"
    "  mergemix report --stage s1 --config my.yaml -o s1.md",
)
@stage_option("", "stage to report on (default: the initial stage, s0)")
@click.option(
    "-o", "--output", metavar="OUTPUT", default="", help="file to write (default: <home>/reports/<stage>/report.md)"
)
def report(config: str, stage: str, output: str) -> int:
    from mergemix_dagster.core.report import render_markdown
    from mergemix_dagster.runner.report import stage_report
    from mergemix_dagster.runner.stage import dagster_instance

    settings = load(config)
    stage = stage or settings.initial_stage
    text = render_markdown(stage_report(settings, dagster_instance(settings), stage))
    path = Path(output) if output else layout.reports_dir(settings.home_path, stage) / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(path)
    return 0


COMMANDS: list[click.Command] = [show, export, compare, report]
