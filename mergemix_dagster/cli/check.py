"""``mergemix check``: every problem of a config at once, before anything trains.

Why its own verb: ``mergemix run`` stops at the first problem (``run.preflight``); ``check`` lists them all,
each a named error on one line, and with ``--full`` re-reads every stored checkpoint against its hash.
"""

from __future__ import annotations

import click

from mergemix_dagster.cli.common import database_copy, load, registered_stages
from mergemix_dagster.cli.options import verb
from mergemix_dagster.core.errors import MergeMixError
from mergemix_dagster.resources import layout


@verb(
    "check", "check the config against the world (paths, base, tokenizer, tasks) before training",
    "  mergemix check\n  mergemix check --config my.yaml --full",
)
@click.option("--full", is_flag=True, help="also verify every stored checkpoint's full content hash and re-hash every "
              "local corpus file (finds edits that kept the size and mtime)")
@click.option("--summary/--no-summary", default=True, show_default=True,
              help="print what was checked: domains (documents, estimated tokens), base, benchmarks per capability")
def check(config: str, full: bool, summary: bool) -> int:
    """Every config problem at once, each a named error and one line; exit 2 when there is any; before them, a
    short table of what was checked (``core/check_summary.py``: token counts there are estimates)."""
    from mergemix_dagster.core.preflight import check_settings, check_validation_settings
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.resources.artifacts import missing_checkpoints
    from mergemix_dagster.resources.content_hash import changed_sources

    settings = load(config)
    report = check_settings(settings, registered_stages(settings), database_copy(settings))
    report.warnings += [f"{type(e).__name__}: {e} (only `mergemix validate` needs it; `run` does not stop on it)"
                        for e in check_validation_settings(settings)]
    report.warnings += missing_checkpoints(CheckpointStore(root=settings.store_uri))
    if full and report.ok:
        report.errors += verify_stored_checkpoints(settings)
        report.warnings += changed_sources(settings)
    if summary:
        from mergemix_dagster.core.check_summary import check_summary

        print("\n".join(check_summary(settings).lines()))
    for line in report.lines():
        print(f"  {line}")
    print(f"mergemix check: {'OK' if report.ok else f'{len(report.errors)} problem(s)'}"
          f"{f', {len(report.warnings)} warning(s)' if report.warnings else ''}")
    return 0 if report.ok else 2


def verify_stored_checkpoints(settings) -> list[MergeMixError]:
    """Every current base and expert checkpoint against its full recorded hash (reads every byte)."""
    import os

    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.resources.artifacts import checkpoint_dir

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


COMMANDS: list[click.Command] = [check]
