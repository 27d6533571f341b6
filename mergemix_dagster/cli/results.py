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

FORMAT_ALIASES = {"hf": ("hf_yaml", "hf_python")}  # `--format hf`: both Hugging Face files


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
    "--format", None, type=click.Choice([*EXPORT_FORMATS, *FORMAT_ALIASES, "all"]),
    help="format to write (repeatable; hf = hf_yaml + hf_python; default: export.formats of the settings)",
)
@click.option("--out", metavar="OUT", default="", help="output folder (default <home>/exports/<stage>)")
@repeatable(
    "--available-tokens", "NAME=TOKENS",
    help="available tokens of a domain/sub-domain for the token plan (repeatable; default: the counts mixture.json records)",
)
@click.option("--strict", is_flag=True, help="a domain without a data location (export.megatron_prefixes, paths) is "
              "an error instead of a placeholder (export.strict)")
def export(config: str, stage: str, format: list[str], out: str, available_tokens: list[str], strict: bool) -> int:
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
    formats = list(FORMATS) if "all" in format else (
        list(dict.fromkeys(f for name in format for f in FORMAT_ALIASES.get(name, (name,)))) or None)
    if strict:
        settings = settings.model_copy(update={"export": settings.export.model_copy(update={"strict": True})})
    written = write_exports(payload, plan, settings, folder, formats)
    for fmt, path in written.items():
        print(f"{fmt:<10} {path}")
    for line in placeholder_warnings(settings, chosen_weights(payload), written):
        print(f"warning: {line}", file=sys.stderr)
    if plan is None and settings.target.tokens is None:
        print("no token plan: set target.tokens (the available tokens are "
              f"{'recorded in mixture.json' if available else 'given with --available-tokens NAME=TOKENS'})")
    elif plan is None:
        print("no token plan: mixture.json records no available tokens; give them with --available-tokens NAME=TOKENS")
    elif plan.over_repeated:
        detail = ", ".join(f"{n} ({plan.allocation(n).epochs:.2f})" for n in plan.over_repeated)
        print(f"warning: over {plan.max_epochs:g} epochs: {detail}", file=sys.stderr)
    return 0


def placeholder_warnings(settings, weights: dict[str, float], written: dict[str, Path]) -> list[str]:
    """One line per exported file that holds a placeholder (``export.missing_location``) instead of a data
    location, naming the setting that fills it."""
    out = []
    for fmt, path in written.items():
        text = path.read_text()
        missing = [n for n, w in weights.items() if w > 0 and settings.export.missing_location.format(name=n) in text]
        if missing:
            setting = "export.megatron_prefixes" if fmt == "megatron" else "the domain's `paths`"
            out.append(f"{path.name}: no data location for {', '.join(missing)} (written as "
                       f"{settings.export.missing_location.format(name=missing[0])!r}, ...): set {setting} for "
                       f"each; `--strict` makes this an error")
    return out


COMPARE_COLUMNS = {
    "verified_utility": "verified objective*",
    "previous_mixture_utility": "previous stage's mixture*",
    "utility_lost_by_not_moving": "lost by not moving*",
    "moved_tv": "moved (TV)",
}


@verb(
    "compare", "compare the chosen mixtures of all stages (table, plot)",
    "  mergemix compare\n  mergemix compare --config my.yaml --json",
)
@click.option("--json", "as_json", is_flag=True, help="print the comparison's JSON as written")
def compare(config: str, as_json: bool) -> int:
    import pandas as pd

    from mergemix_dagster.runner.stage import dagster_instance, run_report

    settings, defs = settings_and_defs(config)
    run_report(defs, dagster_instance(settings))
    path = layout.stage_comparison_plot(settings.home_path).with_suffix(".json")
    if not path.exists():
        print("no chosen mixtures yet")
        return 0
    if as_json:
        print(path.read_text())
        return 0
    frame = pd.DataFrame(json.loads(path.read_text())).rename(columns=COMPARE_COLUMNS)
    print(frame.to_markdown(index=False, floatfmt=".3f", missingval="-"))
    print("\n* on each stage's own yardstick: its capabilities min–max normalized over the mixtures measured in "
          "that stage (1 = best measured there). Compare within a row (the previous stage's mixture scored on "
          "this stage's base and scale), not down a column.")
    print(f"plot: {layout.stage_comparison_plot(settings.home_path)}\ntable: {path}")
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
