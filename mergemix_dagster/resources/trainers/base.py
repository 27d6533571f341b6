"""What every trainer shares: the job it is given, the outcome it returns, and the helpers of command kinds.

A trainer turns (base, data mixture, recipe) into a validated local checkpoint. Kinds that run the team's
command fill in its placeholders (``placeholders`` + ``render_command``), read what it reported through
Dagster Pipes (``metadata_values``) and validate its checkpoint (``accept``); kinds that run it off this
machine stage their files in the S3 store (``ClusterTrainer``).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mergemix_dagster.core.errors import ConfigError, TrainerCommandError
from mergemix_dagster.core.settings import TrainerSettings, TrainRecipe
from mergemix_dagster.core.training.mixture_file import write_mixture_file
from mergemix_dagster.core.training.trained_checkpoint import add_base_tokenizer, validate_trained_checkpoint


@dataclass(frozen=True)
class TrainJob:
    """One training run: start from ``base``, sample ``weights`` over the corpus files, follow ``recipe``."""

    run_id: str
    base: Path
    weights: dict[str, float]
    corpus_files: dict[str, Path]  # domain -> local jsonl.gz of the stored corpus
    recipe: TrainRecipe
    labels: dict[str, str] = field(default_factory=dict)  # domain, stage: for placeholders and logs
    uris: dict[str, str] = field(default_factory=dict)  # "base" and each domain -> store URI (cluster trainers)


@dataclass
class TrainOutcome:
    checkpoint: Path  # a validated local HF checkpoint
    tokens: int
    seconds: float
    final_loss: float
    metadata: dict[str, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # one per optimiser step, when the trainer tells


@dataclass
class Trainer:
    """One trainer kind: set ``kind``, write ``train``, decorate with ``@register`` (``registry``)."""

    kind: ClassVar[str] = ""
    settings: TrainerSettings | None = None
    store: Any = None  # the CheckpointStore, for kinds that stage their files in it

    @classmethod
    def identity(cls, settings: TrainerSettings) -> dict | None:
        """What about the trainer decides the weights it produces (the recipe is in the cache key already):
        part of the expert's cache key and code version. A command's: the command and what it runs in."""
        section = settings.section
        return {"kind": settings.kind, "command": settings.command, "image": section.runs_in() if section else None}

    def train(self, context, job: TrainJob, workdir: Path) -> TrainOutcome:  # pragma: no cover
        raise NotImplementedError


def placeholders(job: TrainJob, base: str, mixture_json: str, output: str) -> dict[str, str]:
    """The values of the command template's placeholders (``TRAINER_PLACEHOLDERS``)."""
    r = job.recipe
    return {
        "base": base, "mixture_json": mixture_json, "output": output, "tokens": str(r.tokens),
        "learning_rate": repr(r.learning_rate), "schedule": r.schedule, "seq_len": str(r.seq_len),
        "batch_size": str(r.batch_size), "seed": str(r.seed), "warmup_steps": str(r.warmup_steps),
        "domain": job.labels.get("domain", ""), "stage": job.labels.get("stage", ""), "run_id": job.run_id,
    }


def render_command(template: str, values: dict[str, str]) -> list[str]:
    """The command line as argv: the template split like a shell would, then each placeholder filled in
    (so a path with spaces stays one argument)."""
    try:
        return [part.format(**values) for part in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"trainer.command {template!r}: cannot fill in placeholders: {exc}") from exc


def metadata_values(results) -> dict[str, Any]:
    """Metadata the command reported (``report_asset_materialization``), as plain values."""
    out: dict[str, Any] = {}
    for result in results:
        for key, value in (getattr(result, "metadata", None) or {}).items():
            out[key] = getattr(value, "value", value)
    return out


def accept(output: Path, job: TrainJob, seconds: float, reported: dict[str, Any]) -> TrainOutcome:
    """Validate a command's checkpoint and turn what it reported into an outcome."""
    validate_trained_checkpoint(output, job.base)
    copied = add_base_tokenizer(output, job.base)
    tokens = int(reported.get("tokens", job.recipe.steps * job.recipe.tokens_per_step))
    final_loss = float(reported.get("final_loss", float("nan")))
    extra = {k: v for k, v in reported.items() if k not in ("tokens", "final_loss") and isinstance(v, (int, float, str))}
    if copied:
        extra["tokenizer_from_base"] = True
    return TrainOutcome(output, tokens, seconds, final_loss, extra)


@dataclass
class ClusterTrainer(Trainer):
    """The command on a cluster: it reads the base and corpora from the S3 store and writes the checkpoint to
    a staging key there, which is fetched and validated here before it becomes an expert.

    A cluster kind says where the command runs (``where``), launches it (``launch``) and names its failure."""

    failure: ClassVar[str] = "training job failed"

    def where(self) -> str:  # pragma: no cover
        """Where the command runs, for the log: ``kubernetes job in <image>``."""
        raise NotImplementedError

    def launch(self, context, argv: list[str]):  # pragma: no cover
        """Run ``argv`` on the cluster through a Dagster Pipes client; return its invocation."""
        raise NotImplementedError

    def train(self, context, job: TrainJob, workdir: Path) -> TrainOutcome:
        argv, output_key = self.stage(job, workdir)
        context.log.info(f"{self.where()}: {shlex.join(argv)}")
        start = time.perf_counter()
        try:
            invocation = self.launch(context, argv)
        except Exception as exc:  # noqa: BLE001 - the Pipes clients' errors are not public API
            raise TrainerCommandError(f"{self.failure}: {exc}") from exc
        return self.finish(invocation, job, output_key, start)

    def stage(self, job: TrainJob, workdir: Path) -> tuple[list[str], str]:
        """Upload the mixture file; return the command line and the staging key of the output."""
        if not getattr(self.store, "is_s3", False):
            raise ConfigError(f"trainer kind {self.settings.kind!r} needs an s3:// store_root: the job reads and writes there")
        prefix = f"jobs/{job.run_id.replace(':', '-')}-{int(time.time())}"
        corpora = {d: [job.uris[d]] for d in job.corpus_files}
        local = write_mixture_file(workdir / "mixture.json", job.weights, corpora, asdict(job.recipe))
        self.store.put_file(local, f"{prefix}/mixture.json", overwrite=True)
        values = placeholders(job, job.uris["base"], self.store.uri(f"{prefix}/mixture.json"),
                              self.store.uri(f"{prefix}/checkpoint"))
        return render_command(self.settings.command or "", values), f"{prefix}/checkpoint"

    def finish(self, invocation, job: TrainJob, output_key: str, start: float) -> TrainOutcome:
        """Fetch the staged checkpoint and accept it."""
        output = self.store.get_dir(output_key)
        return accept(output, job, time.perf_counter() - start, metadata_values(invocation.get_results()))
