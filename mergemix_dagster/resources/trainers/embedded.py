"""``embedded``: the project's own loop (``core.training.loop.train``) inside the Dagster step process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mergemix_dagster.core.data.corpora import read_corpus, tokenize_documents
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.settings import TrainerSettings
from mergemix_dagster.core.training.loop import TrainProgress, train
from mergemix_dagster.core.training.model import load_checkpoint, save_checkpoint
from mergemix_dagster.resources.trainers.base import Trainer, TrainJob, TrainOutcome
from mergemix_dagster.resources.trainers.registry import register


@register
@dataclass
class EmbeddedTrainer(Trainer):
    """The in-process loop; progress lines go to the step's log."""

    kind = "embedded"

    @classmethod
    def identity(cls, settings: TrainerSettings) -> None:
        """Nothing beyond the recipe, which is in the cache key already."""
        return None

    def train(self, context, job: TrainJob, workdir: Path) -> TrainOutcome:
        model, tokenizer = load_checkpoint(job.base)
        streams = {d: tokenize_documents(read_corpus(f), tokenizer) for d, f in job.corpus_files.items()}
        name = job.labels.get("domain", job.run_id)

        def log(p: TrainProgress) -> None:
            context.log.info(f"{name} {p.line()}")

        report = train(model, streams, Mixture.from_dict(job.weights), job.recipe, on_log=log)
        out = save_checkpoint(model, tokenizer, workdir / "checkpoint")
        return TrainOutcome(
            out, report.tokens, report.seconds, report.final_loss,
            {
                "corpus_tokens": int(len(streams.get(job.labels.get("domain", ""), ()))),
                "first_loss": report.losses[0] if report.losses else float("nan"),
                "tokens_per_second": report.tokens_per_second,
            },
            losses=report.losses,
        )
