"""A stage's merged proxies, ready to score: one loaded model, its experts' deltas, one evaluator.

Every score carries an ``evaluation_fingerprint``: a hash of what decided it besides the model (the task's
YAML and data files, the metric, ``evaluation.limit``). Rows scored under other settings are then never
taken as done nor mixed with fresh ones (``artifacts.configured_rows``).
"""


import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mergemix_dagster.core.evaluation.harness import BenchmarkScore, Evaluator, TaskSpec
from mergemix_dagster.core.evaluation.workers import OnScored, ProxyJob, ScorerSpec, score_proxies
from mergemix_dagster.core.merge import InMemoryMerger
from mergemix_dagster.core.merge.offloaded import OffloadedMerger
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.model import load_checkpoint, load_model_state, resolve_device
from mergemix_dagster.resources import CheckpointStore
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources.artifacts import base_checkpoint, expert_checkpoint_dir
from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
from mergemix_dagster.resources import EvaluationDatabase
from mergemix_dagster.resources.artifacts import configured_rows
from mergemix_dagster.resources import layout
from mergemix_dagster.resources.evaluators import evaluator_for


@dataclass(frozen=True)
class IdentifiedScore(BenchmarkScore):
    """A score and the fingerprint of the evaluation settings it was computed under."""

    evaluation_fingerprint: str = ""


