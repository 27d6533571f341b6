"""The team's training command on a cluster: a Kubernetes pod (dagster-k8s) or an ECS task (dagster-aws).

Both run the same command template as the ``command`` trainer, with ``{base}``, ``{mixture_json}`` and
``{output}`` filled in with ``s3://`` URIs of the checkpoint store (so ``store_root`` must be on S3): the
job reads the base and corpora from S3 and writes the checkpoint to a staging key, which is fetched and
validated here before it becomes an expert. Progress and metadata come back through Dagster Pipes.

NOT exercised on a cluster: the pod spec and the RunTask request are built from settings and tested
(the pod through dagster-k8s' own ``build_pod_body``, the request against botocore's ECS model), but no
pod or task was ever launched from this code.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mergemix_dagster.core.errors import ConfigError, TrainerCommandError
from mergemix_dagster.core.training.mixture_file import write_mixture_file
from mergemix_dagster.core.settings import EcsTrainerSettings, KubernetesTrainerSettings, TrainerSettings
from mergemix_dagster.resources.trainers import TrainJob, TrainOutcome, _metadata_values, accept, placeholders, render_command


def k8s_pod_spec(k: KubernetesTrainerSettings) -> dict:
    """``base_pod_spec`` for ``PipesK8sClient``: GPUs, CPU/memory, node selection, service account."""
    limits: dict[str, str] = {}
    if k.gpus:
        limits["nvidia.com/gpu"] = str(k.gpus)
    if k.cpu:
        limits["cpu"] = k.cpu
    if k.memory:
        limits["memory"] = k.memory
    spec: dict = {"restart_policy": "Never", "containers": [{"resources": {"limits": limits, "requests": dict(limits)}}]}
    if k.node_selector:
        spec["node_selector"] = dict(k.node_selector)
    if k.tolerations:
        spec["tolerations"] = list(k.tolerations)
    if k.service_account:
        spec["service_account_name"] = k.service_account
    return spec


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


@dataclass
class _RemoteTrainer:
    settings: TrainerSettings
    store: object  # CheckpointStore

    def _stage(self, job: TrainJob, workdir: Path) -> tuple[list[str], str]:
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

    def _finish(self, invocation, job: TrainJob, output_key: str, start: float) -> TrainOutcome:
        output = self.store.get_dir(output_key)
        return accept(output, job, time.perf_counter() - start, _metadata_values(invocation.get_results()))


class KubernetesTrainer(_RemoteTrainer):
    def train(self, context, job: TrainJob, workdir: Path) -> TrainOutcome:
        from dagster_k8s import PipesK8sClient

        argv, output_key = self._stage(job, workdir)
        k = self.settings.kubernetes
        context.log.info(f"kubernetes job in {k.image}: {shlex.join(argv)}")
        start = time.perf_counter()
        try:
            invocation = PipesK8sClient().run(
                context=context, image=k.image, command=argv, namespace=k.namespace,
                env=dict(self.settings.env), base_pod_spec=k8s_pod_spec(k),
            )
        except Exception as exc:  # noqa: BLE001 - the client's errors are not public API
            raise TrainerCommandError(f"kubernetes training job failed: {exc}") from exc
        return self._finish(invocation, job, output_key, start)


class EcsTrainer(_RemoteTrainer):
    def train(self, context, job: TrainJob, workdir: Path) -> TrainOutcome:
        from dagster_aws.pipes import PipesECSClient

        argv, output_key = self._stage(job, workdir)
        params = ecs_run_task_params(self.settings.ecs, argv, dict(self.settings.env))
        context.log.info(f"ECS task {self.settings.ecs.task_definition}: {shlex.join(argv)}")
        start = time.perf_counter()
        try:
            invocation = PipesECSClient().run(context=context, run_task_params=params,
                                              pipes_container_name=self.settings.ecs.container_name)
        except Exception as exc:  # noqa: BLE001
            raise TrainerCommandError(f"ECS training task failed: {exc}") from exc
        return self._finish(invocation, job, output_key, start)
