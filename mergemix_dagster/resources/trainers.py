"""Trainers: who turns (base, data mixture, recipe) into a trained checkpoint, chosen by ``trainer.kind``.

- ``embedded``: the project's loop (``core.train``) inside the Dagster step process (default);
- ``command``: the team's own command (``trainer.command``, placeholders in docs/cluster.md), launched with
  Dagster Pipes' ``PipesSubprocessClient``: its Pipes logs reach the event log, its reported metadata the
  asset's metadata, and its stdout/stderr the step's compute logs;
- ``kubernetes`` / ``ecs``: the same command in the team's image, through dagster-k8s ``PipesK8sClient`` /
  dagster-aws ``PipesECSClient``; paths are the store's ``s3://`` URIs. Built and tested here as specs only:
  they were never run against a cluster.

Whatever trained it, a checkpoint is validated (``core.trained_checkpoint``) before it is accepted.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from mergemix_dagster.core.data.corpora import read_corpus, tokenize_documents
from mergemix_dagster.core.errors import ConfigError, TrainerCommandError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.mixture_file import write_mixture_file
from mergemix_dagster.core.training.model import load_checkpoint, save_checkpoint
from mergemix_dagster.core.training.loop import TrainProgress, TrainRecipe, train
from mergemix_dagster.core.training.trained_checkpoint import add_base_tokenizer, validate_trained_checkpoint
from mergemix_dagster.core.settings import TrainerSettings


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


def trainer_identity(settings: TrainerSettings) -> dict | None:
    """What about the trainer decides the weights it produces (None for the embedded loop, whose recipe
    is already in the cache key): part of the expert's cache key and code version."""
    if settings.kind == "embedded":
        return None
    image = {"kubernetes": settings.kubernetes.image, "ecs": settings.ecs.task_definition}.get(settings.kind)
    return {"kind": settings.kind, "command": settings.command, "image": image}


def placeholders(job: TrainJob, base: str, mixture_json: str, output: str) -> dict[str, str]:
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


def _metadata_values(results) -> dict[str, Any]:
    """Metadata the command reported (``report_asset_materialization``), as plain values."""
    out: dict[str, Any] = {}
    for result in results:
        for key, value in (getattr(result, "metadata", None) or {}).items():
            out[key] = getattr(value, "value", value)
    return out


class EmbeddedTrainer:
    """The in-process loop; progress lines go to the step's log."""

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


@dataclass
class CommandTrainer:
    """The team's command on this machine, through ``PipesSubprocessClient``."""

    settings: TrainerSettings

    def train(self, context, job: TrainJob, workdir: Path) -> TrainOutcome:
        mixture_json = write_mixture_file(
            workdir / "mixture.json", job.weights, {d: [str(f)] for d, f in job.corpus_files.items()},
            asdict(job.recipe),
        )
        output = workdir / "checkpoint"
        argv = render_command(self.settings.command or "", placeholders(job, str(job.base), str(mixture_json), str(output)))
        context.log.info(f"training command: {shlex.join(argv)}")
        start = time.perf_counter()
        try:
            invocation = dg.PipesSubprocessClient(cwd=str(workdir)).run(
                context=context, command=argv, env=dict(self.settings.env)
            )
        except Exception as exc:  # noqa: BLE001 - Dagster's Pipes error class is not public API
            raise TrainerCommandError(f"training command failed: {shlex.join(argv)}: {exc}") from exc
        seconds = time.perf_counter() - start
        return accept(output, job, seconds, _metadata_values(invocation.get_results()))


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


def trainer_for(settings: TrainerSettings, store=None):
    """The trainer of ``settings.kind``; cluster kinds stage their files in ``store`` (S3)."""
    if settings.kind == "embedded":
        return EmbeddedTrainer()
    if settings.kind == "command":
        return CommandTrainer(settings)
    from mergemix_dagster.resources.cluster_trainers import EcsTrainer, KubernetesTrainer

    return (KubernetesTrainer if settings.kind == "kubernetes" else EcsTrainer)(settings, store)
