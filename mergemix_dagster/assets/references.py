"""Reference runs: a model trained from the stage base on an actual data mixture, with the expert recipe.

A reference run is identified by the hash of everything it is trained from (base, corpora, recipe, mixture,
seed), so the fidelity study and the mixture-quality study share runs (uniform and the chosen mixture at the
first seed are trained once), an interrupted study resumes with the runs it finished, and a finished run is
never trained again. Its checkpoint is stored (a user's reference run is a real training run worth keeping),
its scores go to the ``evaluations`` table (kind ``validation_trained``) and its cost to ``training_runs``.
"""


import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.corpora import tokenize_documents
from ..core.evaluate import Evaluator
from ..core.mixture import Mixture
from ..core.model import load_checkpoint, save_checkpoint
from ..core.scores import capability_means
from ..core.train import train
from ..core.validation import with_general
from ..resources import CheckpointStore, EvaluationDatabase
from ..settings import Settings
from . import layout
from .base import recipe_from
from .loading import base_checkpoint, configured_rows, corpus_documents, read_pointer
from .proxies import build_evaluator, score_rows

REFERENCE_KIND = "validation_trained"
PROXY_KIND = "validation_proxy"


def reference_candidate_id(run_id: str) -> str:
    return f"ref:{run_id}"


def proxy_candidate_id(fingerprint: str) -> str:
    return f"proxy:{fingerprint}"


@dataclass
class ReferenceTrainer:
    """Trains, stores and scores reference runs of one stage; skips whatever is already done."""

    s: Settings
    store: CheckpointStore
    database: EvaluationDatabase
    stage: str
    log: Callable[[str], None] = print
    _streams: dict | None = field(default=None, init=False)
    _evaluator: Evaluator | None = field(default=None, init=False)
    _done: set[str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Only fingerprints here: a run id needs no weights (the base is fetched when a run trains).
        self.base_fp = read_pointer(self.store, layout.base_pointer(self.stage), f"base of stage {self.stage!r}")[
            "fingerprint"
        ]
        names = list(self.s.domain_names) + (["general"] if self.s.experts.general_fraction > 0 else [])
        self.corpora = {
            d: read_pointer(self.store, layout.corpus_pointer(d), f"corpus {d!r}")["fingerprint"] for d in names
        }

    def run_id(self, mixture: Mixture, seed: int) -> str:
        return layout.content_version(
            {
                "base": self.base_fp,
                "corpora": self.corpora,
                "recipe": self.s.experts.model_dump() | {"seed": seed},
                "alpha": mixture.as_dict(),
            }
        )

    def seeds(self, n: int) -> list[int]:
        return [self.s.experts.seed + i for i in range(n)]

    def _scored(self) -> set[str]:
        rows = configured_rows(self.database.evaluations(self.stage), self.s, heldout=True)
        rows = rows[rows["kind"] == REFERENCE_KIND]
        n_tasks = len(self.s.evaluation.tasks) + len(self.s.validation.heldout_tasks)
        counts = rows.groupby("model_fingerprint").size()
        return {fp for fp, n in counts.items() if n >= n_tasks}

    def _token_streams(self, tokenizer) -> dict[str, np.ndarray]:
        if self._streams is None:
            self._streams = {d: tokenize_documents(corpus_documents(self.store, d)[0], tokenizer) for d in self.corpora}
        return self._streams

    def ensure(self, mixture: Mixture, seed: int, study: str) -> tuple[str, bool]:
        """Make sure the run (mixture, seed) is trained and scored; returns (run_id, did_work)."""
        run_id = self.run_id(mixture, seed)
        if self._done is None:
            self._done = self._scored()
        if run_id in self._done:
            return run_id, False
        key = f"stages/{self.stage}/references/{run_id}"
        if self.store.exists(key):  # trained before an interruption, not yet scored
            self.log(f"reference {mixture.label()} seed {seed}: stored checkpoint found, scoring it")
            model, tokenizer = load_checkpoint(self.store.get_dir(key))
        else:
            model, tokenizer = load_checkpoint(base_checkpoint(self.store, self.stage)[0])
            recipe = recipe_from(self.s.experts.model_copy(update={"seed": seed}))
            data_mixture = with_general(mixture, self.s.experts.general_fraction)
            self.log(f"training reference {mixture.label()} seed {seed} ({study}): {recipe.tokens:,} tokens")
            report = train(model, self._token_streams(tokenizer), data_mixture, recipe)
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(model, tokenizer, Path(tmp) / "ckpt")
                self.store.put_dir(Path(tmp) / "ckpt", key)
            self.database.record_training_run(
                self.stage, run_id, study, mixture.as_dict(), seed, report.tokens, report.seconds,
                report.final_loss, self.store.uri(key),
            )
        if self._evaluator is None:
            self._evaluator = build_evaluator(self.s, heldout=True)
        scores = self._evaluator.evaluate(model, tokenizer)
        self.database.upsert_evaluations(
            score_rows(self.stage, reference_candidate_id(run_id), REFERENCE_KIND, mixture.as_dict(), scores, run_id)
        )
        self._done.add(run_id)
        self.log(f"reference {mixture.label()} seed {seed}: " + ", ".join(f"{x.task}={x.value:.3f}" for x in scores))
        return run_id, True


def scores_by_fingerprint(
    database: EvaluationDatabase, stage: str, kind: str, s: Settings
) -> dict[str, dict[str, float]]:
    """model fingerprint -> {capability: mean over the search tasks} plus ``heldout:<task>`` entries."""
    rows = configured_rows(database.evaluations(stage), s, heldout=True)
    rows = rows[rows["kind"] == kind]
    search_tasks = {t.name for t in s.evaluation.tasks}
    out: dict[str, dict[str, float]] = {}
    for fp, group in rows.groupby("model_fingerprint"):
        search = group[group["task"].isin(search_tasks)]
        scores = capability_means(zip(search["capability"], search["value"]))
        for t in s.validation.heldout_tasks:
            hit = group[group["task"] == t.name]
            if not hit.empty:
                scores[f"heldout:{t.name}"] = float(hit["value"].iloc[0])
        out[str(fp)] = scores
    return out

