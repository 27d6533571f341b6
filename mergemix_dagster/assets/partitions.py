"""Partitions, in one place: domains (static, from the settings) and stages (dynamic, added at run time).

A *stage* is a base checkpoint the mixture is optimized from: ``s0`` is the initial base; later stages are
mid-training checkpoints registered by the CLI (``mergemix stage add``) or the checkpoint sensor.
Experts are partitioned by domain × stage; everything downstream of experts by stage alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from mergemix_dagster.core.settings import Settings

STAGE_PARTITIONS_NAME = "stage"
stage_partitions = dg.DynamicPartitionsDefinition(name=STAGE_PARTITIONS_NAME)

#: Dependency of a stage-partitioned asset on domain×stage experts: all domains of the same stage.
SAME_STAGE = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="stage")
#: Dependency of domain×stage experts on a domain-partitioned asset: the same domain.
SAME_DOMAIN = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="domain")


@dataclass(frozen=True)
class PipelinePartitions:
    domain: dg.StaticPartitionsDefinition
    stage: dg.DynamicPartitionsDefinition
    domain_stage: dg.MultiPartitionsDefinition


def build_partitions(settings: Settings) -> PipelinePartitions:
    domain = dg.StaticPartitionsDefinition(list(settings.domain_names))
    return PipelinePartitions(
        domain=domain,
        stage=stage_partitions,
        domain_stage=dg.MultiPartitionsDefinition({"domain": domain, "stage": stage_partitions}),
    )


def expert_partition_key(domain: str, stage: str) -> dg.MultiPartitionKey:
    """The CLI spelling of this key is ``domain|stage`` (dimensions in alphabetical order)."""
    return dg.MultiPartitionKey({"domain": domain, "stage": stage})
