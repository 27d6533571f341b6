"""Stages: re-optimizing at a mid-training checkpoint reruns only what is missing or stale.

Everything is read back from the Dagster instance's own event log. The tests run in file order on the
session's instance (stage s0 already materialized by the `smoke_run` fixture).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from mergemix_dagster.core.data.corpora import read_corpus, write_corpus
from mergemix_dagster.assets.partitions import expert_partition_key
from mergemix_dagster.defs.sensors import stage_run_requests
from mergemix_dagster.runner.staleness import Status, latest_stage, stage_status

STAGE_ASSETS = ("stage_base", "merge_candidates", "candidate_evaluations", "capability_surrogates", "search_rounds",
                "chosen_mixture")


def _materializations(instance, after_storage_id: int) -> list[tuple[str, str | None]]:
    """(asset, partition) of every materialization recorded after ``after_storage_id``."""
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION, after_cursor=after_storage_id),
        limit=10_000,
    )
    return [(r.asset_key.to_user_string(), r.partition_key) for r in records]


def _last_storage_id(instance) -> int:
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION), limit=1, ascending=False
    )
    return records[0].storage_id if records else 0


def _run_requests(defs, instance, requests) -> None:
    for request in requests:
        job = defs.resolve_job_def(request.job_name)
        partition = request.partition_key
        if request.job_name == "experts_job":
            domain, stage = partition.split("|")
            partition = expert_partition_key(domain, stage)
        assert job.execute_in_process(instance=instance, partition_key=partition, tags=request.tags).success


def _drive_stage(defs, settings, instance, stage: str, max_layers: int = 10) -> int:
    """Follow the sensor's requests layer by layer until the stage is fresh; returns the number of layers."""
    for layer in range(max_layers):
        requests, _ = stage_run_requests(instance, defs, settings, stage, "test")
        if not requests:
            return layer
        _run_requests(defs, instance, requests)
    raise AssertionError(f"stage {stage} not fresh after {max_layers} layers")


@pytest.fixture(scope="module")
def staged(smoke_run):
    return smoke_run


def test_fresh_stage_requests_nothing(staged):
    settings, defs, instance, _ = staged
    status = stage_status(instance, defs, settings.domain_names, "s0")
    assert status.fresh, status.not_fresh()
    requests, why = stage_run_requests(instance, defs, settings, "s0", "test")
    assert requests == [] and "fresh" in why


def test_sensor_registers_a_new_checkpoint_once(staged):
    settings, defs, instance, _ = staged
    from mergemix_dagster.resources.artifacts import expert_checkpoint_dir
    from mergemix_dagster.resources import CheckpointStore

    store = CheckpointStore(root=settings.store_uri)
    # A mid-training checkpoint appears in the watched folder (here: a copy of the math expert).
    watch = Path(settings.stages.watch)
    shutil.copytree(expert_checkpoint_dir(store, "s0", "math")[0], watch / "s1")
    sensor = defs.resolve_sensor_def("stage_checkpoint_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        result = sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["s1"]
    assert result.run_requests[0].job_name == "stage_base_job"
    instance.add_dynamic_partitions("stage", ["s1"])  # what the daemon does with the sensor's request
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        again = sensor(context)
    assert isinstance(again, dg.SkipReason) or not again.run_requests
    assert latest_stage(instance) == "s1"


def test_reoptimizing_stage_2_materializes_exactly_its_partitions(staged):
    settings, defs, instance, _ = staged
    before = _last_storage_id(instance)
    layers = _drive_stage(defs, settings, instance, "s1")
    made = _materializations(instance, before)
    expected = {(a, "s1") for a in STAGE_ASSETS} | {
        ("expert_checkpoint", str(expert_partition_key(d, "s1"))) for d in settings.domain_names
    }
    assert set(made) == expected
    assert len(made) == len(expected)  # nothing twice
    assert layers == 3  # stage base, experts, optimize
    assert stage_status(instance, defs, settings.domain_names, "s0").fresh  # s0 untouched
    os.environ["MERGEMIX_TEST_STAGE2_MATERIALIZATIONS"] = str(len(made))


def _schedule_requests(defs, instance) -> list[tuple[str, str]]:
    requests = []
    for name in ("reoptimize_foundation", "reoptimize_corpora", "reoptimize_stage_base", "reoptimize_experts", "reoptimize_optimize"):
        schedule = defs.resolve_schedule_def(name)
        with dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def(), resources=defs.resources) as context:
            result = schedule.evaluate_tick(context)
        requests += [(schedule.job_name, r.partition_key) for r in result.run_requests or []]
    return requests


def test_schedule_targets_only_missing_or_stale_partitions_of_latest_stage(staged):
    settings, defs, instance, _ = staged
    assert _schedule_requests(defs, instance) == []  # everything fresh
    # A third stage with its base and one expert already made: only the other experts are missing.
    from mergemix_dagster.runner.stage import register_stage
    from mergemix_dagster.resources import CheckpointStore

    store = CheckpointStore(root=settings.store_uri)
    store.put_json("stages/s2/registration.json", {"stage": "s2", "checkpoint": str(Path(settings.stages.watch) / "s1")})
    register_stage(instance, "s2")
    assert _schedule_requests(defs, instance) == [("stage_base_job", "s2")]
    _run_requests(defs, instance, [dg.RunRequest(job_name="stage_base_job", partition_key="s2")])
    _run_requests(defs, instance, [dg.RunRequest(job_name="experts_job", partition_key="math|s2")])
    requests = _schedule_requests(defs, instance)
    assert sorted(requests) == sorted(("experts_job", f"{d}|s2") for d in settings.domain_names if d != "math")
    _drive_stage(defs, settings, instance, "s2")
    assert stage_status(instance, defs, settings.domain_names, "s1").fresh  # earlier stage untouched


def test_corpus_edit_makes_only_that_domains_experts_stale(staged):
    settings, defs, instance, _ = staged
    corpus = Path(settings.domain("sft").paths[0])
    docs = read_corpus(corpus)
    time.sleep(0.01)
    write_corpus(docs[: len(docs) // 2] + ["### Instruction:\nSay hello.\n### Response:\nhello"], corpus)

    sensor = defs.resolve_sensor_def("corpus_change_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        requests = sensor(context)
    assert [(r.job_name, r.partition_key) for r in requests] == [("corpora_job", "sft")]
    _run_requests(defs, instance, requests)

    for stage in ("s0", "s1", "s2"):
        status = stage_status(instance, defs, settings.domain_names, stage)
        assert {d for d, s in status.experts.items() if s is not Status.FRESH} == {"sft"}
        assert all(s is Status.STALE for s in status.downstream.values())
        assert status.base is Status.FRESH

    before = _last_storage_id(instance)
    _drive_stage(defs, settings, instance, latest_stage(instance))
    made = _materializations(instance, before)
    experts = [p for a, p in made if a == "expert_checkpoint"]
    assert experts == [str(expert_partition_key("sft", "s2"))]
    assert {a for a, _ in made} == {"expert_checkpoint", *STAGE_ASSETS[1:]}
