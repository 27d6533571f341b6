"""Expert checkpoints: one per domain × stage, trained from the stage base with a constant LR, short horizon,
by the configured trainer (``resources/trainers/``: in-process, or the team's command through Dagster Pipes)."""


import tempfile
from pathlib import Path

import dagster as dg

from mergemix_dagster.core.training.model import checkpoint_fingerprint
from mergemix_dagster.assets.partitions import SAME_DOMAIN, SAME_STAGE, PipelinePartitions
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.resources.trainers import TrainJob, trainer_for, trainer_identity
from mergemix_dagster.resources import layout
from mergemix_dagster.core.training.loop import recipe_from
from mergemix_dagster.resources.artifacts import base_checkpoint, read_pointer
from mergemix_dagster.steps.metadata import loss_curve, number
from mergemix_dagster.resources.layout import loss_history_key
from mergemix_dagster.resources.pools import AssetPools

EXPERT_CODE_VERSION = "1"
#: Dagster concurrency pool of training assets by default (``trainer.pool``; resources/pools.py)
TRAINING_POOL = AssetPools().training


def train_or_reuse_expert(
    context: dg.AssetExecutionContext,
    s,
    store: CheckpointStore,
    database: EvaluationDatabase,
    name: str,
    stage: str,
    key_of=layout.expert_key,
    pointer_of=layout.expert_pointer,
) -> dg.MaterializeResult:
    """Continue training the stage base on the corpus ``name`` (a domain, or a ``domain/sub`` leaf) and point
    ``pointer_of(stage, name)`` at it. Reuses a finished expert with identical inputs (base, corpus, recipe)."""
    domain = name
    base_dir, base_fp = base_checkpoint(store, stage)
    corpus = read_pointer(store, layout.corpus_pointer(domain), f"corpus of domain {domain!r}")
    general_fp = None
    if s.experts.general_fraction > 0:
        general_fp = read_pointer(store, layout.corpus_pointer("general"), "the general corpus")["fingerprint"]
    identity = {
        "base": base_fp,
        "corpus": corpus["fingerprint"],
        "general": general_fp,
        "recipe": s.experts.model_dump(),
        "code": EXPERT_CODE_VERSION,
    }
    trainer = trainer_identity(s.trainer)
    if trainer is not None:  # the embedded loop keeps the keys it always had
        identity["trainer"] = trainer
    version = layout.content_version(identity)
    key = key_of(stage, domain, version)
    metadata: dict = {"domain": domain, "stage": stage, "trainer": s.trainer.kind}
    if store.exists(key):
        context.log.info(f"expert {key} already trained with these inputs: reusing it")
        metadata["reused"] = True
    else:
        corpus_files = {domain: store.get_file(corpus["key"])}
        weights = {domain: 1.0}
        if general_fp is not None:
            general = read_pointer(store, layout.corpus_pointer("general"), "the general corpus")
            corpus_files["general"] = store.get_file(general["key"])
            weights = {domain: 1.0 - s.experts.general_fraction, "general": s.experts.general_fraction}
        recipe = recipe_from(s.experts)
        base_pointer = read_pointer(store, layout.base_pointer(stage), f"base of stage {stage!r}")
        uris = {"base": store.uri(base_pointer["key"]) if "key" in base_pointer else base_pointer["path"]}
        uris |= {d: store.uri(read_pointer(store, layout.corpus_pointer(d), d)["key"]) for d in corpus_files}
        job = TrainJob(f"expert:{domain}:{version}", base_dir, weights, corpus_files, recipe,
                       {"domain": domain, "stage": stage}, uris)
        context.log.info(
            f"training expert {domain}@{stage} ({s.trainer.kind}): {recipe.tokens:,} tokens, lr {recipe.learning_rate}"
        )
        with tempfile.TemporaryDirectory() as tmp:
            outcome = trainer_for(s.trainer, store).train(context, job, Path(tmp))
            store.put_dir(outcome.checkpoint, key)
        if outcome.losses:
            store.put_json(loss_history_key(key), {"losses": outcome.losses}, overwrite=True)
        database.record_training_run(
            stage, job.run_id, "expert", weights, recipe.seed, outcome.tokens,
            outcome.seconds, outcome.final_loss, store.uri(key),
        )
        metadata |= {
            "tokens_trained": dg.MetadataValue.int(outcome.tokens),
            "final_loss": number(outcome.final_loss),
            "train_seconds": number(outcome.seconds),
            **{k: number(v) if isinstance(v, float) else v for k, v in outcome.metadata.items()},
        }
    fingerprint = checkpoint_fingerprint(store.get_dir(key))
    store.put_json(
        pointer_of(stage, domain),
        {"key": key, "fingerprint": fingerprint, "base": base_fp, "corpus": corpus["fingerprint"]},
        overwrite=True,
    )
    metadata |= {"uri": dg.MetadataValue.path(store.uri(key)), "fingerprint": fingerprint}
    if store.exists(loss_history_key(key)):  # also for a reused expert: the curve of the run that made it
        metadata["loss_curve"] = loss_curve(
            {domain: store.get_json(loss_history_key(key))["losses"]}, f"expert {domain}@{stage}: training loss"
        )
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(fingerprint[:16]))


def build_expert_assets(
    parts: PipelinePartitions, pools: AssetPools = AssetPools(), consolidated: dg.AssetDep | None = None
) -> list[dg.AssetsDefinition]:
    """``consolidated``: with a bottom-up hierarchy, the dependency on each split domain's sub-domain weights;
    that domain's expert is then the merge of its sub-domain experts (``steps/subdomain_search.consolidate_domain``)."""

    @dg.asset(
        partitions_def=parts.domain_stage,
        group_name="experts",
        code_version=EXPERT_CODE_VERSION,
        deps=[
            dg.AssetDep("domain_corpus", partition_mapping=SAME_DOMAIN),
            dg.AssetDep("stage_base", partition_mapping=SAME_STAGE),
            *([consolidated] if consolidated is not None else []),
        ],
        kinds={"pytorch"},
        pool=pools.training,
    )
    def expert_checkpoint(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Continue training the stage base on one domain (METHOD.md §2). Reuses a finished expert
        with identical inputs (base, corpus, recipe) instead of training it again. With a bottom-up
        hierarchy a split domain's expert is its sub-domain experts merged at their chosen weights."""
        s = settings.get()
        keys = context.partition_key.keys_by_dimension
        domain, stage = keys["domain"], keys["stage"]
        if s.search.hierarchy == "bottom_up" and domain in s.split_domains:
            from mergemix_dagster.steps.subdomain_search import consolidate_domain

            return consolidate_domain(context, s, store, domain, stage)
        return train_or_reuse_expert(context, s, store, database, domain, stage)

    return [expert_checkpoint]
