"""The validation study of a stage (issue 4): does the merged proxy rank mixtures like real training does?

validation_design → validation_proxies, reference_models → proxy_fidelity, mixture_quality,
task_vector_diagnostics → validation_report. All partitioned by stage, run by ``validate_job``
(``mergemix validate``); none of it is on the path of ``mergemix run``, because reference runs cost
M full trainings. Definitions of every figure: ``core/evaluation/fidelity.py`` and docs/results.md; the work
behind the assets: ``steps/validation_study.py`` and ``steps/validation_report.py``.
"""

import dagster as dg

from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.assets.validation.design import build_design_assets
from mergemix_dagster.assets.validation.fidelity import build_fidelity_assets
from mergemix_dagster.assets.validation.reference_models import build_reference_model_assets
from mergemix_dagster.assets.validation.report import build_study_report_assets
from mergemix_dagster.resources.pools import AssetPools


def build_validation_assets(parts: PipelinePartitions, pools: AssetPools = AssetPools()) -> list[dg.AssetsDefinition]:
    return [
        *build_design_assets(parts, pools),  # validation_design, validation_proxies
        *build_reference_model_assets(parts, pools),  # reference_models
        *build_fidelity_assets(parts, pools),  # proxy_fidelity, mixture_quality
        *build_study_report_assets(parts),  # task_vector_diagnostics, validation_report
    ]


__all__ = ["build_validation_assets"]
