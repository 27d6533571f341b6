"""``mergemix``: run the pipeline for a stage, register stages, show chosen mixtures.

Everything here goes through the same Dagster definitions and instance the UI shows. One module per verb
group, so a newcomer finds a verb by its name: ``run`` (run, validate), ``stages`` (stage add, midtrain),
``results`` (show, export, compare, report), ``fit``, ``check``; ``options`` holds what the verbs share
(``--config`` before or after the verb, ``--stage``, ``--log-level``, help with examples), ``errors`` how a
failure ends (a named error, exit code 2; anything else, 1), ``common`` the helpers several verbs print with.
This module only assembles the ``mergemix`` group and keeps ``main`` for the console script and the tests.
"""

from __future__ import annotations

import argparse
import warnings

import click

from mergemix_dagster.cli import check, fit, results, run, stages
from mergemix_dagster.cli.options import CONTEXT_SETTINGS, VerbGroup, config_option
from mergemix_dagster.resources import layout

ORDER = ("run", "show", "export", "stage", "midtrain", "validate", "fit", "check", "compare", "report")


@click.group(
    "mergemix", cls=VerbGroup, context_settings=CONTEXT_SETTINGS, no_args_is_help=False,
    help="Choose LLM mid-training data mixtures by merging per-domain experts (MergeMix), on Dagster.",
    epilog=(
        "examples:\n"
        "  mergemix run --config smoke          # the whole pipeline on the smoke config (~2 min)\n"
        "  mergemix show --config smoke         # chosen mixtures, experts vs base\n"
        "  mergemix report --stage s0           # one self-contained report, prints its path\n"
        "  mergemix <command> --help            # options and examples of one command"
    ),
)
@config_option
def mergemix() -> None:
    """The root group: only ``--config`` (any verb takes it too)."""


_verbs = {c.name: c for module in (run, results, stages, fit, check) for c in module.COMMANDS}
for _name in ORDER:
    mergemix.add_command(_verbs.pop(_name))
assert not _verbs, f"verbs missing from ORDER: {sorted(_verbs)}"


def main(argv: list[str] | None = None) -> int:
    """Run ``mergemix`` on ``argv`` (default: ``sys.argv[1:]``); the exit code.

    0 on success and for ``--help``; 2 for a usage error (printed as click prints it) or a named error;
    1 for an unexpected error (its trace goes to a log file, see ``errors``).
    """
    warnings.filterwarnings("ignore", message=".* is currently in beta")  # Dagster's BetaWarning: see definitions.py
    try:
        code = mergemix.main(args=argv, prog_name="mergemix", standalone_mode=False)
    except click.ClickException as exc:  # bad usage: nothing ran
        exc.show()
        return exc.exit_code
    except click.Abort as exc:  # Ctrl-C or EOF while parsing or running: as uncaught as it was with argparse
        raise (exc.__cause__ or exc) from None
    return int(code or 0)


def hierarchy_main(argv: list[str] | None = None) -> int:
    """``--config hierarchy [--stage s0] [--study]``
    (what ``make hierarchy`` runs): both levels of a stage, then optionally the trained study."""
    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.resources.layout import study_key
    from mergemix_dagster.runner.hierarchy import run_hierarchy, run_study
    from mergemix_dagster.runner.stage import dagster_instance, home_lock

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
