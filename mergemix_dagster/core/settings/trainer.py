"""Who trains experts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mergemix_dagster.core.settings.base import StrictModel


TRAINER_PLACEHOLDERS = (
    "base", "mixture_json", "output", "tokens", "learning_rate", "schedule", "seq_len", "batch_size", "seed",
    "warmup_steps", "domain", "stage", "run_id",
)


class KubernetesTrainerSettings(StrictModel):
    """The pod the ``kubernetes`` trainer runs the command in (dagster-k8s ``PipesK8sClient``)."""

    image: str | None = Field(None, description="the team's trainer image")
    namespace: str = "default"
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu requested and limited")
    cpu: str | None = None
    memory: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict] = Field(default_factory=list)
    service_account: str | None = None


class EcsTrainerSettings(StrictModel):
    """The task the ``ecs`` trainer runs the command in (dagster-aws ``PipesECSClient``)."""

    cluster: str | None = None
    task_definition: str | None = None
    container_name: str = "trainer"
    launch_type: Literal["EC2", "FARGATE"] = "EC2"
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    gpus: int = Field(1, ge=0)


class TrainerSettings(StrictModel):
    """Who trains experts: the in-process loop (``embedded``) or the team's own command, run locally through
    Dagster Pipes (``command``) or on a cluster (``kubernetes``, ``ecs``). docs/cluster.md has the contract."""

    kind: Literal["embedded", "command", "kubernetes", "ecs"] = "embedded"
    command: str | None = Field(
        None, description="command template, e.g. 'torchrun --nproc_per_node 8 train.py --init {base} "
        "--mixture {mixture_json} --tokens {tokens} --lr {learning_rate} --schedule constant --out {output}'"
    )
    env: dict[str, str] = Field(default_factory=dict, description="extra environment of the command")
    kubernetes: KubernetesTrainerSettings = KubernetesTrainerSettings()
    ecs: EcsTrainerSettings = EcsTrainerSettings()
    pool: str = Field("mergemix_training", description="Dagster concurrency pool of the training assets "
                      "(experts, reference runs): cap concurrent GPU jobs with `dagster instance concurrency set`")

    @model_validator(mode="after")
    def _command_fits(self) -> "TrainerSettings":
        import string

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
        if self.kind == "kubernetes" and not self.kubernetes.image:
            raise ValueError("trainer kind 'kubernetes' needs trainer.kubernetes.image")
        if self.kind == "ecs" and not (self.ecs.cluster and self.ecs.task_definition):
            raise ValueError("trainer kind 'ecs' needs trainer.ecs.cluster and trainer.ecs.task_definition")
        return self
