"""``ecs``: the team's command in an ECS task of its task definition, through dagster-aws ``PipesECSClient``.

NOT exercised on a cluster: the RunTask request is built from settings and tested against botocore's ECS
model, but no task was ever launched from this code.
"""

from __future__ import annotations

from dataclasses import dataclass

from mergemix_dagster.core.settings import EcsTrainerSettings
from mergemix_dagster.resources.trainers.base import ClusterTrainer
from mergemix_dagster.resources.trainers.registry import register


def ecs_run_task_params(e: EcsTrainerSettings, argv: list[str], env: dict[str, str]) -> dict:
    """``run_task_params`` for ``PipesECSClient`` (the boto3 ``ecs.run_task`` request)."""
    override: dict = {
        "name": e.container_name,
        "command": list(argv),
        "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
    }
    if e.gpus:
        override["resourceRequirements"] = [{"type": "GPU", "value": str(e.gpus)}]
    params: dict = {
        "cluster": e.cluster,
        "taskDefinition": e.task_definition,
        "launchType": e.launch_type,
        "count": 1,
        "overrides": {"containerOverrides": [override]},
    }
    if e.subnets:
        params["networkConfiguration"] = {
            "awsvpcConfiguration": {"subnets": list(e.subnets), "securityGroups": list(e.security_groups),
                                    "assignPublicIp": "DISABLED"}
        }
    return params


@register
@dataclass
class EcsTrainer(ClusterTrainer):
    kind = "ecs"
    failure = "ECS training task failed"

    def where(self) -> str:
        return f"ECS task {self.settings.ecs.task_definition}"

    def launch(self, context, argv: list[str]):
        from dagster_aws.pipes import PipesECSClient  # optional dependency: only this kind needs it

        params = ecs_run_task_params(self.settings.ecs, argv, dict(self.settings.env))
        return PipesECSClient().run(context=context, run_task_params=params,
                                    pipes_container_name=self.settings.ecs.container_name)
