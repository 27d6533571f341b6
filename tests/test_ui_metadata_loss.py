"""Loss curves in the UI: every expert page shows its training loss curve, also when the expert is reused."""

from __future__ import annotations

import base64

import dagster as dg

from mergemix_dagster.core.training.loop import recipe_from
from mergemix_dagster.resources.layout import expert_pointer
from mergemix_dagster.steps.metadata import loss_curve
from mergemix_dagster.resources.layout import loss_history_key
from mergemix_dagster.assets.partitions import STAGE_PARTITIONS_NAME, expert_partition_key
from mergemix_dagster.resources import CheckpointStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png(markdown: str) -> bytes:
    assert "](data:image/png;base64," in markdown
    return base64.b64decode(markdown.split("base64,", 1)[1].rstrip(")"))


def _expert_metadata(instance, partition) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("expert_checkpoint"), asset_partitions=[str(partition)]), limit=1
    ).records
    return dict(records[0].asset_materialization.metadata)


def test_expert_page_shows_its_loss_curve_with_one_point_per_step(smoke_run):
    settings, _, instance, _ = smoke_run
    store = CheckpointStore(root=settings.store_uri)
    steps = recipe_from(settings.experts).steps
    for domain in settings.domain_names:
        metadata = _expert_metadata(instance, expert_partition_key(domain, "s0"))
        key = store.get_json(expert_pointer("s0", domain))["key"]
        losses = store.get_json(loss_history_key(key))["losses"]
        assert len(losses) == steps  # one recorded loss per optimiser step, none lost or doubled
        png = _png(metadata["loss_curve"].value)
        assert png.startswith(PNG_SIGNATURE)
        # the image is the full stored history drawn (matplotlib's Agg PNG is deterministic)
        assert png == _png(loss_curve({domain: losses}, f"expert {domain}@s0: training loss").value)


def test_a_reused_expert_still_shows_its_curve(smoke_run):
    settings, defs, _, _ = smoke_run
    domain = settings.domain_names[0]
    partition = expert_partition_key(domain, "s0")
    # a separate instance: the same store, so the expert is found and reused, not retrained
    with dg.instance_for_test() as fresh:
        fresh.add_dynamic_partitions(STAGE_PARTITIONS_NAME, ["s0"])
        result = defs.resolve_job_def("experts_job").execute_in_process(instance=fresh, partition_key=partition)
        assert result.success
        metadata = _expert_metadata(fresh, partition)
    assert metadata["reused"].value is True
    assert "final_loss" not in metadata  # nothing was trained in this run
    assert _png(metadata["loss_curve"].value).startswith(PNG_SIGNATURE)


def test_reference_models_page_shows_every_reference_runs_curve(smoke_run):
    from mergemix_dagster.steps.reference_runs import ReferenceTrainer
    from mergemix_dagster.runner.stage import run_validation
    from mergemix_dagster.resources import EvaluationDatabase

    settings, defs, instance, _ = smoke_run
    run_validation(defs, settings, instance, "s0")  # reuses the runs when another test did it already
    metadata = dict(
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("reference_models"), asset_partitions=["s0"]), limit=1
        ).records[0].asset_materialization.metadata
    )
    assert _png(metadata["loss_curves"].value).startswith(PNG_SIGNATURE)
    store = CheckpointStore(root=settings.store_uri)
    trainer = ReferenceTrainer(settings, store, EvaluationDatabase(path=settings.database_path), "s0")
    keys = store.list_keys("stages/s0/references/")
    trained = {k.split("/")[3] for k in keys if k.endswith("/_COMPLETE")}
    kept = {k.split("/")[3].removesuffix(".loss_history.json") for k in keys if k.endswith(".loss_history.json")}
    assert trained and kept == trained  # every reference run keeps its curve
    steps = recipe_from(settings.experts).steps
    assert all(len(trainer.losses(run_id)) == steps for run_id in trained)


def test_expert_page_numbers_are_rounded(smoke_run):
    settings, _, instance, _ = smoke_run
    # the materialization that trained it (later tests of the session may rematerialize it as "reused")
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("expert_checkpoint"),
                              asset_partitions=[str(expert_partition_key(settings.domain_names[0], "s0"))]),
        limit=100,
    ).records
    metadata = next(dict(r.asset_materialization.metadata) for r in records
                    if "final_loss" in r.asset_materialization.metadata)
    for name in ("final_loss", "train_seconds", "first_loss", "tokens_per_second"):
        value = metadata[name].value
        assert value == float(f"{value:.4g}"), (name, value)  # never 4.362176418304443
