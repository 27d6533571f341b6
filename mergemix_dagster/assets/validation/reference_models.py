"""Reference runs of a stage: one model trained on each validation mixture, the ground truth of the study."""

import dagster as dg

from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.core.progress import Progress
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.layout import design_key
from mergemix_dagster.resources.pools import AssetPools
from mergemix_dagster.steps.metadata import loss_curve
from mergemix_dagster.steps.stage_asset import stage_asset
from mergemix_dagster.steps.validation_study import VALIDATION_CODE_VERSION, design_mixtures, reference_trainer


def build_reference_model_assets(parts: PipelinePartitions, pools: AssetPools) -> list[dg.AssetsDefinition]:
    @stage_asset(parts.stage, group_name="validation", code_version=VALIDATION_CODE_VERSION,
                 deps=["validation_design"], kinds={"pytorch", "duckdb"}, pool=pools.training)
    def reference_models(context: dg.AssetExecutionContext, s: Settings, stage: str,
                         store: CheckpointStore, database: EvaluationDatabase) -> dg.MaterializeResult:
        """Train one model per validation mixture on the actual data mixture (expert recipe, same budget)
        and score it; finished runs are reused, an interrupted study resumes."""
        design = store.get_json(design_key(stage))
        trainer = reference_trainer(context, s, store, database, stage)
        seed = trainer.seeds(1)[0]
        ids, trained_now, curves = [], 0, {}
        runs = [(study, pid, mixture) for study in ("fidelity", "dual")
                for pid, mixture in design_mixtures(design, study)]
        with Progress(len(runs), "reference runs", log=context.log.info, unit="run") as progress:
            for study, pid, mixture in runs:
                run_id, worked = trainer.ensure(mixture, seed, study)
                ids.append(run_id)
                trained_now += worked
                if (losses := trainer.losses(run_id)) is not None:
                    curves[f"{study} {pid}"] = losses
                progress.advance(mixture=pid, trained_now=trained_now)
        return dg.MaterializeResult(
            metadata={
                "reference_runs": dg.MetadataValue.int(len(ids)),
                "trained_or_scored_now": dg.MetadataValue.int(trained_now),
                "tokens_per_run": dg.MetadataValue.int(s.experts.tokens),
                **({"loss_curves": loss_curve(curves, f"reference runs of {stage}: training loss")} if curves else {}),
            },
            data_version=dg.DataVersion(layout.content_version(ids)),
        )

    return [reference_models]
