"""Dagster's own machinery: sensor targets, schedule times, staleness on public APIs, declarative automation.

Fast: the definitions of the smoke config and tiny stand-in assets on an ephemeral instance; no training.
"""

from __future__ import annotations

import os

import pytest

from mergemix_dagster.defs.automation import AUTOMATION_SENSOR, STAGE_ASSETS
from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.defs.schedules import LAYER_OFFSET_MINUTES, staggered_cron
from mergemix_dagster.runner.staleness import StageStatus, Status, next_runs


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    old = os.environ.get("MERGEMIX_HOME")
    os.environ["MERGEMIX_HOME"] = str(tmp_path_factory.mktemp("native-home"))
    yield os.environ["MERGEMIX_HOME"]
    if old is None:
        del os.environ["MERGEMIX_HOME"]
    else:
        os.environ["MERGEMIX_HOME"] = old


@pytest.fixture(scope="module")
def defs(home):
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.core.settings import load_settings

    return build_definitions(load_settings("smoke"), config="smoke")


def _plannable_jobs() -> set[str]:
    """Every job ``next_runs`` can plan: one stage status per layer with that layer missing."""
    fresh, missing = Status.FRESH, Status.MISSING
    layers = [
        StageStatus("s", {"general_corpus": missing}, {"math": fresh}, fresh, {"math": fresh}, {"x": fresh}),
        StageStatus("s", {"general_corpus": fresh}, {"math": missing}, fresh, {"math": fresh}, {"x": fresh}),
        StageStatus("s", {"general_corpus": fresh}, {"math": fresh}, missing, {"math": fresh}, {"x": fresh}),
        StageStatus("s", {"general_corpus": fresh}, {"math": fresh}, fresh, {"math": missing}, {"x": fresh}),
        StageStatus("s", {"general_corpus": fresh}, {"math": fresh}, fresh, {"math": fresh}, {"x": missing}),
    ]
    return {job for status in layers for job, _ in next_runs(status)}


def test_each_sensor_targets_exactly_the_jobs_it_requests(defs):
    targets = {s.name: {j.name for j in s.jobs} for s in defs.sensors if s.name != AUTOMATION_SENSOR}
    assert targets["stage_checkpoint_sensor"] == {"stage_base_job"}
    assert targets["corpus_change_sensor"] == {"corpora_job"}
    assert targets["latest_stage_sensor"] == _plannable_jobs()
    assert "validate_job" not in _plannable_jobs() and "report_job" not in _plannable_jobs()


def test_layer_schedules_fire_at_different_minutes_in_layer_order(defs):
    schedules = sorted(defs.schedules, key=lambda s: s.name)
    crons = {s.name: s.cron_schedule for s in schedules}
    assert len(set(crons.values())) == len(crons) == 5
    layers = ("foundation", "corpora", "stage_base", "experts", "optimize")
    minutes = [int(crons[f"reoptimize_{layer}"].split()[0]) for layer in layers]
    assert minutes == [0, 12, 24, 36, 48]  # smoke config: stages.schedule "0 3 * * *"


def test_staggered_cron_carries_into_the_next_hour_and_keeps_steps():
    assert staggered_cron("0 3 * * *", 0) == "0 3 * * *"
    assert staggered_cron("50 23 * * 1", LAYER_OFFSET_MINUTES) == "2 0 * * 1"
    assert staggered_cron("*/30 * * * *", 15) == "15-59/30 * * * *"
    with pytest.raises(ConfigError, match="minute as a number"):
        staggered_cron("0,30 3 * * *", 15)
    with pytest.raises(ConfigError, match="5 cron fields"):
        staggered_cron("@daily", 15)


# --- staleness on public APIs agrees with Dagster's own resolver (the UI's "Stale" badge) ---

DOMAINS = ["math", "code"]
CONTENT: dict[tuple[str, str | None], str] = {}  # (asset, partition) -> data version the stand-in writes