class IdentifiedEvaluator(Evaluator):
    """An ``Evaluator`` whose scores carry their ``evaluation_fingerprint`` (``fingerprints``: task -> hash)."""

    def __init__(self, *args, fingerprints: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fingerprints = dict(fingerprints)

    def evaluate(self, model, tokenizer, **kwargs) -> list[BenchmarkScore]:
        return fingerprinted(super().evaluate(model, tokenizer, **kwargs), self.fingerprints)


def build_evaluator(s: Settings, heldout: bool = False) -> Evaluator:
    """The search benchmarks; with ``heldout`` also the validation's held-out benchmarks."""
    chosen = list(s.evaluation.tasks) + (list(s.validation.heldout_tasks) if heldout else [])
    tasks = [TaskSpec(t.name, t.capability, t.metric) for t in chosen]
    tasks_dir = Path(s.evaluation.tasks_dir) if s.evaluation.tasks_dir else None
    return IdentifiedEvaluator(
        tasks, tasks_dir=tasks_dir, batch_size=s.evaluation.batch_size, limit=s.evaluation.limit,
        fingerprints=evaluation_fingerprints(s, heldout),
    )


@dataclass
class ProxyScorer:
    """Merges any α into one in-memory model and scores it; no checkpoint is written per candidate."""

    domains: tuple[str, ...]
    model: object
    tokenizer: object
    merger: InMemoryMerger
    evaluator: Evaluator

    def score(self, mixture: Mixture, results_path: Path | None = None) -> list[BenchmarkScore]:
        """``results_path``: keep lm-eval's results JSON of this candidate there (see ``lm_eval_results_path``)."""
        self.merger.apply(mixture)
        return self.evaluator.evaluate(
            self.model, self.tokenizer, results_path=results_path, model_name=f"merged proxy {mixture.label()}"
        )

    def score_base(self, results_path: Path | None = None) -> list[BenchmarkScore]:
        self.merger.restore_base()
        return self.evaluator.evaluate(self.model, self.tokenizer, results_path=results_path, model_name="base")


def lm_eval_results_path(s: Settings, stage: str, candidate_id: str) -> Path:
    """Where a candidate's lm-eval results JSON is kept: ``<home>/lm_eval/<stage>/<candidate>.json``."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in candidate_id)
    return layout.lm_eval_dir(s.home_path, stage) / f"{safe}.json"


def open_proxy_scorer(store: CheckpointStore, stage: str, s: Settings, heldout: bool = False) -> ProxyScorer:
    """Load the stage base and its experts (each verified against its record) for in-memory merging.

    Tensors are taken under the names the loaded model uses, so any Hugging Face causal LM merges (a
    GPT-NeoX head is ``embed_out`` on disk); NaN/inf weights are refused by the merger's checks.
    """
    device = str(resolve_device(evaluation_device(s)))
    base_dir, _ = base_checkpoint(store, stage)
    model, tokenizer = load_checkpoint(base_dir, device=device)
    model.eval()
    base_state = load_model_state(base_dir)
    expert_states = {d: load_model_state(expert_checkpoint_dir(store, stage, d)[0]) for d in s.domain_names}
    merger_class = OffloadedMerger if s.evaluation.task_vectors == "cpu" else InMemoryMerger
    merger = merger_class(model, base_state, expert_states, method=s.search.merge_method)
    return ProxyScorer(s.domain_names, model, tokenizer, merger, build_evaluator(s, heldout))


def evaluation_device(s: Settings) -> str:
    """``evaluation.device``, or the experts' device when it is not set."""
    return s.evaluation.device or s.experts.device


def proxy_scorer_spec(
    store: CheckpointStore, stage: str, s: Settings, heldout: bool = False, expert_dirs: dict[str, Path] | None = None
) -> ScorerSpec:
    """What a worker process needs to open the stage's scorer (checkpoints verified here, once).

    ``expert_dirs``: other experts to merge than the stage's domain experts (one domain's sub-domain experts);
    their names label the α of the jobs.
    """
    base_dir, _ = base_checkpoint(store, stage)
    if expert_dirs is None:
        expert_dirs = {d: expert_checkpoint_dir(store, stage, d)[0] for d in s.domain_names}
    experts = {d: str(path) for d, path in expert_dirs.items()}
    chosen = list(s.evaluation.tasks) + (list(s.validation.heldout_tasks) if heldout else [])
    e = s.evaluation
    return ScorerSpec(
        str(base_dir), experts, tuple(TaskSpec(t.name, t.capability, t.metric) for t in chosen),
        tasks_dir=e.tasks_dir, batch_size=e.batch_size, limit=e.limit, method=s.search.merge_method,
        device=evaluation_device(s), task_vectors=e.task_vectors,
        threads=e.threads or (1 if e.workers > 1 else None),
    )


def fingerprinted(scores: list[BenchmarkScore], fingerprints: dict[str, str]) -> list[IdentifiedScore]:
    """Scores from a worker's plain ``Evaluator`` with the ``evaluation_fingerprint`` of their task."""
    return [IdentifiedScore(**asdict(sc), evaluation_fingerprint=fingerprints.get(sc.task, "")) for sc in scores]


def score_rows(
    stage: str,
    candidate_id: str,
    kind: str,
    alpha: dict[str, float],
    scores: list[BenchmarkScore],
    fingerprint: str,
) -> pd.DataFrame:
    """Long rows for the ``evaluations`` table, with each score's per-item values (``item_values``; None for a
    metric that is not a mean of items) for the paired noise of differences between mixtures."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return pd.DataFrame(
        [
            {
                "stage": stage,
                "candidate_id": candidate_id,
                "kind": kind,
                "alpha": dict(alpha),
                "task": sc.task,
                "metric": sc.metric,
                "value": float(sc.value),
                "capability": sc.capability,
                "model_fingerprint": fingerprint,
                "evaluated_at": now,
                "evaluation_fingerprint": getattr(sc, "evaluation_fingerprint", None) or None,
                "stderr": sc.stderr,
                "item_values": None if sc.items is None else tuple(float(v) for v in sc.items),
            }
            for sc in scores
        ]
    )


def finished_fingerprints(db: EvaluationDatabase, stage: str, s: Settings) -> dict[str, str]:
    """candidate_id -> model fingerprint, for candidates with every configured task and metric scored."""
    rows = configured_rows(db.evaluations(stage), s)
    n_metrics = len(s.evaluation.tasks)
    if rows.empty:
        return {}
    counts = rows.groupby(["candidate_id", "model_fingerprint"]).size()
    return {cid: fp for (cid, fp), n in counts.items() if n >= n_metrics}


def score_jobs(context, s: Settings, stage: str, store: CheckpointStore, spec: ScorerSpec, jobs: list[ProxyJob],
               on_scored: OnScored, workers: int = 1) -> None:
    """Score ``jobs`` with the configured evaluator (``evaluator.kind``); ``on_scored(job, scores, seconds)`` as
    each finishes. ``embedded``: merged in memory and scored with the project's lm-eval call
    (``core.evaluation.workers.score_proxies``, ``workers`` processes); any other kind: each candidate is written
    by the streaming merge and scored by the team's command (``resources/evaluators.py``), which needs the step's
    Dagster ``context`` (Pipes). Every search and validation path scores through here, so one stage's rows
    are never scored by two evaluators."""
    evaluator = evaluator_for(s.evaluator, store)
    if evaluator is None:
        score_proxies(spec, jobs, on_scored, workers=max(1, min(workers, len(jobs))))
        return
    workdir = layout.lm_eval_dir(s.home_path, stage) / ".work"
    for job in jobs:
        start = time.perf_counter()
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in job.candidate_id)
        scores = evaluator.score(context, spec, job, workdir / safe, stage)
        on_scored(job, scores, time.perf_counter() - start)


def score_one(context, s: Settings, stage: str, store: CheckpointStore, mixture: Mixture, candidate_id: str,
              heldout: bool = False) -> list[IdentifiedScore]:
    """One mixture of the stage's experts, scored by the configured evaluator, with its fingerprints."""
    scored: list = []
    job = ProxyJob(candidate_id, mixture.as_dict(), str(lm_eval_results_path(s, stage, candidate_id)))
    score_jobs(context, s, stage, store, proxy_scorer_spec(store, stage, s, heldout), [job],
               lambda _job, scores, _seconds: scored.extend(scores))
    return fingerprinted(scored, evaluation_fingerprints(s, heldout))
