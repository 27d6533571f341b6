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
from typing import Any, Callable

import numpy as np

from mergemix_dagster.core.data.corpora import tokenize_documents
from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.evaluation.harness import Evaluator
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.model import load_checkpoint, save_checkpoint
from mergemix_dagster.core.evaluation.scores import capability_means
from mergemix_dagster.core.training.loop import train
from mergemix_dagster.core.evaluation.fidelity import with_general
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.trainers import TrainJob, trainer_for, trainer_identity
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import layout
from mergemix_dagster.core.training.loop import recipe_from
from mergemix_dagster.resources.layout import loss_history_key
from mergemix_dagster.resources.artifacts import base_checkpoint, configured_rows, corpus_documents, read_pointer
from mergemix_dagster.steps.proxy_scoring import build_evaluator, score_rows

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
    context: Any = None  # the Dagster context: needed only by non-embedded trainers (Pipes)
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
            | ({"trainer": trainer_identity(self.s.trainer)} if self.s.trainer.kind != "embedded" else {})
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

    def _train_with_command(self, run_id: str, data_mixture: Mixture, recipe, key: str) -> tuple[int, float, float]:
        """Train one reference run with the configured (non-embedded) trainer; returns (tokens, seconds, loss)."""
        if self.context is None:
            raise ConfigError(
                f"reference runs with trainer kind {self.s.trainer.kind!r} need the Dagster context "
                "(ReferenceTrainer(context=...)) to launch the command through Pipes"
            )
        base_dir, _ = base_checkpoint(self.store, self.stage)
        pointers = {d: read_pointer(self.store, layout.corpus_pointer(d), d) for d in data_mixture.as_dict()}
        base_pointer = read_pointer(self.store, layout.base_pointer(self.stage), "base")
        uris = {"base": self.store.uri(base_pointer["key"]) if "key" in base_pointer else base_pointer["path"]}
        job = TrainJob(
            f"reference:{run_id}", base_dir, {d: w for d, w in data_mixture.as_dict().items() if w > 0},
            {d: self.store.get_file(p["key"]) for d, p in pointers.items() if data_mixture.as_dict()[d] > 0},
            recipe, {"stage": self.stage}, uris | {d: self.store.uri(p["key"]) for d, p in pointers.items()},
        )
        with tempfile.TemporaryDirectory() as tmp:
            outcome = trainer_for(self.s.trainer, self.store).train(self.context, job, Path(tmp))
            self.store.put_dir(outcome.checkpoint, key)
        return outcome.tokens, outcome.seconds, outcome.final_loss

    def checkpoint_key(self, run_id: str) -> str:
        return layout.reference_key(self.stage, run_id)

    def losses(self, run_id: str) -> list[float] | None:
        """The per-step training loss of a finished run (None for runs trained by a command, or before
        loss histories were kept)."""
        key = loss_history_key(self.checkpoint_key(run_id))
        return self.store.get_json(key)["losses"] if self.store.exists(key) else None

    def ensure(self, mixture: Mixture, seed: int, study: str) -> tuple[str, bool]:
        """Make sure the run (mixture, seed) is trained and scored; returns (run_id, did_work)."""
        run_id = self.run_id(mixture, seed)
        if self._done is None:
            self._done = self._scored()
        if run_id in self._done:
            return run_id, False
        key = self.checkpoint_key(run_id)
        if self.store.exists(key):  # trained before an interruption, not yet scored
            self.log(f"reference {mixture.label()} seed {seed}: stored checkpoint found, scoring it")
            model, tokenizer = load_checkpoint(self.store.get_dir(key))
        else:
            model, tokenizer = load_checkpoint(base_checkpoint(self.store, self.stage)[0])
            recipe = recipe_from(self.s.experts.model_copy(update={"seed": seed}))
            data_mixture = with_general(mixture, self.s.experts.general_fraction)
            self.log(f"training reference {mixture.label()} seed {seed} ({study}): {recipe.tokens:,} tokens")
            if self.s.trainer.kind == "embedded":
                report = train(model, self._token_streams(tokenizer), data_mixture, recipe)
                with tempfile.TemporaryDirectory() as tmp:
                    save_checkpoint(model, tokenizer, Path(tmp) / "ckpt")
                    self.store.put_dir(Path(tmp) / "ckpt", key)
                self.store.put_json(loss_history_key(key), {"losses": report.losses}, overwrite=True)
                tokens, seconds, final_loss = report.tokens, report.seconds, report.final_loss
            else:  # the team's trainer, as for the experts the proxies are merged from
                tokens, seconds, final_loss = self._train_with_command(run_id, data_mixture, recipe, key)
                model, tokenizer = load_checkpoint(self.store.get_dir(key))
            self.database.record_training_run(
                self.stage, run_id, study, mixture.as_dict(), seed, tokens, seconds, final_loss, self.store.uri(key),
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

