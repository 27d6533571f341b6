"""The pipeline settings as a Dagster resource, so runs show and can override which config they used."""

from __future__ import annotations

from functools import lru_cache

import dagster as dg

from mergemix_dagster.core.settings import Settings, load_settings


@lru_cache(maxsize=8)
def _load(config: str | None) -> Settings:
    return load_settings(config)


class PipelineSettings(dg.ConfigurableResource):
    """``config``: a YAML path or bundled config name; empty means ``$MERGEMIX_CONFIG`` or ``default``."""

    config: str = ""

    def get(self) -> Settings:
        return _load(self.config or None)
