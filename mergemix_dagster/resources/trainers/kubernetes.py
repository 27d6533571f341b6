"""``kubernetes``: the team's command in a pod of its image, through dagster-k8s ``PipesK8sClient``.

NOT exercised on a cluster: the pod spec is built from settings and tested through dagster-k8s' own
``build_pod_body``, but no pod was ever launched from this code.
"""

from __future__ import annotations

from dataclasses import dataclass

from mergemix_dagster.core.settings import KubernetesTrainerSettings
from mergemix_dagster.resources.trainers.base import ClusterTrainer
from mergemix_dagster.resources.trainers.registry import register


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


@register
@dataclass
class KubernetesTrainer(ClusterTrainer):
    kind = "kubernetes"
    failure = "kubernetes training job failed"

    def where(self) -> str:
        return f"kubernetes job in {self.settings.kubernetes.image}"

    def launch(self, context, argv: list[str]):
        from dagster_k8s import PipesK8sClient  # optional dependency: only this kind needs it

        k = self.settings.kubernetes
        return PipesK8sClient().run(
            context=context, image=k.image, command=argv, namespace=k.namespace,
            env=dict(self.settings.env), base_pod_spec=k8s_pod_spec(k),
        )
