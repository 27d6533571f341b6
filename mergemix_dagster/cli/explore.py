"""``mergemix explore``: one offline HTML page to explore the mixtures of a fit folder or of a finished stage.

Why its own module: it reads either a ``mergemix fit --out`` folder (no settings, no store) or a stage (the
store and DuckDB); the page itself is built in ``core/explore``, the stage's inputs in ``steps/explorer``.
"""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from mergemix_dagster.cli.options import verb
from mergemix_dagster.core.errors import MergeMixError


@verb(
    "explore",
    "write one offline HTML page with a slider per domain and every capability's prediction; print its path",
    "  mergemix explore --fit fit/                 # -> fit/explorer.html\n"
    "  mergemix explore --stage s0                 # -> $MERGEMIX_HOME/reports/s0/explorer.html\n"
    "  mergemix explore --stage s0 -o s0.html --open\n"
    "the page needs no network: its data, script and style are inline (docs/fit.md, 'Exploring')",
)
@click.option("--fit", "fit_dir", metavar="DIR", default="", help="a folder written by `mergemix fit --out DIR`")
@click.option("--stage", metavar="STAGE", default="", help="a finished stage (its surrogates, measured and chosen mixtures)")
@click.option("-o", "--output", metavar="OUTPUT", default="",
              help="file to write (default: DIR/explorer.html, or <home>/reports/<stage>/explorer.html)")
@click.option("--open", "open_page", is_flag=True, help="also open the page in the default browser")
def explore(config: str, fit_dir: str, stage: str, output: str, open_page: bool) -> int:
    if bool(fit_dir) == bool(stage):
        raise MergeMixError("give exactly one of --fit DIR or --stage STAGE")
    if fit_dir:
        from mergemix_dagster.core.explore.page import write_page
        from mergemix_dagster.core.explore.sources import fit_inputs

        path = write_page(fit_inputs(Path(fit_dir)), Path(output) if output else Path(fit_dir) / "explorer.html")
    else:
        from mergemix_dagster.cli.common import load
        from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
        from mergemix_dagster.steps.explorer import write_stage_explorer

        settings = load(config)
        store = CheckpointStore(root=settings.store_uri)
        database = EvaluationDatabase(path=settings.database_path, store_root=settings.store_uri)
        path = write_stage_explorer(settings, store, database, stage, Path(output) if output else None)
    print(path)
    if open_page:
        webbrowser.open(path.resolve().as_uri())
    return 0


COMMANDS: list[click.Command] = [explore]
