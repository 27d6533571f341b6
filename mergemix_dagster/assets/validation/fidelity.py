"""Does the proxy rank mixtures like training does (``proxy_fidelity``), and does the chosen mixture train
better than the baselines (``mixture_quality``)? The two answers of the validation study."""

import json

import dagster as dg
import numpy as np
import pandas as pd

from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.layout import design_key, result_key
from mergemix_dagster.resources.pools import AssetPools
from mergemix_dagster.steps.metadata import image, number, table
from mergemix_dagster.steps.stage_asset import stage_asset
from mergemix_dagster.steps.mixture_quality import judge, quality_plan, train_arms
from mergemix_dagster.steps.validation_study import (
    VALIDATION_CODE_VERSION,
    measure_fidelity,
    reference_trainer,
    validation_dir,
)

RANK_FIDELITY_CHECK = "rank_fidelity_above_threshold"
RANK_FIDELITY_CHECK_DESCRIPTION = (
    "The merged proxies rank the validation mixtures like the models trained on them: overall Spearman ρ "
    "≥ validation.min_spearman. ERROR when it fails: the search's ranking of mixtures is then not to be trusted."
)


def build_fidelity_assets(parts: PipelinePartitions, pools: AssetPools) -> list[dg.AssetsDefinition]:
    @stage_asset(
        parts.stage,
        group_name="validation",
        code_version=VALIDATION_CODE_VERSION,
        deps=["validation_proxies", "reference_models"],
        kinds={"duckdb"},
        check_specs=[
            dg.AssetCheckSpec(RANK_FIDELITY_CHECK, asset="proxy_fidelity", description=RANK_FIDELITY_CHECK_DESCRIPTION)
        ],
    )
    def proxy_fidelity(context: dg.AssetExecutionContext, s: Settings, stage: str,
                       store: CheckpointStore, database: EvaluationDatabase):
        """Spearman ρ (overall and per capability), capability recovery, rank-rank plot and the
        dual-capability curve; the check fails (ERROR) when overall ρ is below ``validation.min_spearman``."""
        design = store.get_json(design_key(stage))
        trainer = reference_trainer(context, s, store, database, stage)
        study = measure_fidelity(s, database, stage, design, trainer)
        report, result = study.report, study.result
        store.put_json(result_key(stage, "fidelity.json"), result, overwrite=True)
        (validation_dir(s, stage) / "fidelity.json").write_text(json.dumps(result, indent=2, default=float))
        threshold = s.validation.min_spearman
        rho = report.overall_spearman
        passed = bool(np.isfinite(rho) and rho >= threshold)
        yield dg.MaterializeResult(
            metadata={
                "overall_spearman": number(rho),
                "overall_recovery": number(report.overall_recovery),
                "rank_fidelity_plot": image(study.rank_plot, "rank fidelity"),
                "dual_capability_plot": image(study.dual_plot, "dual capability"),
                "fidelity": dg.MetadataValue.md(report.markdown()),
                "mixtures": table(study.mixtures),
                "by_capability": table(pd.DataFrame(
                    [{"capability": c, "spearman": report.spearman[c], "recovery": report.recovery[c],
                      "dual_spearman": study.dual_spearman.get(c, float("nan"))} for c in s.capabilities]
                    + [{"capability": k, "spearman": v} for k, v in study.heldout_spearman.items()]
                )),
                "rank_plot_path": dg.MetadataValue.path(str(study.rank_plot)),
                "dual_plot_path": dg.MetadataValue.path(str(study.dual_plot)),
            },
            data_version=dg.DataVersion(layout.content_version(result)),
        )
        yield dg.AssetCheckResult(
            check_name=RANK_FIDELITY_CHECK,
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"overall Spearman ρ {rho:.3f} vs threshold {threshold:.2f} over {report.n} mixtures",
            metadata={"overall_spearman": number(rho), "threshold": number(threshold)},
        )

    @stage_asset(parts.stage, group_name="validation", code_version=VALIDATION_CODE_VERSION,
                 deps=["reference_models"], kinds={"pytorch", "lightgbm"}, pool=pools.training)
    def mixture_quality(context: dg.AssetExecutionContext, s: Settings, stage: str,
                        store: CheckpointStore, database: EvaluationDatabase) -> dg.MaterializeResult:
        """The pre-registered comparison (``validation.protocol``, docs/validation.md): register the protocol,
        train RegMix proper's own swarm, then every arm — uniform, the natural token prior, RegMix proper, the
        best single domain, the chosen mixture — at every protocol seed, and judge the chosen mixture's paired
        margins on the declared metric (t-intervals) and held out against uniform."""
        design = store.get_json(design_key(stage))
        plan = quality_plan(s, store, database, stage, design, reference_trainer(context, s, store, database, stage))
        result = judge(s, store, database, stage, plan, train_arms(plan))
        store.put_json(result_key(stage, "quality.json"), result, overwrite=True)
        (validation_dir(s, stage) / "quality.json").write_text(json.dumps(result, indent=2))
        margins = pd.DataFrame([{"vs": a, **{k: m[k] for k in ("mean", "low", "high", "verdict")}}
                                for a, m in result["margins"].items()])
        return dg.MaterializeResult(
            metadata={
                "protocol_hash": dg.MetadataValue.text(result["protocol"]["hash"]),
                "attempt": dg.MetadataValue.int(result["attempt"]["number"]),
                "metric": dg.MetadataValue.text(result["protocol"]["metric"]),
                "arms": table(pd.DataFrame([{"arm": a, **m.as_dict()} for a, m in plan.arms.items()])),
                "scores": table(pd.DataFrame(result["summary"])),
                "margins": table(margins),
                "beats_every_arm": dg.MetadataValue.bool(result["beats_every_arm"]),
                "heldout_no_worse_than_uniform": dg.MetadataValue.bool(result["heldout_no_worse_than_uniform"]),
            },
            data_version=dg.DataVersion(layout.content_version(result["runs"])),
        )

    return [proxy_fidelity, mixture_quality]
