"""``mergemix stage add`` and ``mergemix midtrain``: the verbs that make new stages.

Why together: a stage is a mid-training checkpoint; ``stage add`` registers one you trained elsewhere,
``midtrain`` trains one on a finished stage's chosen mixture and registers it the same way
(``add_stage``), so both go through the same name and checkpoint checks before anything is written.
"""

from __future__ import annotations

import click

from mergemix_dagster.cli.common import load, record, settings_and_defs
from mergemix_dagster.cli.options import verb, verb_group
from mergemix_dagster.core.errors import MergeMixError
from mergemix_dagster.resources import layout

stage = verb_group(
    "stage", "manage stages (mid-training checkpoints)",
    "  mergemix stage add s0\n  mergemix stage add s1 --checkpoint /ckpts/step-5000\n  mergemix stage remove s9",
)


@verb(
    "add", "register a mid-training checkpoint as a new stage",
    "  mergemix stage add s0                                   # the initial stage (uses model.base)\n"
    "  mergemix stage add s1 --checkpoint /ckpts/step-5000     # a local HF directory\n"
    "  mergemix stage add s2 --checkpoint s3://bucket/step-9000 --config my.yaml",
)
@click.argument("name")
@click.option(
    "--checkpoint", metavar="CHECKPOINT", default="",
    help="HF checkpoint directory, s3:// URI or hub id (not for the initial stage)",
)
@click.option("--force", is_flag=True, help="re-point an existing stage to another checkpoint")
def stage_add(config: str, name: str, checkpoint: str, force: bool) -> int:
    return add_stage(config, name, checkpoint, force)


stage.add_command(stage_add)


def add_stage(config: str, name: str, checkpoint: str, force: bool) -> int:
    """Register ``name`` (the initial stage on the base, any other on ``checkpoint``) in the store and as a
    Dagster partition; refuse a bad name, an unusable checkpoint, or re-pointing without ``force``."""
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.runner.stage import dagster_instance, register_stage

    settings = load(config)
    check_new_stage(settings, name, checkpoint)
    record(settings, config, "mergemix stage add")
    if not checkpoint:
        if name != settings.initial_stage:
            raise MergeMixError(f"stage {name!r} needs --checkpoint (only the initial stage uses the base)")
        added = register_stage(dagster_instance(settings), name)
        print(f"initial stage {name!r} ({'added' if added else 'already present'})")
        return 0
    store = CheckpointStore(root=settings.store_uri)
    key = layout.stage_registration(name)
    if store.exists(key) and not force:
        existing = store.get_json(key)
        if existing.get("checkpoint") != checkpoint and not existing.get("removed_at"):
            raise MergeMixError(
                f"stage {name!r} is already registered with {existing.get('checkpoint')!r}; "
                "pick a new stage name (or --force to re-point it)"
            )
    store.put_json(key, {"stage": name, "checkpoint": checkpoint}, overwrite=True)
    added = register_stage(dagster_instance(settings), name)
    print(f"stage {name!r} -> {checkpoint} ({'added' if added else 'already present'})")
    return 0


@verb(
    "remove", "take a stage out of Dagster's stage partitions; its results stay in the store",
    "  mergemix stage remove s9     # a typo registered by an older version\n"
    "  mergemix stage add s1 --checkpoint /ckpts/step-5000   # registers it again, reusing what is stored",
)
@click.argument("name")
def stage_remove(config: str, name: str) -> int:
    """Delete the stage's Dagster partition and mark its store registration removed (the checkpoint sensor
    and ``run --stage`` then leave it alone); nothing in the store or DuckDB is deleted."""
    from mergemix_dagster.assets.partitions import STAGE_PARTITIONS_NAME
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.runner.stage import dagster_instance

    settings = load(config)
    if name == settings.initial_stage or name in settings.stages.checkpoints:
        where = "the initial stage" if name == settings.initial_stage else "in the config's stages.checkpoints"
        raise MergeMixError(f"stage {name!r} is {where}: the next run would add it again; edit the config first")
    instance = dagster_instance(settings)
    store = CheckpointStore(root=settings.store_uri)
    key = layout.stage_registration(name)
    registered = store.exists(key)
    if not registered and not instance.has_dynamic_partition(STAGE_PARTITIONS_NAME, name):
        raise MergeMixError(f"stage {name!r} is not registered (nothing to remove)")
    if instance.has_dynamic_partition(STAGE_PARTITIONS_NAME, name):
        instance.delete_dynamic_partition(STAGE_PARTITIONS_NAME, name)
    if registered:
        from datetime import datetime, timezone

        record = store.get_json(key) | {"removed_at": datetime.now(timezone.utc).isoformat()}
        store.put_json(key, record, overwrite=True)
    print(f"stage {name!r} removed from Dagster's stage partitions")
    print(f"kept: {store.uri(layout.STAGES_PREFIX + name)}/ and {store.uri(layout.INDEX_PREFIX + name)}/ in the store, "
          f"its rows in {settings.database_path}, its Dagster run history; "
          f"`mergemix stage add {name} --checkpoint ...` registers it again and reuses them")
    return 0


