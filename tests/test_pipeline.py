"""The whole graph on the smoke config, in process, against a real (temporary) Dagster instance."""

from __future__ import annotations

import math

import dagster as dg

from mergemix_dagster.assets.partitions import expert_partition_key
from mergemix_dagster.resources import EvaluationDatabase


def _latest(instance, key: str, partition: str | None = None):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return records[0].asset_materialization if records else None


def test_every_asset_is_materialized(smoke_run):
    settings, _, instance, _ = smoke_run
    for key in ("general_corpus", "base_tokenizer"):
        assert _latest(instance, key) is not None
    for d in settings.domain_names:
        assert _latest(instance, "domain_corpus", d) is not None
        assert _latest(instance, "expert_checkpoint", str(expert_partition_key(d, "s0"))) is not None
    for key in ("stage_base", "merge_candidates", "candidate_evaluations", "capability_surrogates", "search_rounds",
                "chosen_mixture"):
        assert _latest(instance, key, "s0") is not None


def test_evaluations_hold_one_row_per_candidate_and_task(smoke_run):
    settings, *_ = smoke_run
    db = EvaluationDatabase(path=settings.database_path)
    seeds = db.query("SELECT candidate_id, task FROM evaluations WHERE stage = 's0' AND kind = 'seed'")
    assert len(seeds) == settings.search.n_candidates * len(settings.evaluation.tasks)
    assert not seeds.duplicated().any()
    alpha = db.query("SELECT alpha['math'] AS a FROM evaluations WHERE kind = 'seed'")["a"]
    assert alpha.between(0, 1).all()


def test_chosen_mixture_lies_on_the_simplex(smoke_run):
    settings, *_ = smoke_run
    db = EvaluationDatabase(path=settings.database_path)
    rows = db.query("SELECT domain, weight FROM chosen_mixture WHERE stage = 's0'")
    assert sorted(rows["domain"]) == sorted(settings.domain_names)
    assert (rows["weight"] >= 0).all()
    assert math.isclose(rows["weight"].sum(), 1.0, abs_tol=1e-9)


def test_rerun_reuses_finished_work_and_never_duplicates_rows(smoke_run):
    settings, defs, instance, _ = smoke_run
    db = EvaluationDatabase(path=settings.database_path)
    before = db.query("SELECT count(*) AS n FROM evaluations")["n"][0]
    result = defs.resolve_job_def("experts_job").execute_in_process(
        instance=instance, partition_key=expert_partition_key("math", "s0")
    )
    assert result.success
    assert _latest(instance, "expert_checkpoint", str(expert_partition_key("math", "s0"))).metadata["reused"].value
    result = defs.resolve_job_def("optimize_job").execute_in_process(instance=instance, partition_key="s0")
    assert result.success
    assert _latest(instance, "candidate_evaluations", "s0").metadata["candidates_scored_now"].value == 0
    after = db.query("SELECT count(*) AS n FROM evaluations")["n"][0]
    assert after == before


def test_rows_of_a_metric_no_longer_configured_are_ignored():
    import pandas as pd

    from mergemix_dagster.resources.artifacts import configured_rows
    from mergemix_dagster.core.settings import Settings

    s = Settings(domains=[{"name": "math"}, {"name": "code"}])  # bundled tasks, metric gold_prob
    rows = pd.DataFrame(
        {"task": ["mm_math", "mm_math", "mm_arith_words"], "metric": ["acc", "gold_prob", "gold_prob"]}
    )
    assert configured_rows(rows, s)["metric"].tolist() == ["gold_prob"]
    assert len(configured_rows(rows, s, heldout=True)) == 2


def test_a_settings_edit_makes_stale_only_the_assets_that_read_it(smoke_run, pipeline_config):
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.runner.staleness import Status, stage_status

    settings, defs, instance, _ = smoke_run
    assert stage_status(instance, defs, settings.domain_names, "s0").fresh
    edited = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(update={"limit": 20})})
    status = stage_status(instance, build_definitions(edited, config=str(pipeline_config)), edited.domain_names, "s0")
    assert status.base is Status.FRESH and set(status.experts.values()) == {Status.FRESH}
    assert status.downstream["merge_candidates"] is Status.FRESH
    assert status.downstream["candidate_evaluations"] is Status.STALE
    assert status.downstream["chosen_mixture"] is Status.STALE  # downstream of the edit
    more_tokens = settings.model_copy(update={"experts": settings.experts.model_copy(update={"tokens": 9000})})
    status = stage_status(instance, build_definitions(more_tokens, config=str(pipeline_config)), settings.domain_names, "s0")
    assert set(status.experts.values()) == {Status.STALE} and status.base is Status.FRESH
