"""Which settings file: a path, or the name of a bundled config; read and validated into ``Settings``."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.settings.pipeline import Settings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def resolve_config_path(name_or_path: str | None = None) -> Path:
    """A path, or the name of a bundled config (``default``, ``smoke``)."""
    value = name_or_path or os.environ.get("MERGEMIX_CONFIG") or "default"
    path = Path(value).expanduser()
    if path.is_file():
        return path
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
