"""Who scores candidates: ``evaluator.kind``, its command template, and how candidates are split into steps.

Like ``trainer.kind``: ``embedded`` (default) merges each candidate in memory and scores it with the project's
lm-eval call; ``command`` runs the team's own evaluation command on this machine through Dagster Pipes;
``kubernetes`` / ``ecs`` run it in the team's image on a cluster (sections shaped like the trainer's). For the
non-embedded kinds the merged candidate is written as a checkpoint (streaming merge) and the command must write
lm-eval's results JSON under ``{output}``. The evaluators live in ``resources/evaluators.py``.

``chunk_size`` decides how the pending candidates of an evaluation are split into Dagster steps (the dynamic
fan-out of ``candidate_evaluations``): it decides no score, so it is in no cache key or version.

The whole section dumps only when it differs from its default, so settings files without it keep their cache
keys (``Settings`` drops it from its dump; see ``core/settings/__init__.py``).
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import Field, model_validator

from mergemix_dagster.core.settings.base import StrictModel
from mergemix_dagster.core.settings.trainer import EcsTrainerSettings, KubernetesTrainerSettings

EVALUATOR_PLACEHOLDERS = ("model", "tasks", "output", "tasks_dir", "limit", "batch_size", "candidate", "stage")

EvaluatorKind = Literal["embedded", "command", "kubernetes", "ecs"]


class EvaluatorSettings(StrictModel):
    """Who scores a merged candidate, and in how many Dagster steps the candidates are scored."""

    kind: EvaluatorKind = "embedded"
    command: str | None = Field(
        None, description="command template, e.g. 'lm_eval --model hf --model_args pretrained={model} --tasks "
        "{tasks} --include_path {tasks_dir} --output_path {output}'; it must write lm-eval's results JSON under "
        "{output}")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment of the command")
    kubernetes: KubernetesTrainerSettings = KubernetesTrainerSettings()
    ecs: EcsTrainerSettings = EcsTrainerSettings()
    chunk_size: int | None = Field(
        None, ge=1, description="candidates per scoring step (the fan-out unit Dagster's executor schedules); "
        "default: every pending candidate in one step")

    @property
    def section(self) -> KubernetesTrainerSettings | EcsTrainerSettings | None:
        return getattr(self, self.kind, None) if self.kind in ("kubernetes", "ecs") else None

    def identity(self) -> dict | None:
        """What about the evaluator decides the scores: part of the evaluation fingerprint (None: embedded)."""
        if self.kind == "embedded":
            return None
        section = self.section
        return {"kind": self.kind, "command": self.command, "image": section.runs_in() if section else None}

    @model_validator(mode="after")
    def _command_fits(self) -> EvaluatorSettings:
        if self.kind == "embedded":
            return self
        if not self.command:
            raise ValueError(f"evaluator kind {self.kind!r} needs evaluator.command")
        used = {name for _, name, _, _ in string.Formatter().parse(self.command) if name is not None}
        unknown = sorted(used - set(EVALUATOR_PLACEHOLDERS))
        if unknown:
            raise ValueError(f"evaluator.command uses unknown placeholders {unknown}; known: {list(EVALUATOR_PLACEHOLDERS)}")
        if not {"model", "output"} <= used:
            raise ValueError("evaluator.command must use {model} and {output}")
        problem = self.section.problem(self.kind) if self.section else None
        if problem:
            raise ValueError(problem.replace("trainer", "evaluator"))
        return self