def _stand_in_assets(evals_code_version: str = "1"):
    """The shapes of the real graph: unpartitioned foundation, domain corpora, stage bases, domain×stage
    experts (mapped by dimension), stage-partitioned downstream."""
    import dagster as dg

    from mergemix_dagster.assets.partitions import SAME_DOMAIN, SAME_STAGE, stage_partitions

    domain = dg.StaticPartitionsDefinition(DOMAINS)
    multi = dg.MultiPartitionsDefinition({"domain": domain, "stage": stage_partitions})

    def version(name, context=None):
        partition = context.partition_key if context is not None and context.has_partition_key else None
        return dg.MaterializeResult(data_version=dg.DataVersion(CONTENT.get((name, str(partition) if partition else None), "v0")))

    @dg.asset(code_version="1")
    def general_corpus():
        return version("general_corpus")

    @dg.asset(code_version="1", deps=[general_corpus])
    def base_tokenizer():
        return version("base_tokenizer")

    @dg.asset(code_version="1", partitions_def=domain)
    def domain_corpus(context):
        return version("domain_corpus", context)

    @dg.asset(code_version="1", partitions_def=stage_partitions, deps=[base_tokenizer, general_corpus])
    def stage_base(context):
        return version("stage_base", context)

    @dg.asset(code_version="1", partitions_def=multi, deps=[
        dg.AssetDep(domain_corpus, partition_mapping=SAME_DOMAIN), dg.AssetDep(stage_base, partition_mapping=SAME_STAGE)])
    def expert_checkpoint(context):
        return version("expert_checkpoint", context)

    @dg.asset(code_version="1", partitions_def=stage_partitions,
              deps=[dg.AssetDep(expert_checkpoint, partition_mapping=SAME_STAGE)])
    def merge_candidates(context):
        return version("merge_candidates", context)

    @dg.asset(code_version=evals_code_version, partitions_def=stage_partitions, deps=[merge_candidates])
    def candidate_evaluations(context):
        return version("candidate_evaluations", context)

    return [general_corpus, base_tokenizer, domain_corpus, stage_base, expert_checkpoint, merge_candidates,
            candidate_evaluations]


def _partitions(instance, stages):
    from mergemix_dagster.assets.partitions import expert_partition_key

    out = [("general_corpus", None), ("base_tokenizer", None)] + [("domain_corpus", d) for d in DOMAINS]
    for stage in stages:
        out += [("stage_base", stage)] + [("expert_checkpoint", str(expert_partition_key(d, stage))) for d in DOMAINS]
        out += [("merge_candidates", stage), ("candidate_evaluations", stage)]
    return out


def _propagated(direct: dict, stages) -> dict:
    """A not-fresh upstream makes a materialized partition stale (the rule ``runner.staleness.after`` applies)."""
    from mergemix_dagster.assets.partitions import expert_partition_key

    out = dict(direct)

    def after(node, ups):
        if out[node] is not Status.MISSING and any(out[u] is not Status.FRESH for u in ups):
            out[node] = Status.STALE

    after(("base_tokenizer", None), [("general_corpus", None)])
    for stage in stages:
        after(("stage_base", stage), [("general_corpus", None), ("base_tokenizer", None)])
        experts = [("expert_checkpoint", str(expert_partition_key(d, stage))) for d in DOMAINS]
        for d, e in zip(DOMAINS, experts):
            after(e, [("domain_corpus", d), ("stage_base", stage)])
        after(("merge_candidates", stage), experts)
        after(("candidate_evaluations", stage), [("merge_candidates", stage)])
    return out


