"""Sub-domains in the pipeline and the hierarchical search (MergeMix §3.5), as a separate asset family.

```
subdomain_corpus[code/repos] ─► subdomain_expert[code/repos|s0] ─► subdomain_mixture[code|s0] ─┐
                                                                    (bottom_up) ▼               │
                                   domain_corpus[code] ─► expert_checkpoint[code|s0] ─► … ─► chosen_mixture[s0]
                                                                                                 ▼
                                                                          hierarchical_mixture[s0]
```

Partition keys (docs/hierarchy.md explains the choice): a sub-domain's key is its flat mixture name
``code/repos`` in its own static ``subdomain`` dimension, crossed with ``stage`` for experts; the fine search
is keyed ``domain × stage`` over the split domains only. Every key names one thing the UI can show stale.
Flat configs define none of these assets, so their asset keys and cache keys are unchanged.
"""


import dagster as dg

from mergemix_dagster.assets.experts import build_expert_assets
from mergemix_dagster.assets.hierarchy.combined import build_combined_assets
from mergemix_dagster.assets.hierarchy.partitions import (
    HierarchyPartitions,
    build_hierarchy_partitions,
    split_domain_partition_key,
    subdomain_expert_partition_key,
)
from mergemix_dagster.assets.hierarchy.subdomains import build_subdomain_corpus_asset, build_subdomain_search_assets
from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.assets.versions import HIERARCHY_SETTINGS_READ_BY, with_settings_versions
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources.pools import pools_from


def build_hierarchy_assets(settings: Settings, parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    """The sub-domain corpora always (so they can be inspected); the rest only when a hierarchy is searched."""
    hp = build_hierarchy_partitions(settings, parts)
    assets = [build_subdomain_corpus_asset(hp)]
    if settings.search.hierarchy == "none":
        return assets
    pools = pools_from(settings)
    return assets + build_subdomain_search_assets(hp, pools) + build_combined_assets(parts, pools)


HIERARCHY_JOB_ASSETS = {
    "subdomain_corpora_job": ("subdomain_corpus", "One sub-domain corpus."),
    "subdomain_experts_job": ("subdomain_expert", "One sub-domain expert (sub-domain × stage)."),
    "subdomain_mixture_job": ("subdomain_mixture", "The weights inside one split domain (domain × stage)."),
    "hierarchy_job": ("hierarchical_mixture", "Coarse × fine weights, flat over sub-domains, of one stage."),
    "hierarchy_study_job": ("hierarchy_study", "Trained ⟨MergeMix, MergeMix⟩ vs ⟨MergeMix, uniform⟩ vs ⟨uniform, uniform⟩."),
}


def with_hierarchy(
    assets: list[dg.AssetsDefinition], jobs: list, parts: PipelinePartitions, settings: Settings
) -> tuple[list[dg.AssetsDefinition], list]:
    """The pipeline's assets and jobs plus the sub-domain family; unchanged for a config without sub-domains.

    Bottom-up, a split domain's ``expert_checkpoint`` is the consolidated merge, so it depends on that
    domain's ``subdomain_mixture``.
    """
    if not settings.split_domains:
        return assets, jobs
    new = build_hierarchy_assets(settings, parts)
    if settings.search.hierarchy == "bottom_up":
        same_split_domain = dg.MultiPartitionMapping({
            "domain": dg.DimensionPartitionMapping(
                "domain", dg.StaticPartitionMapping({d: d for d in settings.split_domains})),
            "stage": dg.DimensionPartitionMapping("stage", dg.IdentityPartitionMapping()),
        })
        consolidated = dg.AssetDep("subdomain_mixture", partition_mapping=same_split_domain)
        assets = [a for a in assets if dg.AssetKey("expert_checkpoint") not in a.keys]
        assets += build_expert_assets(parts, pools_from(settings), consolidated=consolidated)
    names = {a.key.to_user_string() for a in new}
    new_jobs = [dg.define_asset_job(job, selection=[asset], description=text)
                for job, (asset, text) in HIERARCHY_JOB_ASSETS.items() if asset in names]
    return [*assets, *with_settings_versions(new, settings, HIERARCHY_SETTINGS_READ_BY)], [*jobs, *new_jobs]


__all__ = [
    "HierarchyPartitions", "build_hierarchy_partitions", "subdomain_expert_partition_key",
    "split_domain_partition_key", "build_hierarchy_assets", "HIERARCHY_JOB_ASSETS", "with_hierarchy",
]
