"""Sensors: discover mid-training checkpoints as new stages, notice corpus edits, and carry a stage's
re-optimization from layer to layer (base → experts → candidates … mixture).

They read the asset graph (for staleness) from their context's ``repository_def``, the one code location
they are loaded in, so they need nothing from ``definitions.py``.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mergemix_dagster.assets.corpora import source_fingerprint
from mergemix_dagster.resources.layout import content_version, stage_registration
from mergemix_dagster.defs.jobs import corpora_job, experts_job, foundation_job, optimize_job, stage_base_job
from mergemix_dagster.assets.partitions import stage_partitions
from mergemix_dagster.runner.instance import STAGE_TAG, fail_abandoned_runs
from mergemix_dagster.runner.plan import PlanContext, automation_runs, corpus_changes
from mergemix_dagster.resources import CheckpointStore
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.core.settings import STAGE_NAME, Settings
from mergemix_dagster.runner.staleness import latest_stage

BACKFILL_TAG = "dagster/backfill"  # on every run an asset backfill launches
PARTITION_TAG = "dagster/partition"  # "s1"; a domain × stage run also has "dagster/partition/stage"
#: The jobs ``runner.staleness.next_runs`` can plan: what ``latest_stage_sensor`` may request, and nothing else.
STAGE_LAYER_JOBS = (foundation_job, corpora_job, stage_base_job, experts_job, optimize_job)


def discover_checkpoints(watch: str) -> dict[str, str]:
    """Stage name -> checkpoint path for every HF checkpoint folder directly under ``watch``.

    A folder counts once it holds ``config.json`` and a safetensors file (or index), so a checkpoint that is
    still being written (config last is the usual HF order) is picked up on a later tick.
    """
    root = Path(watch)
    if not root.is_dir():
        return {}
    found = {}
    for child in sorted(root.iterdir()):
        has_weights = any(child.glob("*.safetensors")) or (child / "model.safetensors.index.json").exists()
        if child.is_dir() and (child / "config.json").exists() and has_weights:
            found[child.name] = str(child.resolve())
    return found


def backfill_in_flight(instance: dg.DagsterInstance, stage: str) -> bool:
    """Whether a run launched by an asset backfill is queued or running on a partition of ``stage``."""
    records = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
                                dg.DagsterRunStatus.NOT_STARTED]),
    )
    return any(
        BACKFILL_TAG in (tags := r.dagster_run.tags)
        and stage in (tags.get(PARTITION_TAG), tags.get(f"{PARTITION_TAG}/stage"))
        for r in records
    )


def stage_run_requests(
    instance: dg.DagsterInstance, defs: dg.Definitions | dg.RepositoryDefinition, settings: Settings, stage: str, why: str
):
    """Run requests for the first layer of ``stage`` that is missing, stale or damaged (``runner.plan.
    automation_runs``; none while one is in flight); ``defs`` is a sensor's or schedule's
    ``context.repository_def`` (or the ``Definitions`` in tests).

    Runs left STARTED by a killed ``mergemix`` process are marked failed first, so they do not block forever.
    The run key names what is due and the last successful run: Dagster drops a request whose key it has seen,
    so the same staleness on a later occasion (a second code change, weeks on) must get a new key, while a
    failed run is not retried every tick.
    """
    fail_abandoned_runs(instance)
    in_flight = instance.get_run_records(
        dg.RunsFilter(
            tags={STAGE_TAG: stage},
            statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
                      dg.DagsterRunStatus.NOT_STARTED],
        ),
        limit=1,
    )
    if in_flight:
        return [], f"a run for stage {stage!r} is still in flight"
    if backfill_in_flight(instance, stage):
        return [], f"a backfill run for stage {stage!r} is in flight (stage_automation_sensor)"
    runs = automation_runs(PlanContext(defs, settings, instance, stage))
    if not runs:
        return [], f"stage {stage!r} is fresh"
    last_success = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)
    marker = content_version({"due": [[r.job, str(r.partition), r.reason] for r in runs],
                              "after": last_success[0].dagster_run.run_id if last_success else None})
    requests = [
        dg.RunRequest(
            job_name=run.job,
            partition_key=str(run.partition),
            run_key=f"{run.job}:{run.partition}:{marker}",
            tags={STAGE_TAG: stage, "mergemix/reason": f"{why}: {run.reason}"},
        )
        for run in runs
    ]
    return requests, ""


def removed(store: CheckpointStore, stage: str) -> bool:
    """Whether ``mergemix stage remove`` took ``stage`` out (its checkpoint folder may still be watched)."""
    key = stage_registration(stage)
    return store.exists(key) and bool(store.get_json(key).get("removed_at"))


@dg.sensor(
    name="stage_checkpoint_sensor",
    minimum_interval_seconds=60,
    jobs=[stage_base_job],
    description="Registers each new mid-training checkpoint (watched folder or `stages.checkpoints`) as a stage.",
)
def stage_checkpoint_sensor(context: dg.SensorEvaluationContext, settings: PipelineSettings, store: CheckpointStore):
    s = settings.get()
    candidates = dict(s.stages.checkpoints)
    if s.stages.watch:
        candidates |= discover_checkpoints(str(store.fetch_external(s.stages.watch)))
    bad = [name for name in candidates if not STAGE_NAME.match(name)]
    if bad:  # a folder name that cannot be a partition key or a store folder is never registered
        context.log.warning(f"checkpoint folders skipped, not valid stage names (1-64 of A-Za-z0-9._-): {bad}")
    known = set(context.instance.get_dynamic_partitions(stage_partitions.name))
    new = {name: path for name, path in candidates.items()
           if name not in known and name != s.initial_stage and name not in bad and not removed(store, name)}
    if not new:
        return dg.SkipReason(f"no new checkpoints ({len(candidates)} known)")
    for name, path in new.items():
        store.put_json(stage_registration(name), {"stage": name, "checkpoint": path}, overwrite=True)
    return dg.SensorResult(
        dynamic_partitions_requests=[stage_partitions.build_add_request(list(new))],
        run_requests=[
            dg.RunRequest(
                job_name="stage_base_job",
                partition_key=name,
                run_key=f"stage_base_job:{name}:{path}",
                tags={STAGE_TAG: name, "mergemix/reason": "new checkpoint"},
            )
            for name, path in new.items()
        ],
    )


@dg.sensor(
    name="latest_stage_sensor",
    minimum_interval_seconds=60,
    jobs=list(STAGE_LAYER_JOBS),
    description="Keeps the latest stage fresh: requests the next layer of missing or stale partitions.",
)
def latest_stage_sensor(context: dg.SensorEvaluationContext, settings: PipelineSettings):
    stage = latest_stage(context.instance)
    if stage is None:
        return dg.SkipReason("no stage registered yet")
    requests, why = stage_run_requests(
        context.instance, context.repository_def, settings.get(), stage, "latest stage sensor"
    )
    return requests or dg.SkipReason(why)


@dg.sensor(
    name="corpus_change_sensor",
    minimum_interval_seconds=300,
    jobs=[corpora_job],
    description="Re-materializes a domain corpus when its source files change (paths, sizes, mtimes).",
)
def corpus_change_sensor(context: dg.SensorEvaluationContext, settings: PipelineSettings):
    s = settings.get()
    requests = [
        dg.RunRequest(
            job_name="corpora_job",
            partition_key=name,
            run_key=f"corpora_job:{name}:{source_fingerprint(s.domain(name))}",
            tags={"mergemix/reason": "corpus source changed"},
        )
        for name in corpus_changes(context.instance, s)
    ]
    return requests or dg.SkipReason("no corpus source changed")


SENSORS = [stage_checkpoint_sensor, latest_stage_sensor, corpus_change_sensor]


def definitions() -> dg.Definitions:
    return dg.Definitions(sensors=SENSORS)
