"""Jobs: one per partitions definition, because a Dagster run cannot mix assets partitioned differently.

The full pipeline for a stage is these jobs in order (``runner/plan.py`` decides which partitions run):
foundation (unpartitioned) → corpora (per domain) → stage_base (per stage) → experts (per domain × stage)
→ optimize (per stage: candidates, evaluations, surrogates, chosen mixture).
"""

from __future__ import annotations

import dagster as dg

from mergemix_dagster.assets.groups import (
    CORPORA_ASSETS,
    EXPERT_ASSETS,
    FOUNDATION_ASSETS,
    OPTIMIZE_ASSETS,
    STAGE_BASE_ASSETS,
    VALIDATION_ASSETS,
)


foundation_job = dg.define_asset_job(
    "foundation_job", selection=list(FOUNDATION_ASSETS), description="General corpus and tokenizer."
)
corpora_job = dg.define_asset_job("corpora_job", selection=list(CORPORA_ASSETS), description="One domain corpus.")
stage_base_job = dg.define_asset_job(
    "stage_base_job", selection=list(STAGE_BASE_ASSETS), description="The base checkpoint of one stage."
)
experts_job = dg.define_asset_job(
    "experts_job", selection=list(EXPERT_ASSETS), description="One expert (domain × stage)."
)
optimize_job = dg.define_asset_job(
    "optimize_job",
    selection=list(OPTIMIZE_ASSETS),
    description="Candidates, evaluations, surrogates, DeMix rounds and the chosen mixture of one stage.",
)

validate_job = dg.define_asset_job(
    "validate_job",
    selection=list(VALIDATION_ASSETS),
    description="Proxy fidelity study of one stage: reference runs on real mixtures vs merged proxies.",
)

report_job = dg.define_asset_job(
    "report_job", selection=["stage_comparison"], description="Compare the chosen mixtures across stages."
)

ALL_JOBS = [foundation_job, corpora_job, stage_base_job, experts_job, optimize_job, validate_job, report_job]
