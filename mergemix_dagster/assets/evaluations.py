"""Evaluation table of a stage: every seed candidate (and the base) scored with lm-eval, rows in DuckDB.

Each candidate's rows are written as soon as it is scored, keyed by (stage, candidate, task, metric);
a rerun skips candidates whose rows already carry the same model fingerprint, so an interrupted run
resumes where it stopped and a finished one costs nothing.
"""


import dagster as dg
import pandas as pd

from mergemix_dagster.core.evaluation.workers import ProxyJob, score_proxies
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.progress import Progress
from mergemix_dagster.core.evaluation.scores import capability_means
from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.steps.stage_asset import stage_asset
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import layout
from mergemix_dagster.resources.artifacts import configured_rows
from mergemix_dagster.steps.metadata import number, table
from mergemix_dagster.resources.pools import AssetPools
from mergemix_dagster.steps.proxy_scoring import fingerprinted, lm_eval_results_path, proxy_scorer_spec, score_rows
from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
from mergemix_dagster.steps.proxy_scoring import finished_fingerprints

EVALUATIONS_CODE_VERSION = "2"  # 2: the base is scored with lm-eval's stderr (the noise of each target)
BASE_CANDIDATE_ID = "base"
EXPERTS_BEAT_BASE_CHECK = "experts_beat_base"
EXPERTS_BEAT_BASE_DESCRIPTION = (
    "Every expert (vertex candidate) scores higher than the base on its own domain's capability. When one does "
    "not, its task vector adds little of that capability and merges along it are weak proxies. WARN by default; "
    "with `checks.block: true` ERROR, and the surrogates and the chosen mixture of the run are not materialized."
)


def expert_vs_base_frame(s: Settings, frame: pd.DataFrame) -> pd.DataFrame:
    """Each expert (vertex candidate) against the base on its own domain's capability: one row per domain."""
    by_id = {cid: capability_means(zip(g["capability"], g["value"])) for cid, g in frame.groupby("candidate_id")}
    alphas = frame.drop_duplicates("candidate_id").set_index("candidate_id")["alpha"]
    base = by_id.get(BASE_CANDIDATE_ID, {})
    rows = []
    for d in s.domains:
        cap = d.capability
        vertex = next(
            (cid for cid, a in alphas.items() if cid != BASE_CANDIDATE_ID and abs(dict(a).get(d.name, 0) - 1) < 1e-9),
            None,
        )
        if cap is None or vertex is None or cap not in base:
            continue
        rows.append({"domain": d.name, "capability": cap, "base": base[cap], "expert": by_id[vertex][cap],
                     "gain": by_id[vertex][cap] - base[cap]})
    return pd.DataFrame(rows, columns=["domain", "capability", "base", "expert", "gain"])


def expert_vs_base_markdown(s: Settings, frame: pd.DataFrame) -> tuple[str, dict[str, float]]:
    """The same comparison as a markdown table (for the terminal), with each domain's gain."""
    table_frame = expert_vs_base_frame(s, frame)
    text = table_frame.to_markdown(index=False, floatfmt=".3f") if not table_frame.empty else ""
    return text, dict(zip(table_frame["domain"], table_frame["gain"]))


def experts_beat_base_result(s: Settings, gains: dict[str, float]) -> dg.AssetCheckResult:
    behind = {d: g for d, g in gains.items() if not g > 0}
    return dg.AssetCheckResult(
        check_name=EXPERTS_BEAT_BASE_CHECK,
        passed=not behind,
        severity=dg.AssetCheckSeverity.ERROR if s.checks.block else dg.AssetCheckSeverity.WARN,
        description=(f"{len(gains) - len(behind)} of {len(gains)} experts beat the base on their capability"
                     + (f"; not: {', '.join(f'{d} ({g:+.3f})' for d, g in behind.items())}" if behind else "")),
        metadata={f"gain_{d}": number(g) for d, g in gains.items()},
    )


