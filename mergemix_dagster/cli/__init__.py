"""``mergemix``: run the pipeline for a stage, register stages, show chosen mixtures.

Everything here goes through the same Dagster definitions and instance the UI shows. One module per verb
group, so a newcomer finds a verb by its name: ``run`` (run, validate), ``stages`` (stage add, midtrain),
``results`` (show, export, compare, report), ``fit``, ``explore``, ``check``; ``options`` holds what the verbs share
(``--config`` before or after the verb, ``--stage``, ``--log-level``, help with examples), ``errors`` how a
failure ends (a named error, exit code 2; anything else, 1), ``common`` the helpers several verbs print with.
This module only assembles the ``mergemix`` group and keeps ``main`` for the console script and the tests.
"""

from __future__ import annotations

import warnings

import click

from mergemix_dagster.cli import check, explore, fit, results, run, stages
from mergemix_dagster.cli.options import CONTEXT_SETTINGS, VerbGroup, config_option

ORDER = ("run", "show", "export", "stage", "midtrain", "validate", "fit", "explore", "check", "compare", "report")


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


_verbs = {c.name: c for module in (run, results, stages, fit, explore, check) for c in module.COMMANDS}
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
