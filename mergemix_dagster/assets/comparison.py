"""Cross-stage comparison of chosen mixtures: how far the optimum moved, and what keeping the old one costs.

For each pair of consecutive stages (old, new) the old stage's mixture is merged from the *new* stage's
experts and scored, so "utility lost" is measured, not predicted: utility(new mixture) − utility(old
mixture), both verified at the new stage and normalized with the new stage's seed-score scale.
"""


import json

import dagster as dg
import numpy as np
import pandas as pd

from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.evaluation.scores import capability_means
from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.resources.layout import candidate_fingerprint
from mergemix_dagster.steps.proxy_scoring import score_one, score_rows
from mergemix_dagster.steps.search_inputs import available_tokens, mixture_objective, seed_scale, stage_objective
from mergemix_dagster.resources import layout
from mergemix_dagster.steps.metadata import image, table

REPORT_CODE_VERSION = "1"


def _plot(frame: pd.DataFrame, domains: tuple[str, ...], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(frame), 3.2))
    bottom = np.zeros(len(frame))
    for d in domains:
        ax.bar(frame["stage"], frame[d], bottom=bottom, label=d)
        bottom += frame[d].to_numpy()
    ax.set_ylabel("mixture weight")
    ax.set_ylim(0, 1)
    ax.set_title("Chosen mixture per stage")
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_report_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @dg.asset(
        group_name="report",
        code_version=REPORT_CODE_VERSION,
        deps=[dg.AssetDep("chosen_mixture", partition_mapping=dg.AllPartitionMapping())],
        kinds={"duckdb"},
    )
    def stage_comparison(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Chosen mixtures of all stages side by side, their distance, and the measured cost of not moving."""
        s = settings.get()
        chosen = database.query("SELECT stage, domain, weight, verified_utility FROM chosen_mixture")
        if chosen.empty:
            return dg.MaterializeResult(metadata={"stages": 0})
        order = [st for st in context.instance.get_dynamic_partitions("stage") if st in set(chosen["stage"])]
        wide = chosen.pivot(index="stage", columns="domain", values="weight").loc[order, list(s.domain_names)]
        rows = []
        for i, stage in enumerate(order):
            row = {"stage": stage, **wide.loc[stage].to_dict()}
            row["verified_utility"] = float(chosen[chosen["stage"] == stage]["verified_utility"].iloc[0])
            if i > 0:
                old = Mixture.from_dict(wide.loc[order[i - 1]].to_dict(), s.domain_names)
                new = Mixture.from_dict(wide.loc[stage].to_dict(), s.domain_names)
                row["moved_tv"] = 0.5 * float(np.abs(old.as_array() - new.as_array()).sum())
                scale = seed_scale(s, store, database, stage)
                scores = score_one(context, s, stage, store, old, f"carryover:{order[i - 1]}")
                design = store.get_json(layout.candidates_key(stage))
                database.upsert_evaluations(
                    score_rows(stage, f"carryover:{order[i - 1]}", "carryover", old.as_dict(), scores,
                               candidate_fingerprint(design, old.as_dict()))
                )
                caps = capability_means((x.capability, x.value) for x in scores)
                objective, _ = stage_objective(s, store, database, stage, available_tokens(design))
                old_utility = mixture_objective(caps, old, objective, scale)
                row["previous_mixture_utility"] = old_utility
                row["utility_lost_by_not_moving"] = row["verified_utility"] - old_utility
            rows.append(row)
        frame = pd.DataFrame(rows)
        plot_path = layout.stage_comparison_plot(s.home_path)
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        _plot(frame, s.domain_names, plot_path)
        layout.stage_comparison_plot(s.home_path).with_suffix(".json").write_text(json.dumps(rows, indent=2))
        return dg.MaterializeResult(
            metadata={
                "stages": dg.MetadataValue.int(len(frame)),
                "comparison": table(frame),
                "mixtures_by_stage": image(plot_path, "chosen mixture per stage"),
                "plot_path": dg.MetadataValue.path(str(plot_path)),
            }
        )

    return [stage_comparison]


