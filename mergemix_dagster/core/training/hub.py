"""Hugging Face offline mode, as a setting (``model.offline``) rather than something forced at import.

Offline means what Hugging Face users know: ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` /
``TRANSFORMERS_OFFLINE`` are set, so a hub id resolves only from the local cache and nothing is requested
from the hub. The libraries read those variables at import, so when they are already imported their
flags are set too. Online (``offline: false``) leaves the environment alone: a user's own
``HF_HUB_OFFLINE=1`` still applies.
"""

from __future__ import annotations

import os
import sys

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def set_offline(offline: bool) -> None:
    """Make this process offline for the Hugging Face hub (``offline``); ``False`` changes nothing."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if not offline:
        return
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
        if hasattr(datasets.config, "HF_DATASETS_OFFLINE"):
            datasets.config.HF_DATASETS_OFFLINE = True


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


__all__ = ["OFFLINE_VARIABLES", "set_offline", "is_offline"]
