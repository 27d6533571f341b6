"""Surrogate models of a stage: one LightGBM regressor per capability, α -> capability score."""


import tempfile
from pathlib import Path

import dagster as dg

from ..core.scores import capability_table
from ..core.surrogate import CapabilitySurrogates
from ..partitions import PipelinePartitions
from ..resources import CheckpointStore, EvaluationDatabase
from ..resources.settings import PipelineSettings
from ..settings import Settings
from . import layout

SURROGATES_CODE_VERSION = "1"


def seed_table(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str):
    """The capability table of the current seed candidates of ``stage`` (stale rows are ignored)."""
    design = store.get_json(layout.candidates_key(stage))
    current = {c["candidate_id"]: c["fingerprint"] for c in design["candidates"]}
    rows = database.evaluations(stage)
    rows = rows[(rows["kind"] == "seed") & (rows["candidate_id"].map(current) == rows["model_fingerprint"])]
    return capability_table(rows, s.domain_names, s.capabilities)


def build_surrogate_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @dg.asset(
        partitions_def=parts.stage,
        group_name="search",
        code_version=SURROGATES_CODE_VERSION,
        deps=["candidate_evaluations"],
        kinds={"lightgbm"},
    )
    def capability_surrogates(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Fit f_m: α -> y_m per capability, with out-of-fold R² and Spearman ρ as quality."""
        s = settings.get()
        stage = context.partition_key
        table = seed_table(s, store, database, stage)
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
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))

    return [capability_surrogates]
