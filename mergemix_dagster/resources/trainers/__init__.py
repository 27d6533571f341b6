"""Trainers: who turns (base, data mixture, recipe) into a trained checkpoint, chosen by ``trainer.kind``.

One module per kind, each registering its ``Trainer`` subclass under its kind (``registry.register``):

- ``embedded``: the project's loop (``core.training.loop``) inside the Dagster step process (default);
- ``command``: the team's own command (``trainer.command``, placeholders in docs/cluster.md), launched with
  Dagster Pipes' ``PipesSubprocessClient``;
- ``kubernetes`` / ``ecs``: the same command in the team's image, through dagster-k8s ``PipesK8sClient`` /
  dagster-aws ``PipesECSClient``; paths are the store's ``s3://`` URIs. Built and tested here as specs only:
  they were never run against a cluster.

Whatever trained it, a checkpoint is validated (``core.training.trained_checkpoint``) before it is accepted.

Adding a kind ``slurm``:

1. in ``core/settings/trainer.py``: ``"slurm"`` in ``TrainerKind``; if it has settings of its own, a
   ``SlurmTrainerSettings(TrainerKindSettings)`` (with ``problem``/``runs_in`` if it needs them) and a field
   ``slurm`` of ``TrainerSettings``;
2. ``resources/trainers/slurm.py``: ``@register @dataclass class SlurmTrainer(Trainer)`` (or ``ClusterTrainer``
   when the job reads and writes the S3 store) with ``kind = "slurm"`` and ``train``. The module is found
   by ``registry``; nothing else changes. Its ``identity`` (the command and ``runs_in``) joins the experts'
   cache keys: override it only if something else about the kind decides the weights.
"""

from mergemix_dagster.resources.trainers.base import (
    ClusterTrainer,
    Trainer,
    TrainJob,
    TrainOutcome,
    accept,
    metadata_values,
    placeholders,
    render_command,
)
from mergemix_dagster.resources.trainers.command import CommandTrainer
from mergemix_dagster.resources.trainers.ecs import EcsTrainer, ecs_run_task_params
from mergemix_dagster.resources.trainers.embedded import EmbeddedTrainer
from mergemix_dagster.resources.trainers.kubernetes import KubernetesTrainer, k8s_pod_spec
from mergemix_dagster.resources.trainers.registry import (
    known_kinds,
    register,
    trainer_class,
    trainer_for,
    trainer_identity,
)

__all__ = [
    "ClusterTrainer", "CommandTrainer", "EcsTrainer", "EmbeddedTrainer", "KubernetesTrainer", "Trainer",
    "TrainJob", "TrainOutcome", "accept", "ecs_run_task_params", "k8s_pod_spec", "known_kinds", "metadata_values",
    "placeholders", "register", "render_command", "trainer_class", "trainer_for", "trainer_identity",
]
