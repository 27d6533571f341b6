"""Cross-stage comparison of chosen mixtures: how far the optimum moved, and what keeping the old one costs.

For each pair of consecutive stages (old, new) the old stage's mixture is merged from the *new* stage's
experts and scored, so "utility lost" is measured, not predicted: utility(new mixture) − utility(old
mixture), both verified at the new stage and normalized with the new stage's seed-score scale.
"""


import json

import dagster as dg
import numpy as np
import pandas as pd

from ..core.mixture import Mixture
from ..core.scores import capability_means
from ..partitions import PipelinePartitions
from ..resources import CheckpointStore, EvaluationDatabase
from ..resources.settings import PipelineSettings
from .candidates import candidate_fingerprint
from .proxies import open_proxy_scorer, score_rows
from .searching import available_tokens, mixture_objective, seed_scale, stage_objective
from . import layout
from .metadata import image, table

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
                scores = open_proxy_scorer(store, stage, s).score(old)
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
        plot_path = s.home_path / "stage_comparison.png"
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        _plot(frame, s.domain_names, plot_path)
        (s.home_path / "stage_comparison.json").write_text(json.dumps(rows, indent=2))
        return dg.MaterializeResult(
            metadata={
                "stages": dg.MetadataValue.int(len(frame)),
                "comparison": table(frame),
                "mixtures_by_stage": image(plot_path, "chosen mixture per stage"),
                "plot_path": dg.MetadataValue.path(str(plot_path)),
            }
        )

    return [stage_comparison]


def stage_report(s, instance: dg.DagsterInstance, stage: str):
    """Gather a stage's chosen mixture, trade-offs, plots, asset checks and cost into a ``StageReport``."""
    from ..checks import latest_check_results
    from ..core.errors import MergeMixError
    from ..core.report import StageReport
    from ..plots import tradeoff_plot
    from .loading import configured_rows

    database = EvaluationDatabase(path=s.database_path)
    chosen = database.query(
        "SELECT domain, weight, predicted_utility, verified_utility, details FROM chosen_mixture WHERE stage = ?", [stage]
    )
    if chosen.empty:
        raise MergeMixError(f"stage {stage!r} has no chosen mixture yet: run `mergemix run --stage {stage}` first")
    details = json.loads(chosen["details"].iloc[0] or "{}")
    utility = {
        "predicted_utility": float(chosen["predicted_utility"].iloc[0]),
        "verified_utility": float(chosen["verified_utility"].iloc[0]),
        "chosen_from": details.get("chosen_from", ""),
        "utility": str(details.get("utility", "")),
    }
    evals = configured_rows(database.evaluations(stage), s)
    evals = evals[evals["kind"].isin(["seed", "base", "verify"])]
    scores, kinds = {}, {}
    for cid, group in evals.groupby("candidate_id"):
        kind = group["kind"].iloc[0]
        alpha = dict(group["alpha"].iloc[0])
        vertex = next((d for d, w in alpha.items() if abs(w - 1) < 1e-9), None)
        label = {"base": "base", "verify": "search optimum"}.get(kind) or (f"expert {vertex}" if vertex else cid)
        kinds[label] = "expert" if vertex and kind == "seed" else kind
        scores[label] = capability_means(zip(group["capability"], group["value"]))
    caps = list(s.capabilities)
    shown = [m for m, k in kinds.items() if k != "seed"]
    tradeoffs = pd.DataFrame([{"model": m, **{c: scores[m].get(c) for c in caps},
                               "mean": float(np.mean([scores[m][c] for c in caps if c in scores[m]]))} for m in shown])
    out = s.home_path / "reports" / stage
    pair = [s.domain(d).capability for d in s.dual_pair if s.domain(d).capability in caps] or caps
    x_cap, y_cap = (pair + caps)[:2] if len(set(pair)) >= 2 else caps[:2]
    images = {f"Trade-off: {x_cap} vs {y_cap}": tradeoff_plot(scores, kinds, x_cap, y_cap, out / "tradeoff.png").read_bytes()}
    for title, path in (
        ("Rank fidelity (validation)", s.home_path / "validation" / stage / "rank_fidelity.png"),
        ("Dual-capability curve (validation)", s.home_path / "validation" / stage / "dual_capability.png"),
        ("Chosen mixture per stage", s.home_path / "stage_comparison.png"),
    ):
        if path.exists():
            images[title] = path.read_bytes()
    runs = database.training_runs(stage)
    cost = (runs.groupby("study").agg(runs=("run_id", "count"), tokens=("tokens", "sum"), seconds=("seconds", "sum"))
            .reset_index() if not runs.empty else pd.DataFrame())
    evaluated = evals.groupby("kind")["candidate_id"].nunique().to_dict()
    notes = [f"Models scored with lm-eval on this stage's search: {evaluated}.",
             f"Scores and candidates: DuckDB tables `evaluations`, `chosen_mixture`, `training_runs` in {s.database_path}."]
    if (s.home_path / "lm_eval" / stage).is_dir():
        notes.append(f"lm-eval's results JSON of each scored model: {s.home_path / 'lm_eval' / stage}.")
    checks = [(c.asset, c.check, c.passed, c.severity, c.description) for c in latest_check_results(instance, stage)]
    mixture = chosen[["domain", "weight"]].reset_index(drop=True)
    return StageReport(stage, mixture, utility, tradeoffs, checks, cost, images, notes)
