"""A stage's candidate evaluation in chunks that Dagster's executor schedules (``candidate_evaluations``).

Three steps, each a plain function here (the ops are in ``assets/evaluations.py``):

1. ``pending_models``: the models of the stage (the base and every seed candidate) whose rows in DuckDB are
   missing or were scored under other settings; ``unscored`` drops those whose scores are already in the store
   (a killed run's finished candidates), and ``chunked`` splits the rest by ``evaluator.chunk_size``;
2. ``score_models`` (one Dagster step per chunk, in the evaluation pool): scores a chunk with the configured
   evaluator and writes each model's scores to the store (``layout.score_key``) as soon as it is scored, so a
   kill loses only the models in flight and no scoring step needs the database file;
3. ``write_scored``: the one step that writes DuckDB, reading every pending model's stored scores.

A stored score's key holds the model fingerprint and the evaluation fingerprints (task files, metric, limit,
evaluator identity), so a score is reused only for the same model under the same evaluation. Rows are keyed
by (stage, candidate, task, metric) as before: a rerun never duplicates them. Scores decide the rows, not the
fan-out: each model is merged from the same base and experts wherever it is scored.
"""

from __future__ import annotations

from dataclasses import asdict

from mergemix_dagster.core.errors import StoreError
from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
from mergemix_dagster.core.evaluation.harness import BenchmarkScore
from mergemix_dagster.core.evaluation.workers import ProxyJob
from mergemix_dagster.core.progress import Progress
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.steps.proxy_scoring import (
    fingerprinted,
    finished_fingerprints,
    lm_eval_results_path,
    proxy_scorer_spec,
    score_jobs,
    score_rows,
)

BASE_CANDIDATE_ID = "base"


def base_fingerprint(design: dict) -> str:
    # "stderr": base rows written before the noise estimate was kept are rescored once (one candidate)
    return layout.content_version({"base": design["base"], "stderr": 1})


def pending_models(s: Settings, stage: str, store: CheckpointStore, database: EvaluationDatabase) -> tuple[list[dict], int]:
    """The models whose rows are not (all) in DuckDB under the current settings, the base first, and how many
    seed candidates are done. A model: ``candidate_id``, ``kind`` (seed/base), ``alpha`` (None: the base),
    ``fingerprint``."""
    design = store.get_json(layout.candidates_key(stage))
    done = finished_fingerprints(database, stage, s)
    models = []
    if done.get(BASE_CANDIDATE_ID) != base_fingerprint(design):
        models.append({"candidate_id": BASE_CANDIDATE_ID, "kind": "base", "alpha": None,
                       "fingerprint": base_fingerprint(design)})
    seeds = [c for c in design["candidates"] if done.get(c["candidate_id"]) != c["fingerprint"]]
    models += [{"candidate_id": c["candidate_id"], "kind": "seed", "alpha": dict(c["alpha"]),
                "fingerprint": c["fingerprint"]} for c in seeds]
    return models, len(design["candidates"]) - len(seeds)


def stored_score_key(s: Settings, stage: str, model: dict) -> str:
    version = layout.content_version([model["fingerprint"], evaluation_fingerprints(s)])
    return layout.score_key(stage, model["candidate_id"], version)


def unscored(s: Settings, stage: str, store: CheckpointStore, models: list[dict]) -> list[dict]:
    """The models without stored scores (a killed run's finished models have theirs)."""
    return [m for m in models if not store.exists(stored_score_key(s, stage, m))]


def chunked(models: list[dict], size: int | None) -> list[list[dict]]:
    """``models`` in chunks of ``size`` (None: one chunk), in order."""
    size = size or max(1, len(models))
    return [models[i:i + size] for i in range(0, len(models), size)]


def score_models(context, s: Settings, stage: str, store: CheckpointStore, models: list[dict]) -> list[dict]:
    """Score ``models`` with the configured evaluator; each one's scores go to the store when scored.

    Returns ``{"candidate_id", "kind", "seconds"}`` per scored model (what the writing step reports)."""
    todo = unscored(s, stage, store, models)
    if not todo:
        return []
    by_id = {m["candidate_id"]: m for m in todo}
    spec = proxy_scorer_spec(store, stage, s)
    jobs = [ProxyJob(m["candidate_id"], m["alpha"], str(lm_eval_results_path(s, stage, m["candidate_id"])))
            for m in todo]
    progress = Progress(sum(m["kind"] == "seed" for m in todo), "candidates", log=context.log.info, unit="candidate")
    scored: list[dict] = []

    def keep(job: ProxyJob, scores: list[BenchmarkScore], seconds: float) -> None:
        model = by_id[job.candidate_id]
        store.put_json(stored_score_key(s, stage, model),
                       {"candidate_id": job.candidate_id, "seconds": seconds, "scores": [asdict(sc) for sc in scores]},
                       overwrite=True)
        scored.append({"candidate_id": job.candidate_id, "kind": model["kind"], "seconds": seconds})
        if model["kind"] == "seed":
            progress.advance(candidate=job.candidate_id)

    workers = min(s.evaluation.workers, len(jobs))
    context.log.info(f"scoring {len(jobs)} models in {workers} worker process(es)" if s.evaluator.kind == "embedded"
                     else f"scoring {len(jobs)} models with the {s.evaluator.kind} evaluator")
    score_jobs(context, s, stage, store, spec, jobs, keep, workers=workers)
    return scored


def stored_scores(store: CheckpointStore, key: str) -> list[BenchmarkScore]:
    if not store.exists(key):
        raise StoreError(f"no stored scores at {store.uri(key)}: the scoring step of this model did not finish")
    data = store.get_json(key)
    return [BenchmarkScore(**{**sc, "items": None if sc.get("items") is None else tuple(sc["items"])})
            for sc in data["scores"]]


def write_scored(s: Settings, stage: str, store: CheckpointStore, database: EvaluationDatabase,
                 models: list[dict]) -> None:
    """Write the rows of every model in ``models`` from its stored scores (the one step that writes DuckDB)."""
    fingerprints = evaluation_fingerprints(s)
    zero = {d: 0.0 for d in s.domain_names}
    for m in models:
        scores = fingerprinted(stored_scores(store, stored_score_key(s, stage, m)), fingerprints)
        database.upsert_evaluations(score_rows(stage, m["candidate_id"], m["kind"], m["alpha"] or zero, scores,
                                               m["fingerprint"]))