def build_evaluation_assets(parts: PipelinePartitions, pools: AssetPools = AssetPools()) -> list[dg.AssetsDefinition]:
    @stage_asset(
        parts.stage,
        group_name="search",
        code_version=EVALUATIONS_CODE_VERSION,
        deps=["merge_candidates"],
        kinds={"duckdb"},
        pool=pools.evaluation,
        check_specs=[dg.AssetCheckSpec(EXPERTS_BEAT_BASE_CHECK, asset="candidate_evaluations",
                                       description=EXPERTS_BEAT_BASE_DESCRIPTION, blocking=True)],
    )
    def candidate_evaluations(context: dg.AssetExecutionContext, s: Settings, stage: str,
                              store: CheckpointStore, database: EvaluationDatabase) -> dg.MaterializeResult:
        """Merge each seed candidate in memory and score it on the benchmarks (table `evaluations`)."""
        design = store.get_json(layout.candidates_key(stage))
        done = finished_fingerprints(database, stage, s)
        todo = [c for c in design["candidates"] if done.get(c["candidate_id"]) != c["fingerprint"]]
        # "stderr": base rows written before the noise estimate was kept are rescored once (one candidate)
        base_fp = layout.content_version({"base": design["base"], "stderr": 1})
        need_base = done.get(BASE_CANDIDATE_ID) != base_fp
        context.log.info(f"{len(design['candidates']) - len(todo)} candidates already scored; {len(todo)} to go")
        fingerprints = evaluation_fingerprints(s)
        jobs = [ProxyJob(c["candidate_id"], c["alpha"], str(lm_eval_results_path(s, stage, c["candidate_id"])))
                for c in todo]
        if need_base:
            jobs.insert(0, ProxyJob(BASE_CANDIDATE_ID, None, str(lm_eval_results_path(s, stage, BASE_CANDIDATE_ID))))
        by_id = {c["candidate_id"]: c for c in todo}
        progress = Progress(len(todo), "candidates", log=context.log.info, unit="candidate")
        seconds = []

        def write(job: ProxyJob, scores: list, elapsed: float) -> None:
            """Rows of one scored model, written as soon as it is scored (a kill loses only those in flight)."""
            scores = fingerprinted(scores, fingerprints)
            if job.alpha is None:
                zero = {d: 0.0 for d in s.domain_names}
                database.upsert_evaluations(score_rows(stage, BASE_CANDIDATE_ID, "base", zero, scores, base_fp))
                return
            c = by_id[job.candidate_id]
            database.upsert_evaluations(
                score_rows(stage, c["candidate_id"], "seed", c["alpha"], scores, c["fingerprint"])
            )
            seconds.append(elapsed)
            progress.advance(candidate=c["candidate_id"])
            context.log.debug(
                f"{c['candidate_id']} {Mixture.from_dict(c['alpha'], s.domain_names).label()}: "
                + ", ".join(f"{x.task}={x.value:.3f}" for x in scores)
            )

        if jobs:
            workers = min(s.evaluation.workers, len(jobs))
            context.log.info(f"scoring {len(jobs)} models in {workers} worker process(es)")
            score_proxies(proxy_scorer_spec(store, stage, s), jobs, write, workers=workers)
        ids = [c["candidate_id"] for c in design["candidates"]] + [BASE_CANDIDATE_ID]
        frame = configured_rows(database.evaluations(stage), s)
        frame = frame[frame["candidate_id"].isin(ids)]
        versus_base = expert_vs_base_frame(s, frame)
        gains = dict(zip(versus_base["domain"], versus_base["gain"]))
        spread = frame[frame["kind"] == "seed"].groupby("task")["value"].agg(["min", "max"])
        return dg.MaterializeResult(
            metadata={
                "rows": dg.MetadataValue.int(len(frame)),
                "candidates_scored_now": dg.MetadataValue.int(len(seconds)),
                "seconds_per_candidate": number(sum(seconds) / len(seconds) if seconds else 0.0),
                "expert_vs_base": table(versus_base),
                "score_range_by_task": table(spread.reset_index()),
                "experts_beating_base": dg.MetadataValue.int(sum(g > 0 for g in gains.values())),
                "database": dg.MetadataValue.path(database.path),
            },
            data_version=dg.DataVersion(
                layout.content_version(sorted(zip(frame["candidate_id"], frame["task"], frame["value"],
                                                  frame["stderr"].astype(object).where(frame["stderr"].notna(), None))))
            ),
            check_results=[experts_beat_base_result(s, gains)],
        )

    return [candidate_evaluations]
