"""``@stage_asset``: the one shape most assets share, written once.

Most assets are partitioned by stage and read the settings, the checkpoint store and the evaluation database.
Spelled out, each began with the same decorator arguments, a four-resource signature and two lines turning
the resources into ``s`` and ``stage``. Here the asset's function receives those directly; Dagster still
sees the usual signature (so resources, name and description are what they were).
"""

# no ``from __future__ import annotations``: Dagster reads the compute function's annotations as real types
import inspect
from typing import Callable

import dagster as dg

from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.settings import PipelineSettings

#: ``(context, s, stage, store, database)`` -> MaterializeResult, or a generator of results and check results
StageWork = Callable[..., object]


def stage_asset(
    partitions_def: dg.PartitionsDefinition, *, group_name: str, code_version: str, **asset_args
) -> Callable[[StageWork], dg.AssetsDefinition]:
    """``@dg.asset(partitions_def=..., group_name=..., code_version=..., **asset_args)`` whose function is
    called as ``work(context, s, stage, store, database)``: ``s`` the settings, ``stage`` the partition key.
    The asset takes the work function's name and docstring."""

    def decorate(work: StageWork) -> dg.AssetsDefinition:
        if inspect.isgeneratorfunction(work):  # an asset that yields its result and its check results

            def compute(
                context: dg.AssetExecutionContext,
                settings: PipelineSettings,
                store: CheckpointStore,
                database: EvaluationDatabase,
            ):
                yield from work(context, settings.get(), context.partition_key, store, database)

        else:

            def compute(
                context: dg.AssetExecutionContext,
                settings: PipelineSettings,
                store: CheckpointStore,
                database: EvaluationDatabase,
            ) -> dg.MaterializeResult:
                return work(context, settings.get(), context.partition_key, store, database)

        compute.__name__ = compute.__qualname__ = work.__name__
        compute.__doc__ = work.__doc__
        return dg.asset(
            partitions_def=partitions_def, group_name=group_name, code_version=code_version, **asset_args
        )(compute)

    return decorate


__all__ = ["stage_asset", "StageWork"]
