"""The sub-domain assets: each sub-domain's corpus and expert, and the search for the weights inside a domain."""

import dagster as dg

from mergemix_dagster.assets.corpora import CORPUS_CODE_VERSION, read_subdomain_documents, subdomain_source_fingerprint
from mergemix_dagster.assets.experts import EXPERT_CODE_VERSION, train_or_reuse_expert
from mergemix_dagster.assets.hierarchy.partitions import SAME_SUBDOMAIN, HierarchyPartitions, subdomains_of_domain
from mergemix_dagster.assets.partitions import SAME_STAGE
from mergemix_dagster.core.data.corpora import corpus_fingerprint
from mergemix_dagster.core.search.choose import degenerate, effective_domains
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.artifacts import store_corpus
from mergemix_dagster.resources.pools import AssetPools
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.steps.metadata import corpus_metadata, number, weights_table
from mergemix_dagster.steps.subdomain_search import SUBDOMAIN_CHOICE_CODE_VERSION, optimize_subdomains

FINE_DEGENERATE_CHECK = "subdomain_mixture_not_degenerate"


def _subdomain(s: Settings, leaf: str):
    """The domain settings and the sub-domain settings of a leaf ``code/repos``."""
    domain, _, name = leaf.partition("/")
    cfg = s.domain(domain)
    return cfg, next(sub for sub in cfg.subdomains if sub.name == name)


def build_subdomain_corpus_asset(hp: HierarchyPartitions) -> dg.AssetsDefinition:
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

    return subdomain_corpus


def build_subdomain_search_assets(hp: HierarchyPartitions, pools: AssetPools) -> list[dg.AssetsDefinition]:
    """Sub-domain experts and the weights inside each split domain (only when a hierarchy is searched)."""

    @dg.asset(
        partitions_def=hp.subdomain_stage,
        group_name="experts",
        code_version=EXPERT_CODE_VERSION,
        deps=[dg.AssetDep("subdomain_corpus", partition_mapping=SAME_SUBDOMAIN),
              dg.AssetDep("stage_base", partition_mapping=SAME_STAGE)],
        kinds={"pytorch"},
        pool=pools.training,
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
        code_version=SUBDOMAIN_CHOICE_CODE_VERSION,
        deps=[dg.AssetDep("subdomain_expert", partition_mapping=subdomains_of_domain(hp))],
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
                "weights": weights_table(rows),
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

    return [subdomain_expert, subdomain_mixture]
