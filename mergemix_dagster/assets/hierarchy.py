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


from dataclasses import dataclass

import dagster as dg

from mergemix_dagster.core.data.corpora import corpus_fingerprint
from mergemix_dagster.core.data.subdomains import leaf_name
from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.steps.stage_asset import stage_asset
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.assets.versions import HIERARCHY_SETTINGS_READ_BY, with_settings_versions
from mergemix_dagster.resources import layout
from mergemix_dagster.assets.corpora import CORPUS_CODE_VERSION, read_subdomain_documents, subdomain_source_fingerprint
from mergemix_dagster.steps.metadata import corpus_metadata
from mergemix_dagster.resources.artifacts import store_corpus
from mergemix_dagster.assets.experts import EXPERT_CODE_VERSION, build_expert_assets, train_or_reuse_expert
from mergemix_dagster.resources.pools import pools_from
from mergemix_dagster.steps.hierarchy_study import run_hierarchy_study
from mergemix_dagster.resources.layout import study_key
from mergemix_dagster.steps.metadata import number
from mergemix_dagster.steps.mixture_choice import publish_exports
from mergemix_dagster.core.search.choose import degenerate, effective_domains
from mergemix_dagster.steps.subdomain_search import HIERARCHY_CODE_VERSION, combine_levels, optimize_subdomains

FINE_DEGENERATE_CHECK = "subdomain_mixture_not_degenerate"


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


def _subdomain(s: Settings, leaf: str):
    domain, _, name = leaf.partition("/")
    cfg = s.domain(domain)
    return cfg, next(sub for sub in cfg.subdomains if sub.name == name)


