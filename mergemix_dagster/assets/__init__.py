"""Software-defined assets, one module per pipeline stage: corpora → base → experts → candidates →
evaluations → surrogates → mixture; the validation study of a stage on the side."""


import dagster as dg

from ..partitions import PipelinePartitions
from .base import build_base_assets
from .candidates import build_candidate_assets
from .corpora import build_corpus_assets
from .evaluations import build_evaluation_assets
from .experts import build_expert_assets
from .mixture import build_mixture_assets
from .pools import AssetPools
from .report import build_report_assets
from .rounds import build_round_assets
from .surrogates import build_surrogate_assets
from .validation import build_validation_assets


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