def _both(defs, instance, stages):
    """(ours, Dagster's) propagated status of every stand-in partition."""
    import dagster as dg
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext  # the oracle only
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._time import get_current_datetime

    from mergemix_dagster.runner.staleness import PublicStaleStatus

    graph = defs.resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    oracle = CachingStaleStatusResolver(instance, graph, view)
    ours = PublicStaleStatus(instance, defs)
    names = {StaleStatus.FRESH: Status.FRESH, StaleStatus.STALE: Status.STALE, StaleStatus.MISSING: Status.MISSING}
    keys = _partitions(instance, stages)
    mine = {k: ours.status(dg.AssetKey(k[0]), k[1]) for k in keys}
    theirs = {k: names[oracle.get_status(dg.AssetKey(k[0]), k[1])] for k in keys}
    return _propagated(mine, stages), _propagated(theirs, stages)


def _materialize(assets, instance, names, partition=None):
    import dagster as dg

    from mergemix_dagster.assets.partitions import expert_partition_key

    if partition and "|" in partition:
        partition = expert_partition_key(*partition.split("|"))
    assert dg.materialize(assets, instance=instance, selection=names, partition_key=partition).success


def test_public_staleness_agrees_with_dagsters_resolver_partition_by_partition():
    import dagster as dg

    CONTENT.clear()
    assets = _stand_in_assets()
    defs = dg.Definitions(assets=assets)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("stage", ["s0", "s1"])
        stages = ["s0", "s1"]

        def agree() -> dict:
            ours, dagsters = _both(defs, instance, stages)
            assert ours == dagsters
            return ours

        assert set(agree().values()) == {Status.MISSING}
        _materialize(assets, instance, ["general_corpus", "base_tokenizer"])
        for d in DOMAINS:
            _materialize(assets, instance, ["domain_corpus"], d)
        for stage in stages:
            _materialize(assets, instance, ["stage_base"], stage)
            for d in DOMAINS:
                _materialize(assets, instance, ["expert_checkpoint"], f"{d}|{stage}")
            _materialize(assets, instance, ["merge_candidates", "candidate_evaluations"], stage)
        assert set(agree().values()) == {Status.FRESH}

        _materialize(assets, instance, ["domain_corpus"], "code")  # same content again: nothing is stale
        assert set(agree().values()) == {Status.FRESH}

        CONTENT[("domain_corpus", "math")] = "v1"  # new content: math experts of every stage, and downstream
        _materialize(assets, instance, ["domain_corpus"], "math")
        status = agree()
        assert {k for k, s in status.items() if s is Status.STALE} == {
            ("expert_checkpoint", f"math|{s}") for s in stages} | {
            (a, s) for s in stages for a in ("merge_candidates", "candidate_evaluations")}

        CONTENT[("expert_checkpoint", "math|s1")] = "v1"  # s1's math expert retrained
        _materialize(assets, instance, ["expert_checkpoint"], "math|s1")
        assert agree()[("expert_checkpoint", "math|s1")] is Status.FRESH

        CONTENT[("general_corpus", None)] = "v1"  # the foundation changes: everything downstream
        _materialize(assets, instance, ["general_corpus"])
        assert agree()[("stage_base", "s0")] is Status.STALE

        instance.add_dynamic_partitions("stage", ["s2"])
        stages.append("s2")
        _materialize(assets, instance, ["base_tokenizer"])
        _materialize(assets, instance, ["stage_base"], "s2")
        status = agree()
        assert status[("stage_base", "s2")] is Status.FRESH and status[("merge_candidates", "s2")] is Status.MISSING

    # a new code version of one asset: that asset is stale, on both sides
    changed = _stand_in_assets(evals_code_version="2")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("stage", ["s0"])
        _materialize(assets, instance, ["general_corpus", "base_tokenizer"])
        for d in DOMAINS:
            _materialize(assets, instance, ["domain_corpus"], d)
        _materialize(assets, instance, ["stage_base"], "s0")
        for d in DOMAINS:
            _materialize(assets, instance, ["expert_checkpoint"], f"{d}|s0")
        _materialize(assets, instance, ["merge_candidates", "candidate_evaluations"], "s0")
        ours, dagsters = _both(dg.Definitions(assets=changed), instance, ["s0"])
        assert ours == dagsters
        assert {k for k, s in ours.items() if s is not Status.FRESH} == {("candidate_evaluations", "s0")}


