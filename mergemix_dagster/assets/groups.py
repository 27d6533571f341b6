"""Which assets run together: one job per partitions definition, because a Dagster run cannot mix assets
partitioned differently. ``defs/jobs.py`` makes the jobs; the runner plans in these layers."""


FOUNDATION_ASSETS = ("general_corpus", "base_tokenizer")
CORPORA_ASSETS = ("domain_corpus",)
STAGE_BASE_ASSETS = ("stage_base",)
EXPERT_ASSETS = ("expert_checkpoint",)
OPTIMIZE_ASSETS = (
    "merge_candidates", "candidate_evaluations", "capability_surrogates", "search_rounds", "chosen_mixture"
)
VALIDATION_ASSETS = (
    "validation_design",
    "validation_proxies",
    "reference_models",
    "proxy_fidelity",
    "mixture_quality",
    "task_vector_diagnostics",
    "validation_report",
)
