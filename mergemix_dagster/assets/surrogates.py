"""Surrogate models of a stage: one LightGBM regressor per capability, α -> capability score."""


import tempfile
from pathlib import Path

import dagster as dg
import numpy as np

from mergemix_dagster.core.search.surrogate import CapabilitySurrogates
from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.steps.stage_asset import stage_asset
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import layout
from mergemix_dagster.steps.search_inputs import measured_table

SURROGATES_CODE_VERSION = "1"
SURROGATE_CV_CHECK = "surrogate_cv_quality"


def cv_check(s: Settings, surrogates: CapabilitySurrogates) -> dg.AssetCheckResult:
    """Warn when a capability's out-of-fold Spearman ρ is below ``validation.min_surrogate_cv_spearman``
    (or undefined): the search then trusts a regressor that cannot rank held-out candidates."""
    threshold = s.validation.min_surrogate_cv_spearman
    poor = {
        q.capability: q.spearman
        for q in surrogates.quality.values()
        if not (np.isfinite(q.spearman) and q.spearman >= threshold)
    }
    return dg.AssetCheckResult(
        check_name=SURROGATE_CV_CHECK,
        passed=not poor,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"out-of-fold Spearman ρ below {threshold:.2f} for {sorted(poor)}" if poor
            else f"every capability's out-of-fold Spearman ρ ≥ {threshold:.2f}"
        ),
        metadata={f"cv_spearman_{q.capability}": float(q.spearman) for q in surrogates.quality.values()},
    )


def build_surrogate_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @stage_asset(
        parts.stage,
        group_name="search",
        code_version=SURROGATES_CODE_VERSION,
        deps=["candidate_evaluations"],
        kinds={"lightgbm"},
        check_specs=[dg.AssetCheckSpec(
            SURROGATE_CV_CHECK, asset="capability_surrogates",
            description="Every capability's regressor ranks held-out candidates: out-of-fold Spearman ρ ≥ "
            "validation.min_surrogate_cv_spearman. A failure means the search trusts a regressor that cannot rank.",
        )],
    )
    def capability_surrogates(context: dg.AssetExecutionContext, s: Settings, stage: str,
                              store: CheckpointStore, database: EvaluationDatabase) -> dg.MaterializeResult:
        """Fit f_m: α -> y_m per capability, with out-of-fold R² and Spearman ρ as quality."""
        table = measured_table(s, store, database, stage, 0)  # the seed design; rounds refit later
        surrogates = CapabilitySurrogates.fit(
            s.domain_names, table.alphas, table.scores, seed=s.search.seed, cv_folds=s.search.cv_folds
        )
        version = layout.content_version({"table": table.frame().round(6).to_dict("list"), "seed": s.search.seed})
        key = layout.surrogates_key(stage, version)
        if not store.exists(key):
            with tempfile.TemporaryDirectory() as tmp:
                surrogates.save(Path(tmp))
                store.put_dir(Path(tmp), key)
        store.put_json(layout.surrogates_pointer(stage), {"key": key, "fingerprint": version}, overwrite=True)
        quality = "| capability | CV R² | CV Spearman ρ | n |\n|---|---|---|---|\n" + "".join(
            f"| {q.capability} | {q.r2:.3f} | {q.spearman:.3f} | {q.n} |\n" for q in surrogates.quality.values()
        )
        metadata = {
            "candidates": dg.MetadataValue.int(len(table.candidate_ids)),
            "cv_quality": dg.MetadataValue.md(quality),
            "uri": dg.MetadataValue.path(store.uri(key)),
        }
        for q in surrogates.quality.values():
            metadata[f"cv_r2_{q.capability}"] = dg.MetadataValue.float(float(q.r2))
            metadata[f"cv_spearman_{q.capability}"] = dg.MetadataValue.float(float(q.spearman))
        return dg.MaterializeResult(
            metadata=metadata, data_version=dg.DataVersion(version), check_results=[cv_check(s, surrogates)]
        )

    return [capability_surrogates]
