"""Evaluators other than the embedded one (``evaluator.kind``): the team's evaluation command scores a merged
candidate written to disk, and its lm-eval results JSON comes back as scores.

- ``command``: on this machine, through Dagster Pipes' ``PipesSubprocessClient`` (its Pipes logs reach the
  event log; stdout/stderr the step's compute logs);
- ``kubernetes`` / ``ecs``: in the team's image, through dagster-k8s ``PipesK8sClient`` / dagster-aws
  ``PipesECSClient``, with the pod spec / RunTask request the trainers build (``trainer.kubernetes`` and
  ``evaluator.kubernetes`` are the same shape). The merged candidate is uploaded to the S3 store and
  ``{model}``/``{output}`` are ``s3://`` URIs. NOT exercised on a cluster: only the specs are tested.

Each candidate is merged with the streaming merge (``core.merge.streaming.merge_checkpoints``, bit-identical to
the in-memory merge) into a scratch folder; the base is handed over as stored. The results are validated by
``core.evaluation.lm_eval_results.read_lm_eval_scores`` (``EvaluatorOutputError``); a failed command is an
``EvaluatorCommandError``. The embedded kind is not here: it is ``core.evaluation.workers`` (in memory).
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg

from mergemix_dagster.core.errors import ConfigError, EvaluatorCommandError
from mergemix_dagster.core.evaluation.harness import BenchmarkScore, default_tasks_dir
from mergemix_dagster.core.evaluation.lm_eval_results import read_lm_eval_scores, results_file
from mergemix_dagster.core.evaluation.workers import ProxyJob, ScorerSpec
from mergemix_dagster.core.merge.streaming import merge_checkpoints
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.settings import EvaluatorSettings
from mergemix_dagster.resources.trainers import ecs_run_task_params, k8s_pod_spec


def render_evaluation_command(template: str, values: dict[str, str]) -> list[str]:
    """The command as argv: split like a shell would, then each placeholder filled in (a path stays one argument)."""
    try:
        return [part.format(**values) for part in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"evaluator.command {template!r}: cannot fill in placeholders: {exc}") from exc


def merged_model(spec: ScorerSpec, job: ProxyJob, folder: Path) -> Path:
    """The candidate as an HF checkpoint folder: the base as stored, or the streaming merge at ``job.alpha``."""
    if job.alpha is None:
        return Path(spec.base_dir)
    mixture = Mixture.from_dict(job.alpha, tuple(spec.expert_dirs))
    return merge_checkpoints(spec.base_dir, spec.expert_dirs, mixture, folder, method=spec.method)


def placeholder_values(spec: ScorerSpec, job: ProxyJob, model: str, output: str, stage: str) -> dict[str, str]:
    return {
        "model": model, "output": output, "tasks": ",".join(t.name for t in spec.tasks),
        "tasks_dir": str(spec.tasks_dir or default_tasks_dir()), "limit": "" if spec.limit is None else str(spec.limit),
        "batch_size": str(spec.batch_size), "candidate": job.candidate_id, "stage": stage,
    }


def read_scores(output: Path, spec: ScorerSpec, job: ProxyJob) -> list[BenchmarkScore]:
    """The validated scores of the command's results; the results JSON is kept at ``job.results_path`` too
    (``<home>/lm_eval/<stage>/<candidate>.json``, as the embedded evaluator keeps its own)."""
    scores = read_lm_eval_scores(output, spec.tasks)
    if job.results_path:
        Path(job.results_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(results_file(output), job.results_path)
    return scores


@dataclass
class CommandEvaluator:
    """``command``: the team's command on this machine (Pipes subprocess) on the merged candidate's folder."""

    kind: ClassVar[str] = "command"
    settings: EvaluatorSettings
    store: Any = None

    def score(self, context, spec: ScorerSpec, job: ProxyJob, workdir: Path, stage: str) -> list[BenchmarkScore]:
        workdir = Path(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            model = merged_model(spec, job, workdir / "model")
            output = workdir / "lm_eval"
            argv = render_evaluation_command(self.settings.command or "",
                                             placeholder_values(spec, job, str(model), str(output), stage))
            self.launch(context, argv, workdir)
            return read_scores(output, spec, job)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def launch(self, context, argv: list[str], workdir: Path) -> None:
        context.log.info(f"evaluation command: {shlex.join(argv)}")
        try:
            dg.PipesSubprocessClient(cwd=str(workdir)).run(context=context, command=argv, env=dict(self.settings.env))
        except Exception as exc:
            raise EvaluatorCommandError(f"evaluation command failed: {shlex.join(argv)}: {exc}") from exc


@dataclass
class ClusterEvaluator(CommandEvaluator):
    """The command in a cluster job: the merged candidate is uploaded to the S3 store, the job writes lm-eval's
    results to an ``s3://`` prefix, which is fetched and read here."""

    def score(self, context, spec: ScorerSpec, job: ProxyJob, workdir: Path, stage: str) -> list[BenchmarkScore]:
        if not getattr(self.store, "is_s3", False):
            raise ConfigError(f"evaluator kind {self.settings.kind!r} needs an s3:// store_root: the job reads and writes there")
        workdir = Path(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        prefix = f"jobs/eval-{stage}-{job.candidate_id}-{int(time.time())}"
        try:
            self.store.put_dir(merged_model(spec, job, workdir / "model"), f"{prefix}/model", overwrite=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        values = placeholder_values(spec, job, self.store.uri(f"{prefix}/model"), self.store.uri(f"{prefix}/output"), stage)
        argv = render_evaluation_command(self.settings.command or "", values)
        context.log.info(f"{self.kind} evaluation job: {shlex.join(argv)}")
        try:
            self.launch(context, argv, workdir)
        except EvaluatorCommandError:
            raise
        except Exception as exc:
            raise EvaluatorCommandError(f"{self.kind} evaluation job failed: {exc}") from exc
        return read_scores(self.store.get_dir(f"{prefix}/output"), spec, job)


@dataclass
class KubernetesEvaluator(ClusterEvaluator):
    kind: ClassVar[str] = "kubernetes"

    def launch(self, context, argv: list[str], workdir: Path) -> None:
        from dagster_k8s import PipesK8sClient  # optional dependency: only this kind needs it

        k = self.settings.kubernetes
        PipesK8sClient().run(context=context, image=k.image, command=argv, namespace=k.namespace,
                             env=dict(self.settings.env), base_pod_spec=k8s_pod_spec(k))


@dataclass
class EcsEvaluator(ClusterEvaluator):
    kind: ClassVar[str] = "ecs"

    def launch(self, context, argv: list[str], workdir: Path) -> None:
        from dagster_aws.pipes import PipesECSClient  # optional dependency: only this kind needs it

        params = ecs_run_task_params(self.settings.ecs, argv, dict(self.settings.env))
        PipesECSClient().run(context=context, run_task_params=params, pipes_container_name=self.settings.ecs.container_name)


EVALUATORS: dict[str, type[CommandEvaluator]] = {c.kind: c for c in (CommandEvaluator, KubernetesEvaluator, EcsEvaluator)}


def evaluator_for(settings: EvaluatorSettings, store=None) -> CommandEvaluator | None:
    """The evaluator of ``settings.kind``; None for ``embedded`` (merged and scored in memory)."""
    if settings.kind == "embedded":
        return None
    return EVALUATORS[settings.kind](settings, store)
