"""A stage's merged proxies, ready to score: one loaded model, its experts' deltas, one evaluator."""


from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..core.evaluate import BenchmarkScore, Evaluator, TaskSpec
from ..core.merge import InMemoryMerger
from ..core.mixture import Mixture
from ..core.model import load_checkpoint, load_state_dict, resolve_device
from ..resources import CheckpointStore
from ..settings import Settings
from .loading import base_checkpoint, expert_checkpoint_dir


def build_evaluator(s: Settings, heldout: bool = False) -> Evaluator:
    """The search benchmarks; with ``heldout`` also the validation's held-out benchmarks."""
    chosen = list(s.evaluation.tasks) + (list(s.validation.heldout_tasks) if heldout else [])
    tasks = [TaskSpec(t.name, t.capability, t.metric) for t in chosen]
    tasks_dir = Path(s.evaluation.tasks_dir) if s.evaluation.tasks_dir else None
    return Evaluator(tasks, tasks_dir=tasks_dir, batch_size=s.evaluation.batch_size, limit=s.evaluation.limit)


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
    return s.home_path / "lm_eval" / stage / f"{safe}.json"


def open_proxy_scorer(store: CheckpointStore, stage: str, s: Settings, heldout: bool = False) -> ProxyScorer:
    device = str(resolve_device(s.experts.device))
    base_dir, _ = base_checkpoint(store, stage)
    model, tokenizer = load_checkpoint(base_dir, device=device)
    model.eval()
    base_state = load_state_dict(base_dir)
    expert_states = {d: load_state_dict(expert_checkpoint_dir(store, stage, d)[0]) for d in s.domain_names}
    merger = InMemoryMerger(model, base_state, expert_states, method=s.search.merge_method)
    return ProxyScorer(s.domain_names, model, tokenizer, merger, build_evaluator(s, heldout))


def score_rows(
    stage: str,
    candidate_id: str,
    kind: str,
    alpha: dict[str, float],
    scores: list[BenchmarkScore],
    fingerprint: str,
) -> pd.DataFrame:
    """Long rows for the ``evaluations`` table."""
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
            }
            for sc in scores
        ]
    )
