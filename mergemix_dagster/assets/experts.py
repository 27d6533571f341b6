"""Expert checkpoints: one per domain × stage, trained from the stage base with a constant LR, short horizon."""


import tempfile
from pathlib import Path

import dagster as dg

from ..core.corpora import tokenize_documents
from ..core.mixture import Mixture
from ..core.model import checkpoint_fingerprint, load_checkpoint, save_checkpoint
from ..core.train import train
from ..partitions import SAME_DOMAIN, SAME_STAGE, PipelinePartitions
from ..resources import CheckpointStore, EvaluationDatabase
from ..resources.settings import PipelineSettings
from . import layout
from .base import recipe_from
from .loading import base_checkpoint, corpus_documents, read_pointer

EXPERT_CODE_VERSION = "1"


def build_expert_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @dg.asset(
        partitions_def=parts.domain_stage,
        group_name="experts",
        code_version=EXPERT_CODE_VERSION,
        deps=[
            dg.AssetDep("domain_corpus", partition_mapping=SAME_DOMAIN),
            dg.AssetDep("stage_base", partition_mapping=SAME_STAGE),
        ],
        kinds={"pytorch"},
    )
    def expert_checkpoint(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Continue training the stage base on one domain (METHOD.md §2). Reuses a finished expert
        with identical inputs (base, corpus, recipe) instead of training it again."""
        s = settings.get()
        keys = context.partition_key.keys_by_dimension
        domain, stage = keys["domain"], keys["stage"]
        base_dir, base_fp = base_checkpoint(store, stage)
        corpus = read_pointer(store, layout.corpus_pointer(domain), f"corpus of domain {domain!r}")
        general_fp = None
        if s.experts.general_fraction > 0:
            general_fp = read_pointer(store, layout.corpus_pointer("general"), "the general corpus")["fingerprint"]
        version = layout.content_version(
            {
                "base": base_fp,
                "corpus": corpus["fingerprint"],
                "general": general_fp,
                "recipe": s.experts.model_dump(),
                "code": EXPERT_CODE_VERSION,
            }
        )
        key = layout.expert_key(stage, domain, version)
        metadata: dict = {"domain": domain, "stage": stage}
        if store.exists(key):
            context.log.info(f"expert {key} already trained with these inputs: reusing it")
            metadata["reused"] = True
        else:
            model, tokenizer = load_checkpoint(base_dir)
            docs, _ = corpus_documents(store, domain)
            streams = {domain: tokenize_documents(docs, tokenizer)}
            weights = {domain: 1.0}
            if general_fp is not None:
                general_docs, _ = corpus_documents(store, "general")
                streams["general"] = tokenize_documents(general_docs, tokenizer)
                weights = {domain: 1.0 - s.experts.general_fraction, "general": s.experts.general_fraction}
            recipe = recipe_from(s.experts)
            context.log.info(f"training expert {domain}@{stage}: {recipe.tokens:,} tokens, lr {recipe.learning_rate}")
            report = train(
                model,
                streams,
                Mixture.from_dict(weights),
                recipe,
                progress=lambda step, loss: context.log.info(f"{domain} step {step}: loss {loss:.3f}")
                if step % 50 == 0
                else None,
            )
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(model, tokenizer, Path(tmp) / "ckpt")
                store.put_dir(Path(tmp) / "ckpt", key)
            database.record_training_run(
                stage, f"expert:{domain}:{version}", "expert", weights, recipe.seed, report.tokens,
                report.seconds, report.final_loss, store.uri(key),
            )
            metadata |= {
                "corpus_tokens": dg.MetadataValue.int(int(len(streams[domain]))),
                "tokens_trained": dg.MetadataValue.int(report.tokens),
                "first_loss": dg.MetadataValue.float(report.losses[0] if report.losses else float("nan")),
                "final_loss": dg.MetadataValue.float(report.final_loss),
                "train_seconds": dg.MetadataValue.float(report.seconds),
                "tokens_per_second": dg.MetadataValue.float(report.tokens_per_second),
            }
        fingerprint = checkpoint_fingerprint(store.get_dir(key))
        store.put_json(
            layout.expert_pointer(stage, domain),
            {"key": key, "fingerprint": fingerprint, "base": base_fp, "corpus": corpus["fingerprint"]},
            overwrite=True,
        )
        metadata |= {"uri": dg.MetadataValue.path(store.uri(key)), "fingerprint": fingerprint}
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(fingerprint[:16]))

    return [expert_checkpoint]
