"""``mergemix run`` and ``mergemix validate``: the verbs that materialize a stage's assets through Dagster.

Why together: both build the definitions, hold the home's lock through the runner, print one line per job
and end with the stage's asset checks; ``run`` chooses the mixture, ``validate`` measures how faithful the
merged proxies were to trained models. ``run --study`` on a hierarchical config (docs/hierarchy.md) also
trains the paper's Table-3 arms: what ``make hierarchy`` runs.
"""

from __future__ import annotations

import os
import shlex
import sys

import click

from mergemix_dagster.cli.common import (
    database_copy,
    hint_command,
    print_checks,
    record,
    registered_stages,
    settings_and_defs,
    ui_command,
)
from mergemix_dagster.cli.options import log_level_option, stage_option, verb
from mergemix_dagster.core.errors import ConfigError, DatabaseMissingError
from mergemix_dagster.resources import layout


@verb(
    "run", "materialize every missing or stale asset of a stage and print the chosen mixture",
    "  mergemix run                         # stage s0 on $MERGEMIX_CONFIG (default: the embedded default)\n"
    "  mergemix run --config smoke          # a two-minute run that proves the plumbing\n"
    "  mergemix run --stage s1 --log-level INFO\n"
    "  mergemix run --config hierarchy --study  # both levels, then the trained study (make hierarchy, ~1 h)",
)
@stage_option("", "stage to optimize (default: the initial stage, s0)")
@log_level_option("WARNING")
@click.option(
    "--study", is_flag=True,
    help="hierarchical configs: then train and compare the three arms of docs/hierarchy.md "
         "(6 reference runs; ~15 min of the ~1 h of make hierarchy on 2 CPU cores)",
)
def run(config: str, stage: str, log_level: str, study: bool) -> int:
    from mergemix_dagster.runner.stage import check_known_stage, dagster_instance, run_stage

    if log_level == "WARNING":
        log_level = "CRITICAL"  # a failed step's trace goes to the log file, not the terminal
    settings, defs = settings_and_defs(config)
    if study and settings.search.hierarchy == "none":
        raise ConfigError(
            f"--study compares the arms of a hierarchical search; config {config or '(default)'} has "
            "search.hierarchy: none (docs/hierarchy.md)"
        )
    stage = stage or settings.initial_stage
    check_known_stage(settings, stage)  # a bad name or a typo is refused before anything is registered
    restore_database(settings)
    preflight(settings)
    record(settings, config, "mergemix run")
    instance = dagster_instance(settings)
    print(f"mergemix: stage {stage!r}, {len(settings.domain_names)} domains {list(settings.domain_names)}")
    print(f"mergemix: results under {settings.home_path}, Dagster instance {instance.root_directory}")

    def on_step(job: str, partition, seconds: float) -> None:
        print(f"  {job:<16} {str(partition or '-'):<14} {seconds:7.1f} s", flush=True)

    if settings.search.hierarchy != "none":  # sub-domains: both levels, in the direction's order (docs/hierarchy.md)
        from mergemix_dagster.runner.hierarchy import run_hierarchy as run_stage
    timings = run_stage(
        defs, settings, instance, stage, on_step=on_step, log_level=log_level,
        on_check_failed=lambda line: print(f"  warning: {line}", flush=True),
    )
    print("\nStage timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    print_mixture(settings, stage, instance.root_directory, config)
    print_checks(instance, stage)
    if study:
        hierarchy_study(settings, defs, instance, stage, log_level)
    return 0


def hierarchy_study(settings, defs, instance, stage: str, log_level: str) -> None:
    """The flat (coarse × fine) mixture of a hierarchical ``stage``, then the trained
    ⟨MergeMix, MergeMix⟩ / ⟨MergeMix, uniform⟩ / ⟨uniform, uniform⟩ study and its table."""
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.runner.hierarchy import run_study
    from mergemix_dagster.runner.stage import home_lock

    store = CheckpointStore(root=settings.store_uri)
    mixture = store.get_json(layout.mixture_key(stage))
    print(f"\n{settings.search.hierarchy} mixture of stage {stage!r} (coarse × fine):")
    for name, w in mixture["weights"].items():
        print(f"  {name:<18} {w:.3f}")
    with home_lock(settings):
        run_study(defs, instance, stage, log_level=log_level)
    print("\n" + store.get_json(layout.study_key(stage))["markdown"])


def preflight(settings, validation: bool = False) -> None:
    """``mergemix check`` before a run: the first problem stops it before anything trains. ``validation``:
    also the settings only ``validate`` uses (its held-out tasks), which ``run`` does not need."""
    from mergemix_dagster.core.preflight import check_settings, check_validation_settings

    report = check_settings(settings, registered_stages(settings), database_copy(settings))
    if validation:
        report.errors += check_validation_settings(settings)
    for warning in report.warnings:
        print(f"mergemix: warning: {warning}", file=sys.stderr)
    report.raise_first()


def restore_database(settings) -> None:
    """A missing or unreadable DuckDB file rebuilt from the store's copy (a corrupt one kept aside); a home
    made before the copy existed gets its copy."""
    from mergemix_dagster.resources import EvaluationDatabase

    db = EvaluationDatabase(path=settings.database_path, store_root=settings.store_uri)
    counts = db.rebuild()
    if counts:
        print(f"mergemix: rebuilt {settings.database_path} from the store: {counts['evaluations']} evaluation rows, "
              f"{counts['chosen_mixture']} chosen-mixture rows, {counts['training_runs']} training runs", flush=True)
    elif written := db.copy_to_store():
        print(f"mergemix: copied {settings.database_path} to the store ({written} records) so it can be rebuilt")


def print_mixture(settings, stage: str, dagster_home: str = "", config: str = "") -> None:
    """The chosen mixture of ``stage`` from DuckDB, its warnings, and where every result lives: the next
    commands printed in full (absolute executables, home and ``config``), so they work from any directory."""
    from mergemix_dagster.core.search.choose import choice_warnings
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase

    db = EvaluationDatabase(path=settings.database_path, store_root=settings.store_uri)
    rows = db.query("SELECT domain, weight, predicted_utility, verified_utility FROM chosen_mixture WHERE stage = ?", [stage])
    store = CheckpointStore(root=settings.store_uri)
    key = layout.mixture_key(stage)
    if rows.empty and store.exists(key):  # never an exit 0 with the results gone
        raise DatabaseMissingError(
            f"stage {stage!r} has a chosen mixture in the store ({store.uri(key)}) but none in {settings.database_path}"
        )
    if rows.empty:
        print(f"no chosen mixture for stage {stage!r} yet")
        return
    print(f"\nChosen mixture for stage {stage!r}:")
    for _, r in rows.iterrows():
        print(f"  {r['domain']:<10} {r['weight']:.3f}")
    r0 = rows.iloc[0]
    print(f"  predicted objective {r0['predicted_utility']:.3f}, verified {r0['verified_utility']:.3f} "
          "(capabilities normalized over this stage's measured mixtures: 1 = best measured)")
    details = store.get_json(key) if store.exists(key) else {}
    for warning in choice_warnings(details):
        print(f"  WARNING {warning}")
    for cap, reason in (details.get("not_optimized") or {}).items():
        print(f"  NOTE {cap} is not optimized: {reason}")
    for cap, protection in (details.get("protections") or {}).items():
        print(f"  NOTE {cap} is protected: {protection}")
    print(f"\nmixture.json:  {store.uri(layout.mixture_key(stage))}")
    print(f"DuckDB:        {settings.database_path}  (tables: evaluations, chosen_mixture, training_runs)")
    home = dagster_home or os.environ.get("DAGSTER_HOME", "") or str(settings.home_path / "dagster")
    print(f"Dagster UI:    {ui_command(settings, config, home)}")
    print(f"Report:        {hint_command(settings, config, f'report --stage {shlex.quote(stage)}')}")
    print(f"Mixtures:      {hint_command(settings, config, 'show')}")
    print(f"Export:        {hint_command(settings, config, f'export --stage {shlex.quote(stage)} --format all')}")


@verb(
    "validate", "proxy-fidelity study, and the pre-registered trained comparison of the chosen mixture with its "
    "baselines (validation.protocol: metric, seeds, arms declared before any run; docs/validation.md)",
    "  mergemix validate                    # stage s0; runs `mergemix run` first if needed\n"
    "  mergemix validate --config smoke --stage s0",
)
@stage_option("", "stage to validate (default: the initial stage, s0)")
@log_level_option("INFO")
def validate(config: str, stage: str, log_level: str) -> int:
    from mergemix_dagster.runner.stage import check_known_stage, dagster_instance, run_validation

    settings, defs = settings_and_defs(config)
    stage = stage or settings.initial_stage
    check_known_stage(settings, stage)  # as in `run`: a typo is refused before anything is registered
    restore_database(settings)
    preflight(settings, validation=True)
    record(settings, config, "mergemix validate")
    v = settings.validation
    p = v.protocol
    print(
        f"mergemix: validating stage {stage!r}: {v.n_mixtures} mixtures + {len(v.dual_alphas)} dual-capability points "
        f"trained with the expert recipe ({settings.experts.tokens:,} tokens each); pre-registered comparison "
        f"(validation.protocol): arms {', '.join(p.arms)} at seeds {p.seeds}, judged on {p.metric} at "
        f"{p.confidence:.0%} confidence, RegMix proper on its own swarm of {p.regmix_runs} runs; finished runs are reused",
        flush=True,
    )
    instance = dagster_instance(settings)
    seconds = run_validation(defs, settings, instance, stage, log_level=log_level)
    report = layout.validation_dir(settings.home_path, stage) / "report.md"
    print(report.read_text())
    print(f"validation job: {seconds:.0f} s; report {report}; plots in {report.parent}")
    print_checks(instance, stage)
    return 0


COMMANDS: list[click.Command] = [run, validate]
