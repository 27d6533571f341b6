"""The task vectors of a stage's experts, and the one markdown report of its validation study."""

import dagster as dg
import pandas as pd

from mergemix_dagster.assets.partitions import SAME_STAGE, PipelinePartitions
from mergemix_dagster.core.evaluation.fidelity import cost_markdown
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.layout import result_key
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.steps.metadata import number, table
from mergemix_dagster.steps.task_vectors import stage_task_vectors
from mergemix_dagster.steps.stage_asset import stage_asset
from mergemix_dagster.steps.validation_report import report_markdown, search_costs
from mergemix_dagster.steps.validation_study import VALIDATION_CODE_VERSION, validation_dir


def build_study_report_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @dg.asset(partitions_def=parts.stage, group_name="validation", code_version=VALIDATION_CODE_VERSION,
              deps=[dg.AssetDep("expert_checkpoint", partition_mapping=SAME_STAGE)])
    def task_vector_diagnostics(
        context: dg.AssetExecutionContext, settings: PipelineSettings, store: CheckpointStore
    ) -> dg.MaterializeResult:
        """MergeMix Appendix B: cosine similarity of the task vectors (expert − base) and ‖Δ‖/‖base‖."""
        s = settings.get()
        stage = context.partition_key
        diag = stage_task_vectors(store, stage, s.domain_names)  # one tensor of each checkpoint in memory at a time
        result = {
            "domains": list(diag.domains),
            "cosine": diag.cosine.tolist(),
            "relative_update": diag.relative_update,
        }
        store.put_json(result_key(stage, "task_vectors.json"), result, overwrite=True)
        return dg.MaterializeResult(
            metadata={
                "task_vectors": dg.MetadataValue.md(diag.markdown()),
                "cosine": table(pd.DataFrame(
                    {"domain": list(diag.domains), **{d: diag.cosine[:, i] for i, d in enumerate(diag.domains)},
                     "relative_update": [diag.relative_update[d] for d in diag.domains]}
                )),
                **{f"relative_update_{d}": number(v) for d, v in diag.relative_update.items()},
            },
            data_version=dg.DataVersion(layout.content_version(result)),
        )

    @stage_asset(parts.stage, group_name="validation", code_version=VALIDATION_CODE_VERSION,
                 deps=["proxy_fidelity", "mixture_quality", "task_vector_diagnostics"], kinds={"duckdb"})
    def validation_report(context: dg.AssetExecutionContext, s: Settings, stage: str,
                          store: CheckpointStore, database: EvaluationDatabase) -> dg.MaterializeResult:
        """One markdown report of the study: the pre-registered protocol and its hash in the header, the judged
        mixture quality, the proxy fidelity, and the cost of the MergeMix search vs RegMix proper's swarm
        computed from the runs recorded in ``training_runs`` (MergeMix Table 6)."""
        fidelity = store.get_json(result_key(stage, "fidelity.json"))
        quality = store.get_json(result_key(stage, "quality.json"))
        vectors = store.get_json(result_key(stage, "task_vectors.json"))
        costs = search_costs(s, store, database, stage, (quality.get("regmix") or {}).get("runs", ()))
        text = report_markdown(s, stage, fidelity, quality, vectors, costs)
        path = validation_dir(s, stage) / "report.md"
        path.write_text(text)
        uri = store.put_file(path, result_key(stage, "report.md"), overwrite=True)
        return dg.MaterializeResult(
            metadata={
                "report": dg.MetadataValue.md(text),
                "protocol_hash": dg.MetadataValue.text(quality["protocol"]["hash"]),
                "cost": dg.MetadataValue.md(cost_markdown(costs)),
                "path": dg.MetadataValue.path(str(path)),
                "uri": dg.MetadataValue.path(uri),
            }
        )

    return [task_vector_diagnostics, validation_report]