stage.add_command(stage_remove)


def check_new_stage(settings, name: str, checkpoint: str) -> None:
    """A valid stage name, and a checkpoint that loads and matches the base (or the embedded model)."""
    from mergemix_dagster.core.preflight import check_base, check_checkpoint
    from mergemix_dagster.core.settings import check_stage_name

    check_stage_name(name)
    if checkpoint:
        base_config = None if settings.model.base == "embedded" else check_base(settings.model.base, {})[0]
        m = settings.model
        embedded = {"model_type": "llama", "hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
                    "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads}
        problems = check_checkpoint(name, checkpoint, base_config, embedded if base_config is None else None)
        if problems:
            raise problems[0]


@verb(
    "midtrain", "train a stage's base on its chosen mixture; register the result as a stage",
    "  mergemix midtrain --from-stage s0 --name s1\n  mergemix midtrain --name s1 --tokens 500000 --no-register",
)
@click.option("--from-stage", metavar="FROM_STAGE", default="s0", help="stage whose base and chosen mixture to use")
@click.option("--name", metavar="NAME", required=True, help="name of the new stage / checkpoint folder, e.g. s1")
@click.option("--tokens", metavar="TOKENS", type=int, default=250_000, help="tokens to train (default 250000)")
@click.option("--no-register", is_flag=True, help="only write the checkpoint")
def midtrain(config: str, from_stage: str, name: str, tokens: int, no_register: bool) -> int:
    """Continue training a stage's base on its chosen mixture: the real run MergeMix hands off to.

    On the embedded default this makes the mid-training checkpoint that becomes the next stage.
    """
    from pathlib import Path

    from mergemix_dagster.core.data.corpora import tokenize_documents
    from mergemix_dagster.core.mixture import Mixture
    from mergemix_dagster.core.training.loop import recipe_from, train
    from mergemix_dagster.core.training.model import load_checkpoint, save_checkpoint
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
    from mergemix_dagster.resources.artifacts import base_checkpoint, corpus_documents

    settings, _ = settings_and_defs(config)
    record(settings, config, "mergemix midtrain")
    store = CheckpointStore(root=settings.store_uri)
    rows = EvaluationDatabase(path=settings.database_path, store_root=settings.store_uri).query(
        "SELECT domain, weight FROM chosen_mixture WHERE stage = ?", [from_stage]
    )
    if rows.empty:
        raise MergeMixError(f"stage {from_stage!r} has no chosen mixture yet: run `mergemix run` first")
    mixture = Mixture.from_dict(dict(zip(rows["domain"], rows["weight"])), settings.domain_names)
    watch = Path(settings.stages.watch or settings.home_path / "checkpoints")
    out = watch / name
    if out.exists():
        raise MergeMixError(f"{out} already exists; choose another --name")
    model, tokenizer = load_checkpoint(base_checkpoint(store, from_stage)[0])
    streams = {d: tokenize_documents(corpus_documents(store, d)[0], tokenizer) for d in settings.domain_names}
    recipe = recipe_from(settings.experts.model_copy(update={"tokens": tokens}))
    print(f"mid-training {from_stage} on {mixture.label()} for {tokens:,} tokens")
    # progress lines, and a train state next to the output: rerunning after a kill resumes the run
    state_dir = out.parent / f".{out.name}.state"
    report = train(model, streams, mixture, recipe, on_log=lambda p: print(f"  {p.line()}", flush=True),
                   state_dir=state_dir, save_every=max(1, recipe.steps // 10))
    if report.resumed_from_step:
        print(f"resumed from step {report.resumed_from_step} ({state_dir})")
    save_checkpoint(model, tokenizer, out)
    print(f"checkpoint {out} (loss {report.final_loss:.3f}, {report.seconds:.0f} s)")
    if not no_register:
        return add_stage(config, name, str(out), False)
    return 0


COMMANDS: list[click.Command] = [stage, midtrain]
