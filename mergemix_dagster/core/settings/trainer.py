"""Who trains experts: ``trainer.kind``, the command template, and each kind's own section.

The trainers themselves live in ``resources/trainers/`` (one module per kind, registered by kind); core
may not import resources, so the settings a kind needs are declared here, next to the other kinds'.

Why one flat ``TrainerSettings`` with a section per kind (``trainer.kubernetes``, ``trainer.ecs``) rather
than a union discriminated by ``kind``: its ``model_dump()`` is part of the experts' cache keys and has
always held every section; a union would dump only the chosen one and make every stored expert stale.
A section therefore says itself what it needs (``problem``) and what the command runs in (``runs_in``),
so ``TrainerSettings`` has no branch per kind; a section added later dumps only when set.

Adding a kind ``slurm``: its name in ``TrainerKind``; if it has settings of its own, a
``SlurmTrainerSettings(TrainerKindSettings)`` and a field ``slurm`` of ``TrainerSettings`` (named like the
kind); then its trainer module in ``resources/trainers/`` (see that package).
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import Field, model_serializer, model_validator

from mergemix_dagster.core.settings.base import StrictModel

TRAINER_PLACEHOLDERS = (
    "base", "mixture_json", "output", "tokens", "learning_rate", "schedule", "seq_len", "batch_size", "seed",
    "warmup_steps", "domain", "stage", "run_id",
)

TrainerKind = Literal["embedded", "command", "kubernetes", "ecs"]

#: sections that dump even when they hold their defaults (they did before sections dumped only when set)
ALWAYS_DUMPED = ("kubernetes", "ecs")


class TrainerKindSettings(StrictModel):
    """The section of one trainer kind (``trainer.<kind>``): where its command runs."""

    def problem(self, kind: str) -> str | None:
        """Why this section cannot run ``kind``'s command, as an error message; None when it can."""
        return None

    def runs_in(self) -> str | None:
        """What the command runs in (an image, a task definition): part of the trainer's identity."""
        return None


class KubernetesTrainerSettings(TrainerKindSettings):
    """The pod the ``kubernetes`` trainer runs the command in (dagster-k8s ``PipesK8sClient``)."""

    image: str | None = Field(None, description="the team's trainer image")
    namespace: str = "default"
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu requested and limited")
    cpu: str | None = None
    memory: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict] = Field(default_factory=list)
    service_account: str | None = None

    def problem(self, kind: str) -> str | None:
        return None if self.image else f"trainer kind {kind!r} needs trainer.kubernetes.image"

    def runs_in(self) -> str | None:
        return self.image


class EcsTrainerSettings(TrainerKindSettings):
    """The task the ``ecs`` trainer runs the command in (dagster-aws ``PipesECSClient``)."""

    cluster: str | None = None
    task_definition: str | None = None
    container_name: str = "trainer"
    launch_type: Literal["EC2", "FARGATE"] = "EC2"
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    gpus: int = Field(1, ge=0)

    def problem(self, kind: str) -> str | None:
        if self.cluster and self.task_definition:
            return None
        return f"trainer kind {kind!r} needs trainer.ecs.cluster and trainer.ecs.task_definition"

    def runs_in(self) -> str | None:
        return self.task_definition


class TrainerSettings(StrictModel):
    """Who trains experts: the in-process loop (``embedded``) or the team's own command, run locally through
    Dagster Pipes (``command``) or on a cluster (``kubernetes``, ``ecs``). docs/cluster.md has the contract."""

    kind: TrainerKind = "embedded"
    command: str | None = Field(
        None, description="command template, e.g. 'torchrun --nproc_per_node 8 train.py --init {base} "
        "--mixture {mixture_json} --tokens {tokens} --lr {learning_rate} --schedule constant --out {output}'"
    )
    env: dict[str, str] = Field(default_factory=dict, description="extra environment of the command")
    kubernetes: KubernetesTrainerSettings = KubernetesTrainerSettings()
    ecs: EcsTrainerSettings = EcsTrainerSettings()
    pool: str = Field("mergemix_training", description="Dagster concurrency pool of the training assets "
                      "(experts, reference runs): cap concurrent GPU jobs with `dagster instance concurrency set`")

    @property
    def section(self) -> TrainerKindSettings | None:
        """The chosen kind's own section (``trainer.<kind>``), if it has one."""
        value = getattr(self, self.kind, None)
        return value if isinstance(value, TrainerKindSettings) else None

    @model_validator(mode="after")
    def _command_fits(self) -> "TrainerSettings":
        if self.kind == "embedded":
            return self
        if not self.command:
            raise ValueError(f"trainer kind {self.kind!r} needs trainer.command")
        used = {name for _, name, _, _ in string.Formatter().parse(self.command) if name is not None}
        unknown = sorted(used - set(TRAINER_PLACEHOLDERS))
        if unknown:
            raise ValueError(f"trainer.command uses unknown placeholders {unknown}; known: {list(TRAINER_PLACEHOLDERS)}")
        if not {"output", "base", "mixture_json"} <= used:
            raise ValueError("trainer.command must use {base}, {mixture_json} and {output}")
        problem = self.section.problem(self.kind) if self.section else None
        if problem:
            raise ValueError(problem)
        return self

    @model_serializer(mode="wrap")
    def _sections_dump_when_set(self, handler):
        """A kind's section added after the settings existed dumps only when set, so cache keys hold."""
        data = handler(self)
        for name in type(self).model_fields:
            value = getattr(self, name)
            if (isinstance(data, dict) and name not in ALWAYS_DUMPED and isinstance(value, TrainerKindSettings)
                    and value == type(value)()):
                data.pop(name, None)
        return data
