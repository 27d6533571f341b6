"""Helpers more than one verb group needs: settings and definitions of a config, the asset-check summary,
and the stages registered in the store.

Why here and not in runner/: they print for a terminal or read the store the way ``mergemix`` reports it;
the runner drives Dagster and prints nothing of its own.
"""

from __future__ import annotations

from pathlib import Path

from mergemix_dagster.resources import layout


def config_path(config: str) -> Path:
    """The file of ``--config`` (``""``: ``$MERGEMIX_CONFIG``, else the config the home records, else the
    embedded default)."""
    from mergemix_dagster.core.settings import resolve_config_path

    return resolve_config_path(config or None)


def load(config: str):
    """The settings of ``--config`` (see ``config_path``); a home that holds another project's results is a
    named error (``check_project``), not a silent switch."""
    from mergemix_dagster.core.settings import check_project, load_settings

    path = config_path(config)
    settings = load_settings(str(path))
    check_project(settings, path)
    return settings


def settings_and_defs(config: str):
    """The settings and the same Dagster definitions the UI loads for them."""
    from mergemix_dagster.definitions import build_definitions

    settings = load(config)
    return settings, build_definitions(settings, config=str(config_path(config)))


def record(settings, config: str, by: str) -> None:
    """The home now belongs to this config: later commands without ``--config`` use it."""
    from mergemix_dagster.core.settings import record_project

    record_project(settings, config_path(config), by)


def hint_command(settings, config: str, verb: str) -> str:
    """``verb`` as a command that works from any directory: absolute executable, home and config."""
    import shlex
    import sys

    from mergemix_dagster.core.settings import config_name

    exe = Path(sys.executable).parent / "mergemix"
    program = shlex.quote(str(exe)) if exe.is_file() else f"{shlex.quote(sys.executable)} -m mergemix_dagster.cli"
    return (f"MERGEMIX_HOME={shlex.quote(str(settings.home_path))} {program} {verb} "
            f"--config {shlex.quote(config_name(config_path(config)))}")


def ui_command(settings, config: str, dagster_home: str) -> str:
    """The Dagster UI on this home and project, from any directory (``dg dev`` needs the checkout; this is
    the same UI)."""
    import shlex
    import sys

    from mergemix_dagster.core.settings import config_name

    exe = Path(sys.executable).parent / "dagster"
    program = shlex.quote(str(exe)) if exe.is_file() else "dagster"
    return (f"DAGSTER_HOME={shlex.quote(str(Path(dagster_home).absolute()))} "
            f"MERGEMIX_HOME={shlex.quote(str(settings.home_path))} "
            f"MERGEMIX_CONFIG={shlex.quote(config_name(config_path(config)))} {program} dev -m mergemix_dagster.definitions")


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
