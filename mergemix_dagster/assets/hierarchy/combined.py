"""Coarse × fine: the flat mixture over sub-domains of a stage, and the trained comparison of the two levels."""

import dagster as dg

from mergemix_dagster.assets.partitions import SAME_STAGE, PipelinePartitions
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.layout import study_key
from mergemix_dagster.resources.pools import AssetPools
from mergemix_dagster.steps.hierarchy_study import run_hierarchy_study
from mergemix_dagster.steps.metadata import weights_table
from mergemix_dagster.steps.mixture_choice import publish_exports
from mergemix_dagster.steps.stage_asset import stage_asset
from mergemix_dagster.steps.subdomain_search import HIERARCHY_CODE_VERSION, combine_levels


def build_combined_assets(parts: PipelinePartitions, pools: AssetPools) -> list[dg.AssetsDefinition]:
    @stage_asset(
        parts.stage,
        group_name="hierarchy",
        code_version=HIERARCHY_CODE_VERSION,
        deps=["chosen_mixture", dg.AssetDep("subdomain_mixture", partition_mapping=SAME_STAGE)],
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
                "mixture": weights_table(rows),
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
        pool=pools.training,
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

    return [hierarchical_mixture, hierarchy_study]
