"""Evaluation table of a stage: every seed candidate (and the base) scored with lm-eval, rows in DuckDB.

Each candidate's rows are written as soon as it is scored, keyed by (stage, candidate, task, metric);
a rerun skips candidates whose rows already carry the same model fingerprint, so an interrupted run
resumes where it stopped and a finished one costs nothing.
"""


import dagster as dg
import pandas as pd

from mergemix_dagster.core.errors import PairedAnalysisError
from mergemix_dagster.core.evaluation.paired import paired_capability_difference
from mergemix_dagster.core.evaluation.workers import ProxyJob, score_proxies
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.progress import Progress
from mergemix_dagster.core.evaluation.scores import capability_means
from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.steps.stage_asset import stage_asset
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import layout
from mergemix_dagster.resources.artifacts import configured_rows, has_items, items_by_benchmark
from mergemix_dagster.steps.metadata import number, table
from mergemix_dagster.resources.pools import AssetPools
from mergemix_dagster.steps.proxy_scoring import fingerprinted, lm_eval_results_path, proxy_scorer_spec, score_rows
from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
from mergemix_dagster.steps.proxy_scoring import finished_fingerprints
from mergemix_dagster.steps.evidence import copy_reused_rows

EVALUATIONS_CODE_VERSION = "3"  # 2: the base is scored with lm-eval's stderr; 3: per-item scores, experts_beat_base on paired noise
BASE_CANDIDATE_ID = "base"
EXPERTS_BEAT_BASE_CHECK = "experts_beat_base"
EXPERTS_BEAT_BASE_DESCRIPTION = (
    "Every expert (vertex candidate) scores higher than the base on its own domain's capability, beyond paired "
    "noise (the 95 % paired interval of the gain over the same items is above 0; without per-item scores, a "
    "gain > 0). When one does not, its task vector adds little of that capability and merges along it are weak "
    "proxies. WARN by default; "
    "with `checks.block: true` ERROR, and the surrogates and the chosen mixture of the run are not materialized."
)


NO_ITEMS = "no per-item scores"


def _items_of(group: pd.DataFrame, capability: str) -> dict | None:
    """Per-item values by (task, metric) of one candidate's rows of ``capability``; None if any row has none."""
    rows = group[group["capability"] == capability]
    items = items_by_benchmark(rows)
    return items if items and all(has_items(v) for v in items.values()) else None


def _paired_interval(base: dict | None, expert: dict | None) -> tuple[float, float]:
    """95 % paired bootstrap interval of expert − base over the same items; NaN where either lacks items."""
    if base is None or expert is None or set(base) != set(expert):
        return float("nan"), float("nan")
    try:
        d = paired_capability_difference(expert, base)
    except PairedAnalysisError:
        return float("nan"), float("nan")
    return d.low, d.high


def expert_vs_base_frame(s: Settings, frame: pd.DataFrame) -> pd.DataFrame:
    """Each expert (vertex candidate) against the base on its own domain's capability: one row per domain, with
    the paired 95 % interval of the gain over the same items (NaN without per-item scores) and whether the
    expert beats the base (interval above 0; without items: gain > 0)."""
    groups = dict(tuple(frame.groupby("candidate_id")))
    by_id = {cid: capability_means(zip(g["capability"], g["value"])) for cid, g in groups.items()}
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
        gain = by_id[vertex][cap] - base[cap]
        low, high = _paired_interval(_items_of(groups[BASE_CANDIDATE_ID], cap), _items_of(groups[vertex], cap))
        rows.append({"domain": d.name, "capability": cap, "base": base[cap], "expert": by_id[vertex][cap],
                     "gain": gain, "ci_low": low, "ci_high": high,
                     "beats_base": bool(low > 0) if low == low else bool(gain > 0)})
    columns = ["domain", "capability", "base", "expert", "gain", "ci_low", "ci_high", "beats_base"]
    return pd.DataFrame(rows, columns=columns).astype({"ci_low": float, "ci_high": float, "beats_base": bool})


def expert_vs_base_markdown(s: Settings, frame: pd.DataFrame) -> tuple[str, dict[str, float]]:
    """The same comparison as a markdown table (for the terminal), with each domain's gain."""
    table_frame = expert_vs_base_frame(s, frame)
    text = table_frame.to_markdown(index=False, floatfmt=".3f") if not table_frame.empty else ""
    return text, dict(zip(table_frame["domain"], table_frame["gain"]))


def _gain_text(row) -> str:
    if row["ci_low"] == row["ci_low"]:
        return f"{row['domain']} {row['gain']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
    return f"{row['domain']} {row['gain']:+.3f} ({NO_ITEMS}: gain > 0 rule)"


def experts_beat_base_result(s: Settings, versus: pd.DataFrame) -> dg.AssetCheckResult:
    """Every expert beats the base on its capability beyond paired noise: the 95 % paired interval of its gain
    over the same items is above 0 (without per-item scores: the gain is > 0, and the description says so)."""
    behind = versus[~versus["beats_base"]]
    shown = "; ".join(_gain_text(row) for _, row in versus.iterrows())
    return dg.AssetCheckResult(
        check_name=EXPERTS_BEAT_BASE_CHECK,
        passed=behind.empty,
        severity=dg.AssetCheckSeverity.ERROR if s.checks.block else dg.AssetCheckSeverity.WARN,
        description=(f"{len(versus) - len(behind)} of {len(versus)} experts beat the base on their capability "
                     "beyond paired noise (gain [95 % paired interval])"
                     + (f"; not: {', '.join(behind['domain'])}" if not behind.empty else "")
                     + (f". {shown}" if shown else "")),
        metadata={f"gain_{row['domain']}": number(row["gain"]) for _, row in versus.iterrows()},
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
        copied = copy_reused_rows(database, stage, s, design["candidates"])  # earlier evidence: no merge, no lm-eval
        if copied:
            context.log.info(f"{len(copied)} candidates reused from earlier evaluations: {', '.join(copied)}")
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
        spread = frame[frame["kind"] == "seed"].groupby("task")["value"].agg(["min", "max"])
        return dg.MaterializeResult(
            metadata={
                "rows": dg.MetadataValue.int(len(frame)),
                "candidates_scored_now": dg.MetadataValue.int(len(seconds)),
                "candidates_copied_now": dg.MetadataValue.int(len(copied)),
                "seconds_per_candidate": number(sum(seconds) / len(seconds) if seconds else 0.0),
                "expert_vs_base": table(versus_base),
                "score_range_by_task": table(spread.reset_index()),
                "experts_beating_base": dg.MetadataValue.int(int(versus_base["beats_base"].sum())),
                "database": dg.MetadataValue.path(database.path),
            },
            data_version=dg.DataVersion(
                layout.content_version(sorted(zip(frame["candidate_id"], frame["task"], frame["value"],
                                                  frame["stderr"].astype(object).where(frame["stderr"].notna(), None))))
            ),
            check_results=[experts_beat_base_result(s, versus_base)],
        )

    return [candidate_evaluations]
