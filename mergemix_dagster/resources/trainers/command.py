"""``command``: the team's own command (``trainer.command``) on this machine, through Dagster Pipes'
``PipesSubprocessClient``: its Pipes logs reach the event log, its reported metadata the asset's metadata,
and its stdout/stderr the step's compute logs."""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import dagster as dg

from mergemix_dagster.core.errors import TrainerCommandError
from mergemix_dagster.core.training.mixture_file import write_mixture_file
from mergemix_dagster.resources.trainers.base import (
    Trainer,
    TrainJob,
    TrainOutcome,
    accept,
    metadata_values,
    placeholders,
    render_command,
)
from mergemix_dagster.resources.trainers.registry import register


@register
@dataclass
class CommandTrainer(Trainer):
    """The team's command on this machine, through ``PipesSubprocessClient``."""

    kind = "command"

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
        return accept(output, job, seconds, metadata_values(invocation.get_results()))
