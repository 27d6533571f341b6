"""Partitions of the sub-domain family: sub-domains (``code/repos``), split domains, and each crossed with stages.

A sub-domain's key is its flat mixture name ``code/repos`` in its own static ``subdomain`` dimension, crossed
with ``stage`` for experts; the fine search is keyed ``domain × stage`` over the split domains only.
"""

from dataclasses import dataclass

import dagster as dg

from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.core.data.subdomains import leaf_name
from mergemix_dagster.core.settings import Settings

#: Dependency of a sub-domain × stage asset on a sub-domain-partitioned one: the same sub-domain.
SAME_SUBDOMAIN = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="subdomain")


@dataclass(frozen=True)
class HierarchyPartitions:
    subdomain: dg.StaticPartitionsDefinition  # leaves of every split domain: code/repos, ...
    split_domain: dg.StaticPartitionsDefinition  # domains that list sub-domains
    subdomain_stage: dg.MultiPartitionsDefinition
    split_domain_stage: dg.MultiPartitionsDefinition
    leaf_domain: dict[str, str]  # code/repos -> code


def build_hierarchy_partitions(settings: Settings, parts: PipelinePartitions) -> HierarchyPartitions:
    leaf_domain = {leaf_name(d.name, sub.name): d.name for d in settings.domains for sub in d.subdomains}
    subdomain = dg.StaticPartitionsDefinition(list(leaf_domain))
    split = dg.StaticPartitionsDefinition(list(settings.split_domains))
    return HierarchyPartitions(
        subdomain=subdomain,
        split_domain=split,
        subdomain_stage=dg.MultiPartitionsDefinition({"stage": parts.stage, "subdomain": subdomain}),
        split_domain_stage=dg.MultiPartitionsDefinition({"domain": split, "stage": parts.stage}),
        leaf_domain=leaf_domain,
    )


def subdomain_expert_partition_key(leaf: str, stage: str) -> dg.MultiPartitionKey:
    """CLI spelling ``stage|code/repos`` (dimensions in alphabetical order)."""
    return dg.MultiPartitionKey({"stage": stage, "subdomain": leaf})


def split_domain_partition_key(domain: str, stage: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"domain": domain, "stage": stage})


def subdomains_of_domain(hp: HierarchyPartitions) -> dg.MultiPartitionMapping:
    """Dependency of a split domain × stage asset on sub-domain × stage ones: that domain's sub-domains."""
    return dg.MultiPartitionMapping({
        "subdomain": dg.DimensionPartitionMapping("domain", dg.StaticPartitionMapping(hp.leaf_domain)),
        "stage": dg.DimensionPartitionMapping("stage", dg.IdentityPartitionMapping()),
    })