def _weights_table(rows: list[dict]) -> dg.MetadataValue:
    columns = list(rows[0]) if rows else []
    return dg.MetadataValue.table(
        [dg.TableRecord({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string" if c in ("name", "domain", "subdomain") else "float")
                                       for c in columns]),
    )


# ------------------------------------------------------------------------------------------- assets
def build_hierarchy_assets(settings: Settings, parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    hp = build_hierarchy_partitions(settings, parts)
    same_subdomain = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="subdomain")
    same_stage = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="stage")
    subdomains_of_domain = dg.MultiPartitionMapping({
        "subdomain": dg.DimensionPartitionMapping("domain", dg.StaticPartitionMapping(hp.leaf_domain)),
        "stage": dg.DimensionPartitionMapping("stage", dg.IdentityPartitionMapping()),
    })

    @dg.asset(partitions_def=hp.subdomain, group_name="corpora", code_version=CORPUS_CODE_VERSION, kinds={"python"})
    def subdomain_corpus(
        context: dg.AssetExecutionContext, settings: PipelineSettings, store: CheckpointStore
    ) -> dg.MaterializeResult:
        """One sub-domain's documents (``code/repos``), validated, capped, stored by content hash."""
        s = settings.get()
        leaf = context.partition_key
        cfg, sub = _subdomain(s, leaf)
        docs, source = read_subdomain_documents(cfg, sub, store, seed=s.search.seed)
        fingerprint = corpus_fingerprint(docs)
        uri = store_corpus(store, docs, layout.corpus_key(leaf, fingerprint))
        store.put_json(layout.corpus_pointer(leaf),
                       {"key": layout.corpus_key(leaf, fingerprint), "fingerprint": fingerprint, "source": source},
                       overwrite=True)
        return dg.MaterializeResult(
            metadata=corpus_metadata(docs, fingerprint, uri, source)
            | {"source_fingerprint": dg.MetadataValue.text(subdomain_source_fingerprint(cfg, sub))},
            data_version=dg.DataVersion(fingerprint[:16]),
        )

    assets = [subdomain_corpus]
    if settings.search.hierarchy == "none":
        return assets

    @dg.asset(
        partitions_def=hp.subdomain_stage,
        group_name="experts",
        code_version=EXPERT_CODE_VERSION,
        deps=[dg.AssetDep("subdomain_corpus", partition_mapping=same_subdomain),
              dg.AssetDep("stage_base", partition_mapping=same_stage)],
        kinds={"pytorch"},
        pool=pools_from(settings).training,
    )
    def subdomain_expert(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """One expert per sub-domain: the stage base trained on that sub-domain alone, with the expert recipe."""
        keys = context.partition_key.keys_by_dimension
        return train_or_reuse_expert(context, settings.get(), store, database, keys["subdomain"], keys["stage"],
                                     key_of=layout.subdomain_expert_key, pointer_of=layout.subdomain_expert_pointer)

    @dg.asset(
        partitions_def=hp.split_domain_stage,
        group_name="hierarchy",
        code_version=HIERARCHY_CODE_VERSION,
        deps=[dg.AssetDep("subdomain_expert", partition_mapping=subdomains_of_domain)],
        kinds={"duckdb", "lightgbm"},
        check_specs=[dg.AssetCheckSpec(
            FINE_DEGENERATE_CHECK, asset="subdomain_mixture",
            description="The weights inside the domain are a mix a team would train on: no sub-domain holds 90 % "
            "or more (a one-capability objective over near-linear scores tends to a single sub-domain).",
        )],
    )
    def subdomain_mixture(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """The weights inside one domain: its own seed design of merges of its sub-domain experts, scored with
        lm-eval, one LightGBM per capability, the simplex search, and a verifying merge."""
        s = settings.get()
        keys = context.partition_key.keys_by_dimension
        domain, stage = keys["domain"], keys["stage"]
        payload = optimize_subdomains(context, s, store, database, domain, stage)
        rows = [{"subdomain": leaf, "weight": w, "natural": payload["prior"][leaf]}
                for leaf, w in payload["weights"].items()]
        why = degenerate(payload["weights"])
        check = dg.AssetCheckResult(
            check_name=FINE_DEGENERATE_CHECK, passed=why is None, severity=dg.AssetCheckSeverity.WARN,
            description=why or f"{effective_domains(payload['weights']):.2f} effective sub-domains (exp entropy)",
        )
        return dg.MaterializeResult(
            check_results=[check],
            metadata={
                "weights": _weights_table(rows),
                "objective": payload["objective"],
                "chosen_from": payload["chosen_from"],
                "predicted_objective": number(payload["predicted_objective"]),
                "verified_objective": number(payload["verified_objective"]),
                "candidates": dg.MetadataValue.int(payload["mixtures_measured"]),
                "candidates_scored_now": dg.MetadataValue.int(payload["scored_now"]),
                "available_tokens": dg.MetadataValue.json(payload["available_tokens"]),
                "uri": dg.MetadataValue.path(store.uri(layout.subdomain_mixture_key(stage, domain))),
            },
            data_version=dg.DataVersion(layout.content_version(payload["weights"])),
        )

    @stage_asset(
        parts.stage,
        group_name="hierarchy",
        code_version=HIERARCHY_CODE_VERSION,
        deps=["chosen_mixture", dg.AssetDep("subdomain_mixture", partition_mapping=same_stage)],
        kinds={"duckdb"},
    )
    def hierarchical_mixture(context: dg.AssetExecutionContext, s: Settings, stage: str,
                             store: CheckpointStore, database: EvaluationDatabase) -> dg.MaterializeResult:
        """Coarse × fine weights, flat over sub-domains, in ``mixture.json`` (with both levels) and the exports."""
        payload, plan = combine_levels(s, store, database, stage)
        exports = publish_exports(payload, plan, s, store, stage)
        rows = []
        for name, w in payload["weights"].items():
            domain, _, sub = name.partition("/")
            rows.append({"name": name, "coarse": payload["coarse_weights"][domain],
                         "fine": payload["fine_weights"][domain][sub] if sub else 1.0, "weight": w})
        return dg.MaterializeResult(
            metadata={
                "mixture": _weights_table(rows),
                "hierarchy": s.search.hierarchy,
                "coarse_weights": dg.MetadataValue.json({d: round(w, 4) for d, w in payload["coarse_weights"].items()}),
                "uri": dg.MetadataValue.path(store.uri(layout.mixture_key(stage))),
                "exports": dg.MetadataValue.json({fmt: str(p) for fmt, p in exports.items()}),
                **({"token_plan": dg.MetadataValue.md(plan.to_markdown())} if plan is not None else {}),
            },
            data_version=dg.DataVersion(layout.content_version(payload["weights"])),
        )

    @stage_asset(
        parts.stage,
        group_name="hierarchy",
        code_version=HIERARCHY_CODE_VERSION,
        deps=["hierarchical_mixture"],
        kinds={"pytorch", "duckdb"},
        pool=pools_from(settings).training,
    )
    def hierarchy_study(context: dg.AssetExecutionContext, s: Settings, stage: str,
                        store: CheckpointStore, database: EvaluationDatabase) -> dg.MaterializeResult:
        """Trained comparison of the paper's Table 3: ⟨MergeMix, MergeMix⟩ vs ⟨MergeMix, uniform⟩ vs
        ⟨uniform, uniform⟩, each trained from the stage base (validation reference runs, quality_seeds seeds)."""
        study = run_hierarchy_study(s, store, database, stage, log=context.log.info, context=context)
        return dg.MaterializeResult(
            metadata={
                "arms": dg.MetadataValue.md(study["markdown"]),
                "seeds": dg.MetadataValue.int(len(study["seeds"])),
                "uri": dg.MetadataValue.path(store.uri(study_key(stage))),
            },
            data_version=dg.DataVersion(layout.content_version(study["scores"])),
        )

    return assets + [subdomain_expert, subdomain_mixture, hierarchical_mixture, hierarchy_study]


# ------------------------------------------------------------------------------------------- wiring
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

