"""Which settings file: a path, the name of a bundled config, or the one the home was run with; read and
validated into ``Settings``.

The home remembers its project: ``mergemix run`` (and ``validate``, ``stage add``, ``midtrain``) write
``<home>/project.json`` naming the config they ran. A later command given no config (no ``--config``, no
``$MERGEMIX_CONFIG``) loads that one, not the embedded default, so ``report``, ``show``, ``export`` and the
UI show the project that ran; a command given another config for the same home is refused by name
(``check_project``) instead of silently reading one project's results with another's settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import yaml
from pydantic import ValidationError

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.settings.pipeline import DEFAULT_HOME, Settings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
PROJECT_FILE = "project.json"


def default_home() -> Path:
    """The home when a config does not name one: ``$MERGEMIX_HOME``, else ``./.mergemix``."""
    return Path(os.environ.get("MERGEMIX_HOME", DEFAULT_HOME)).expanduser().resolve()


def config_name(path: Path) -> str:
    """How a config is recorded and compared: a bundled config by its name (it moves with the package), any
    other file by its absolute path."""
    path = Path(path).expanduser().resolve()
    return path.stem if path.parent == CONFIG_DIR and path.suffix == ".yaml" else str(path)


def recorded_project(home: Path) -> dict | None:
    """What ``<home>/project.json`` records (``config``, ``config_sha256``, ``by``, ``at``), or None."""
    path = Path(home) / PROJECT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("config"), str):
            raise ValueError("no `config` in it")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a project record ({type(exc).__name__}: {exc}); delete it and pass "
                          "--config (or MERGEMIX_CONFIG)") from exc
    return record


def resolve_config_path(name_or_path: str | None = None) -> Path:
    """A path, or the name of a bundled config (``default``, ``smoke``); with neither (nor
    ``$MERGEMIX_CONFIG``), the config the home records, else the embedded default."""
    value = name_or_path or os.environ.get("MERGEMIX_CONFIG")
    if not value:
        record = recorded_project(default_home())
        if record is None:
            value = "default"
        else:
            value = record["config"]
            if not (CONFIG_DIR / f"{value}.yaml").is_file() and not Path(value).is_file():
                raise ConfigError(
                    f"home {default_home()} was run with config {value}, which no longer exists "
                    f"({default_home() / PROJECT_FILE}); pass --config (or MERGEMIX_CONFIG) with that project's file"
                )
    path = Path(value).expanduser()
    if path.is_file():
        return path.resolve()
    bundled = CONFIG_DIR / f"{value}.yaml"
    if bundled.is_file():
        return bundled
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config {value!r} is neither a file nor a bundled config ({known})")


def load_settings(name_or_path: str | None = None) -> Settings:
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid settings:\n{exc}") from exc


def check_project(settings: Settings, config: Path) -> None:
    """Refuse a home that records another project's config (a named error with both names and the fixes)."""
    record = recorded_project(settings.home_path)
    if record is not None and record["config"] != config_name(config):
        raise ConfigError(
            f"home {settings.home_path} holds the results of project {record['config']} (recorded by "
            f"`{record.get('by', 'mergemix run')}` in {settings.home_path / PROJECT_FILE}), not of config "
            f"{config_name(config)}: pass --config {record['config']} to read them, or give this project its own "
            "home (`home:` in its YAML or MERGEMIX_HOME); delete that file only to hand the home to the new project"
        )


def record_project(settings: Settings, config: Path, by: str) -> None:
    """Write ``<home>/project.json``: the config ``by`` (a command) ran, so later commands use it."""
    config = Path(config)
    record = {"config": config_name(config), "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
              "by": by, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    settings.home_path.mkdir(parents=True, exist_ok=True)
    tmp = settings.home_path / f".{PROJECT_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(settings.home_path / PROJECT_FILE)
