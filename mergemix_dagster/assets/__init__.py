"""Software-defined assets, one module per pipeline stage: corpora → base → experts → candidates →
evaluations → surrogates → rounds → mixture, then the cross-stage comparison; beside them the validation study
(``validation/``) and the sub-domain family (``hierarchy/``). ``partitions``, ``groups`` (which assets run
together) and ``versions`` (settings in code versions) say how Dagster sees them."""


import dagster as dg

from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.assets.base import build_base_assets
from mergemix_dagster.assets.candidates import build_candidate_assets
from mergemix_dagster.assets.corpora import build_corpus_assets
from mergemix_dagster.assets.evaluations import build_evaluation_assets
from mergemix_dagster.assets.experts import build_expert_assets
from mergemix_dagster.assets.mixture import build_mixture_assets
from mergemix_dagster.resources.pools import AssetPools
from mergemix_dagster.assets.comparison import build_report_assets
from mergemix_dagster.assets.rounds import build_round_assets
from mergemix_dagster.assets.surrogates import build_surrogate_assets
from mergemix_dagster.assets.validation import build_validation_assets


def build_assets(parts: PipelinePartitions, pools: AssetPools = AssetPools()) -> list[dg.AssetsDefinition]:
    """``pools``: the concurrency pools of the training and evaluation assets (``pools_from(settings)``)."""
    return [
        *build_corpus_assets(parts),
        *build_base_assets(parts),
        *build_expert_assets(parts, pools),
        *build_candidate_assets(parts),
        *build_evaluation_assets(parts, pools),
        *build_surrogate_assets(parts),
        *build_round_assets(parts, pools),
        *build_mixture_assets(parts),
        *build_report_assets(parts),
        *build_validation_assets(parts, pools),
    ]
