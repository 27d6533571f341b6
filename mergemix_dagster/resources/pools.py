"""Dagster concurrency pools of the heavy assets, named in the settings (``trainer.pool``, ``evaluation.pool``).

A pool caps how many steps of its assets run at once across the whole instance (one GPU job per step):
``dagster instance concurrency set mergemix_training 2``, the UI (Deployment → Concurrency) or
``concurrency: {pools: {default_limit: 1}}`` in ``dagster.yaml``. Unlimited until a limit is set. A pool
decides when a step runs, never what it computes, so no cache key or version includes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mergemix_dagster.core.settings import Settings


@dataclass(frozen=True)
class AssetPools:
    training: str = "mergemix_training"  # experts, reference runs, mixture-quality runs
    evaluation: str = "mergemix_evaluation"  # candidate evaluations, DeMix rounds, validation proxies


def pools_from(settings: Settings) -> AssetPools:
    return AssetPools(training=settings.trainer.pool, evaluation=settings.evaluation.pool)
