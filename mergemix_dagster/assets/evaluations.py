"""Evaluation table of a stage: every seed candidate (and the base) scored with lm-eval, rows in DuckDB.

A graph-backed asset: candidates are scored in chunks, one Dagster step each (a dynamic fan-out), so the
run's executor decides where they run (in process, the multiprocess executor's processes, a pod per step).
Each model's scores go to the store as soon as it is scored; one step writes the rows, keyed by (stage,
candidate, task, metric). A rerun skips candidates whose rows already carry the same model fingerprint and
does not rescore those whose scores are stored, so an interrupted run resumes where it stopped.
"""


import dagster as dg
import pandas as pd

from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.core.errors import PairedAnalysisError
from mergemix_dagster.core.evaluation.paired import paired_capability_difference
from mergemix_dagster.core.evaluation.scores import capability_means
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.artifacts import configured_rows, has_items, items_by_benchmark
from mergemix_dagster.resources.pools import AssetPools
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.steps.evidence import copy_reused_rows
from mergemix_dagster.steps.evaluation_fanout import (
    BASE_CANDIDATE_ID,
    chunked,
    pending_models,
    score_models,
    unscored,
    write_scored,
)
from mergemix_dagster.steps.metadata import number, table

EVALUATIONS_CODE_VERSION = "3"  # 2: the base is scored with lm-eval's stderr; 3: per-item scores, experts_beat_base on paired noise
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


def experts_beat_base_result(s: Settings, versus: pd.DataFrame, asset_key: str | None = None) -> dg.AssetCheckResult:
    """Every expert beats the base on its capability beyond paired noise: the 95 % paired interval of its gain
    over the same items is above 0 (without per-item scores: the gain is > 0, and the description says so)."""
    behind = versus[~versus["beats_base"]]
    shown = "; ".join(_gain_text(row) for _, row in versus.iterrows())
    return dg.AssetCheckResult(
        asset_key=asset_key,
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
    """``candidate_evaluations`` as a graph of three ops: plan (which models need scores, split into chunks by
    ``evaluator.chunk_size``), score (one dynamic step per chunk, in the evaluation pool: the unit Dagster's
    executor schedules, over local processes with the multiprocess executor, over pods with the k8s one) and
    write (the one step that writes scores to DuckDB; the plan step only copies reused rows, before any scoring). Work: ``steps/evaluation_fanout.py``."""

    @dg.op(ins={"merge_candidates": dg.In(dg.Nothing)}, out=dg.DynamicOut(list))
    def plan_candidate_scoring(context: dg.OpExecutionContext, settings: PipelineSettings, store: CheckpointStore,
                               database: EvaluationDatabase):
        """The models without current rows, in chunks; models whose scores are already stored are not scored.
        Reused evidence (a candidate another scored model already measured, ``steps/evidence.py``) is copied
        into DuckDB first, here, before any scoring step starts: it is never merged nor scored again."""
        s, stage = settings.get(), context.partition_key
        design = store.get_json(layout.candidates_key(stage))
        copied = copy_reused_rows(database, stage, s, design["candidates"])  # earlier evidence: no merge, no lm-eval
        if copied:
            context.log.info(f"{len(copied)} candidates reused from earlier evaluations: {', '.join(copied)}")
        models, done = pending_models(s, stage, store, database)
        todo = unscored(s, stage, store, models)
        context.log.info(f"{done} candidates already scored; {sum(m['kind'] == 'seed' for m in models)} to go"
                         + (f" ({len(models) - len(todo)} models' scores already stored)" if len(todo) < len(models) else ""))
        for i, chunk in enumerate(chunked(todo, s.evaluator.chunk_size) or [[]]):  # one (empty) step at least
            yield dg.DynamicOutput(chunk, mapping_key=f"chunk_{i}")

    @dg.op(pool=pools.evaluation)
    def score_candidate_chunk(context: dg.OpExecutionContext, settings: PipelineSettings, store: CheckpointStore,
                              chunk: list) -> list:
        """Merge and score one chunk of models; each model's scores go to the store as soon as it is scored."""
        return score_models(context, settings.get(), context.partition_key, store, chunk)

    @dg.op(out={"result": dg.Out(dg.Nothing), "check": dg.Out(dg.Nothing, is_required=False)})
    def write_candidate_evaluations(context: dg.OpExecutionContext, settings: PipelineSettings,
                                    store: CheckpointStore, database: EvaluationDatabase, scored: list):
        """Rows of every pending model from its stored scores (table `evaluations`), the table's metadata and
        the `experts_beat_base` check."""
        s, stage = settings.get(), context.partition_key
        models, _ = pending_models(s, stage, store, database)
        write_scored(s, stage, store, database, models)
        seconds = [m["seconds"] for chunk in scored for m in chunk if m["kind"] == "seed"]
        for chunk in scored:
            for m in chunk:
                context.log.debug(f"{m['candidate_id']} scored in {m['seconds']:.2f} s")
        design = store.get_json(layout.candidates_key(stage))
        ids = [c["candidate_id"] for c in design["candidates"]] + [BASE_CANDIDATE_ID]
        frame = configured_rows(database.evaluations(stage), s)
        frame = frame[frame["candidate_id"].isin(ids)]
        versus_base = expert_vs_base_frame(s, frame)
        spread = frame[frame["kind"] == "seed"].groupby("task")["value"].agg(["min", "max"])
        yield dg.Output(
            None, "result",
            metadata={
                "rows": dg.MetadataValue.int(len(frame)),
                "candidates_scored_now": dg.MetadataValue.int(len(seconds)),
                "candidates_reused": dg.MetadataValue.int(sum("reused" in c for c in design["candidates"])),
                "scoring_steps": dg.MetadataValue.int(len(scored)),
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
        )
        yield experts_beat_base_result(s, versus_base, asset_key="candidate_evaluations")

    @dg.graph_asset(
        name="candidate_evaluations",
        partitions_def=parts.stage,
        group_name="search",
        code_version=EVALUATIONS_CODE_VERSION,
        ins={"merge_candidates": dg.AssetIn(dagster_type=dg.Nothing)},
        kinds={"duckdb"},
        check_specs=[dg.AssetCheckSpec(EXPERTS_BEAT_BASE_CHECK, asset="candidate_evaluations",
                                       description=EXPERTS_BEAT_BASE_DESCRIPTION, blocking=True)],
    )
    def candidate_evaluations(merge_candidates):
        """Merge each seed candidate (and the base) and score it on the benchmarks (table `evaluations`), in
        chunks that Dagster's executor schedules; one step writes DuckDB."""
        scored = plan_candidate_scoring(merge_candidates).map(score_candidate_chunk).collect()
        result, check = write_candidate_evaluations(scored)
        return {"result": result, f"candidate_evaluations_{EXPERTS_BEAT_BASE_CHECK}": check}

    return [candidate_evaluations]