# --- a new stage is requested as one asset backfill by declarative automation ---


def test_a_new_stage_is_requested_whole_in_one_tick_as_one_backfill(defs):
    """With the foundation and corpora built, adding a stage partition makes the automation request every
    partition of the stage in one evaluation, and nothing twice. ``stage_automation_sensor`` evaluates the
    same conditions in the daemon; with ``emit_backfills`` a tick requesting several partitions of one asset
    (here the experts) is submitted as one asset backfill instead of runs."""
    import dagster as dg

    from mergemix_dagster.assets.partitions import STAGE_PARTITIONS_NAME
    from mergemix_dagster.core.settings import load_settings

    domains = load_settings("smoke").domain_names
    sensor = defs.resolve_sensor_def(AUTOMATION_SENSOR)
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition) and sensor.emit_backfills
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("foundation_job").execute_in_process(instance=instance).success
        for d in domains:
            assert defs.resolve_job_def("corpora_job").execute_in_process(instance=instance, partition_key=d).success

        def tick(cursor):
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            requested = {
                (key, str(p)) for key in STAGE_ASSETS
                for p in result.get_requested_partitions(dg.AssetKey(key))
            }
            return requested, result.cursor

        first, cursor = tick(None)
        assert first == set()  # no stage yet
        instance.add_dynamic_partitions(STAGE_PARTITIONS_NAME, ["s0"])
        requested, cursor = tick(cursor)
        expected = {("stage_base", "s0"), *((a, "s0") for a in STAGE_ASSETS[2:])}
        expected |= {("expert_checkpoint", f"{d}|s0") for d in domains}
        assert requested == expected
        assert len([k for k, _ in requested if k == "expert_checkpoint"]) > 1  # so the daemon emits a backfill
        again, _ = tick(cursor)  # handled: never requested a second time
        assert again == set()


def test_chained_sensor_holds_off_while_a_backfill_run_of_the_stage_is_in_flight(defs):
    import dagster as dg

    from mergemix_dagster.defs.sensors import backfill_in_flight, stage_run_requests
    from mergemix_dagster.core.settings import load_settings

    job = defs.resolve_job_def("experts_job")
    tags = {"dagster/backfill": "abcdefgh", "dagster/partition": "math|s1", "dagster/partition/domain": "math",
            "dagster/partition/stage": "s1"}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("stage", ["s0", "s1"])
        assert not backfill_in_flight(instance, "s1")
        run = instance.create_run_for_job(job, tags=tags, status=dg.DagsterRunStatus.STARTED)
        assert backfill_in_flight(instance, "s1") and not backfill_in_flight(instance, "s0")
        requests, why = stage_run_requests(instance, defs, load_settings("smoke"), "s1", "test")
        assert requests == [] and "backfill" in why
        instance.report_run_failed(run)
        assert not backfill_in_flight(instance, "s1")


def test_the_same_staleness_on_a_later_occasion_is_requested_again_and_a_failure_is_not_retried(defs):
    """Dagster drops a request whose run key it has seen: the key must change once a run succeeded (weeks on,
    the same layer stale again) and must not change after a failed run (no retry every tick)."""
    import dagster as dg

    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.defs.sensors import stage_run_requests

    settings = load_settings("smoke")
    job = defs.resolve_job_def("foundation_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("stage", ["s0"])

        def keys():
            requests, _ = stage_run_requests(instance, defs, settings, "s0", "test")
            return [(r.job_name, r.run_key) for r in requests]

        first = keys()
        assert [j for j, _ in first] == ["foundation_job"]  # a fresh instance: the general corpus is missing
        instance.create_run_for_job(job, status=dg.DagsterRunStatus.FAILURE)
        assert keys() == first
        instance.create_run_for_job(job, status=dg.DagsterRunStatus.SUCCESS)
        later = keys()
        assert [j for j, _ in later] == ["foundation_job"] and later != first
