"""Trainer kinds by name: ``@register`` a ``Trainer`` subclass; ``trainer_for`` builds the configured one.

Modules of this package are discovered, so a new kind is a new module (plus its name, and its section if
it has settings of its own, in ``core/settings/trainer.py``); nothing here branches on a kind.
"""

from __future__ import annotations

import importlib
import pkgutil

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.settings import TrainerSettings
from mergemix_dagster.resources.trainers.base import Trainer

_REGISTRY: dict[str, type[Trainer]] = {}


def register(cls: type[Trainer]) -> type[Trainer]:
    """Class decorator: make a trainer available under ``cls.kind``."""
    if not cls.kind:
        raise ConfigError(f"trainer class {cls.__name__} needs a `kind`")
    existing = _REGISTRY.get(cls.kind)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ConfigError(f"two trainers of kind {cls.kind!r}: {existing.__qualname__} and {cls.__qualname__}")
    _REGISTRY[cls.kind] = cls
    return cls


def _discover() -> None:
    """Import every module of this package so their ``@register`` decorators run."""
    package = __name__.rsplit(".", 1)[0]
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def known_kinds() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def trainer_class(kind: str) -> type[Trainer]:
    """The trainer registered for ``kind``."""
    _discover()
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise ConfigError(f"no trainer of kind {kind!r}; known kinds: {', '.join(sorted(_REGISTRY))}")
    return cls


def trainer_for(settings: TrainerSettings, store=None) -> Trainer:
    """The trainer of ``settings.kind``; cluster kinds stage their files in ``store`` (S3)."""
    return trainer_class(settings.kind)(settings, store)


def trainer_identity(settings: TrainerSettings) -> dict | None:
    """What about the trainer decides the weights it produces (None for the embedded loop, whose recipe
    is already in the cache key): part of the expert's cache key and code version."""
    return trainer_class(settings.kind).identity(settings)
