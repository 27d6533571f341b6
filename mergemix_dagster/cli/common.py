"""Helpers more than one verb group needs: settings and definitions of a config, the asset-check summary,
and the stages registered in the store.

Why here and not in runner/: they print for a terminal or read the store the way ``mergemix`` reports it;
the runner drives Dagster and prints nothing of its own.
"""

from __future__ import annotations

from pathlib import Path

from mergemix_dagster.resources import layout


def load(config: str):
    """The settings of ``--config`` (``""``: ``$MERGEMIX_CONFIG``, else the embedded default)."""
    from mergemix_dagster.core.settings import load_settings

    return load_settings(config or None)


def settings_and_defs(config: str):
    """The settings and the same Dagster definitions the UI loads for them."""
    from mergemix_dagster.definitions import build_definitions

    settings = load(config)
    return settings, build_definitions(settings, config=config)


def print_checks(instance, stage: str) -> None:
    """``Asset checks of stage ...: N passed, M failed`` and one line per failed check."""
    from mergemix_dagster.runner.checks import latest_check_results

    results = latest_check_results(instance, stage)
    if not results:
        return
    bad = [r for r in results if not r.passed]
    print(f"\nAsset checks of stage {stage!r}: {len(results) - len(bad)} passed, {len(bad)} failed")
    for r in bad:
        print(f"  {r.severity:<5} {r.asset}:{r.check}  {r.description}")


def registered_stages(settings) -> dict[str, str]:
    """stage -> checkpoint of every stage registered in the store (``stage add``, the sensor)."""
    from mergemix_dagster.resources import CheckpointStore

    store = CheckpointStore(root=settings.store_uri)
    if not store.is_s3 and not Path(settings.store_uri).is_dir():
        return {}
    keys = [k for k in store.list_keys(layout.STAGES_PREFIX) if k.endswith("/registration.json")]
    records = {k.split("/")[1]: store.get_json(k) for k in keys}
    return {name: r.get("checkpoint", "") for name, r in records.items() if not r.get("removed_at")}  # stage remove


def database_copy(settings) -> dict:
    """What the store holds of the DuckDB database (``resources/index.py``), for ``check_settings``."""
    from mergemix_dagster.resources import CheckpointStore, index

    store = CheckpointStore(root=settings.store_uri)
    if not store.is_s3 and not Path(settings.store_uri).is_dir():
        return {}
    return index.copy_summary(store, settings.database_path)
