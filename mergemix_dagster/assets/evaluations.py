"""Evaluation table of a stage: every seed candidate (and the base) scored with lm-eval, rows in DuckDB.

Each candidate's rows are written as soon as it is scored, keyed by (stage, candidate, task, metric);
a rerun skips candidates whose rows already carry the same model fingerprint, so an interrupted run
resumes where it stopped and a finished one costs nothing.
"""


import time

import dagster as dg
import pandas as pd

from ..core.mixture import Mixture
from ..core.scores import capability_means
from ..partitions import PipelinePartitions
from ..resources import CheckpointStore, EvaluationDatabase
from ..resources.settings import PipelineSettings
from ..settings import Settings
from . import layout
from .loading import configured_rows
from .proxies import open_proxy_scorer, score_rows

EVALUATIONS_CODE_VERSION = "1"
BASE_CANDIDATE_ID = "base"


def finished_fingerprints(db: EvaluationDatabase, stage: str, s: Settings) -> dict[str, str]:
    """candidate_id -> model fingerprint, for candidates with every configured task and metric scored."""
    rows = configured_rows(db.evaluations(stage), s)
    n_metrics = len(s.evaluation.tasks)
    if rows.empty:
        return {}
    counts = rows.groupby(["candidate_id", "model_fingerprint"]).size()
    return {cid: fp for (cid, fp), n in counts.items() if n >= n_metrics}


def expert_vs_base_markdown(s: Settings, frame: pd.DataFrame) -> tuple[str, dict[str, float]]:
    """Each expert (vertex candidate) against the base on its own domain's capability."""
    by_id = {cid: capability_means(zip(g["capability"], g["value"])) for cid, g in frame.groupby("candidate_id")}
    alphas = frame.drop_duplicates("candidate_id").set_index("candidate_id")["alpha"]
    base = by_id.get(BASE_CANDIDATE_ID, {})
    lines = ["| domain | capability | base | expert | gain |", "|---|---|---|---|---|"]
    gains = {}
    for d in s.domains:
        cap = d.capability
        vertex = next(
            (cid for cid, a in alphas.items() if cid != BASE_CANDIDATE_ID and abs(dict(a).get(d.name, 0) - 1) < 1e-9),
            None,
        )
        if cap is None or vertex is None or cap not in base:
            continue
        gain = by_id[vertex][cap] - base[cap]
        gains[d.name] = gain
        lines.append(f"| {d.name} | {cap} | {base[cap]:.3f} | {by_id[vertex][cap]:.3f} | {gain:+.3f} |")
    return "\n".join(lines), gains


def build_evaluation_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @dg.asset(
        partitions_def=parts.stage,
        group_name="search",
        code_version=EVALUATIONS_CODE_VERSION,
        deps=["merge_candidates"],
        kinds={"duckdb"},
    )
    def candidate_evaluations(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Merge each seed candidate in memory and score it on the benchmarks (table `evaluations`)."""
        s = settings.get()
        stage = context.partition_key
        design = store.get_json(layout.candidates_key(stage))
        done = finished_fingerprints(database, stage, s)
        todo = [c for c in design["candidates"] if done.get(c["candidate_id"]) != c["fingerprint"]]
        base_fp = layout.content_version({"base": design["base"]})
        need_base = done.get(BASE_CANDIDATE_ID) != base_fp
        context.log.info(f"{len(design['candidates']) - len(todo)} candidates already scored; {len(todo)} to go")
        seconds = []
        if todo or need_base:
            scorer = open_proxy_scorer(store, stage, s)
            if need_base:
                zero = {d: 0.0 for d in s.domain_names}
                database.upsert_evaluations(
                    score_rows(stage, BASE_CANDIDATE_ID, "base", zero, scorer.score_base(), base_fp)
                )
            for c in todo:
                start = time.perf_counter()
                scores = scorer.score(Mixture.from_dict(c["alpha"], s.domain_names))
                database.upsert_evaluations(
                    score_rows(stage, c["candidate_id"], "seed", c["alpha"], scores, c["fingerprint"])
                )
                seconds.append(time.perf_counter() - start)
                context.log.info(
                    f"{c['candidate_id']} {Mixture.from_dict(c['alpha'], s.domain_names).label()}: "
                    + ", ".join(f"{x.task}={x.value:.3f}" for x in scores)
                )
        ids = [c["candidate_id"] for c in design["candidates"]] + [BASE_CANDIDATE_ID]
        frame = configured_rows(database.evaluations(stage), s)
        frame = frame[frame["candidate_id"].isin(ids)]
        table_md, gains = expert_vs_base_markdown(s, frame)
        spread = frame[frame["kind"] == "seed"].groupby("task")["value"].agg(["min", "max"])
        return dg.MaterializeResult(
            metadata={
                "rows": dg.MetadataValue.int(len(frame)),
                "candidates_scored_now": dg.MetadataValue.int(len(seconds)),
                "seconds_per_candidate": dg.MetadataValue.float(sum(seconds) / len(seconds) if seconds else 0.0),
                "expert_vs_base": dg.MetadataValue.md(table_md),
                "score_range_by_task": dg.MetadataValue.md(spread.to_markdown() if not spread.empty else ""),
                "experts_beating_base": dg.MetadataValue.int(sum(g > 0 for g in gains.values())),
                "database": dg.MetadataValue.path(database.path),
            },
            data_version=dg.DataVersion(
                layout.content_version(sorted(zip(frame["candidate_id"], frame["task"], frame["value"])))
            ),
        )

    return [candidate_evaluations]
