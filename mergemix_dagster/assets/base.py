"""The tokenizer and the per-stage base checkpoint that every expert of that stage starts from."""


import tempfile
from dataclasses import asdict
from pathlib import Path

import dagster as dg

from mergemix_dagster.core.data.corpora import tokenize_documents
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.preflight import check_tokenizer
from mergemix_dagster.core.training.model import (
    TinyModelSpec,
    checkpoint_fingerprint,
    checkpoint_manifest,
    tokenizer_fingerprint,
    load_checkpoint,
    new_tiny_llama,
    save_checkpoint,
    train_tokenizer,
)
from mergemix_dagster.core.training.loop import train
from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.resources import CheckpointStore
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import layout
from mergemix_dagster.resources.artifacts import checkpoint_identity, corpus_documents, read_pointer
from mergemix_dagster.core.training.loop import recipe_from

BASE_CODE_VERSION = "1"


def checkpoint_source_fingerprint(source: str) -> str:
    """Cheap identity of an outside checkpoint folder: every file's name, size and mtime (weights, config,
    tokenizer). ``mergemix run`` compares it with the recorded one and re-reads a base that changed."""
    local = Path(source).expanduser()
    if "://" in source or not local.is_dir():
        return layout.content_version({"source": source})
    entries = [[p.relative_to(local).as_posix(), p.stat().st_size, p.stat().st_mtime_ns]
               for p in sorted(local.rglob("*")) if p.is_file()]
    return layout.content_version(entries)


def tiny_spec(settings: Settings, vocab_size: int) -> TinyModelSpec:
    m = settings.model
    return TinyModelSpec(
        vocab_size=vocab_size,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        num_heads=m.num_heads,
        intermediate_size=m.intermediate_size,
        max_position_embeddings=m.max_position_embeddings,
    )


def _pretrain_embedded_base(context, s: Settings, store: CheckpointStore, out_dir: Path) -> dict:
    tok_pointer = read_pointer(store, layout.TOKENIZER_POINTER, "the tokenizer")
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(store.get_dir(tok_pointer["key"])))
    docs, _ = corpus_documents(store, "general")
    stream = tokenize_documents(docs, tokenizer)
    model = new_tiny_llama(tiny_spec(s, len(tokenizer)), tokenizer, seed=s.pretrain.seed)
    recipe = recipe_from(s.pretrain)
    n_params = sum(p.numel() for p in model.parameters())
    context.log.info(f"pre-training a {n_params / 1e6:.2f}M-parameter base on {len(stream):,} general tokens")
    report = train(
        model,
        {"general": stream},
        Mixture(("general",), (1.0,)),
        recipe,
        progress=lambda step, loss: context.log.info(f"base step {step}: loss {loss:.3f}") if step % 50 == 0 else None,
    )
    save_checkpoint(model, tokenizer, out_dir)
    return {
        "parameters": dg.MetadataValue.int(n_params),
        "tokens_trained": dg.MetadataValue.int(report.tokens),
        "final_loss": dg.MetadataValue.float(report.final_loss),
        "train_seconds": dg.MetadataValue.float(report.seconds),
        "tokens_per_second": dg.MetadataValue.float(report.tokens_per_second),
    }


def build_base_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @dg.asset(group_name="base", code_version=BASE_CODE_VERSION, deps=["general_corpus"], kinds={"huggingface"})
    def base_tokenizer(settings: PipelineSettings, store: CheckpointStore) -> dg.MaterializeResult:
        """BPE tokenizer trained on the general corpus (embedded base) or taken from the user's base model."""
        from transformers import AutoTokenizer

        s = settings.get()
        if s.model.base == "embedded":
            general = read_pointer(store, layout.corpus_pointer("general"), "the general corpus")
            version = layout.content_version({"corpus": general["fingerprint"], "vocab": s.model.vocab_size})
        else:  # the user's base: its tokenizer files' content is part of the key
            problems = check_tokenizer(s.model.base)
            if problems:
                raise problems[0]
            local = Path(s.model.base).expanduser()
            version = layout.content_version(
                {"base": s.model.base, "tokenizer": tokenizer_fingerprint(local) if local.is_dir() else None}
            )
        key = f"{layout.TOKENIZER}/{version}"
        if not store.exists(key):  # train (or fetch) only when no tokenizer with these inputs is stored
            if s.model.base == "embedded":
                tokenizer = train_tokenizer(corpus_documents(store, "general")[0], s.model.vocab_size)
            else:
                tokenizer = AutoTokenizer.from_pretrained(s.model.base)
            with tempfile.TemporaryDirectory() as tmp:
                tokenizer.save_pretrained(tmp)
                store.put_dir(Path(tmp), key)
        tokenizer = AutoTokenizer.from_pretrained(str(store.get_dir(key)))
        store.put_json(layout.TOKENIZER_POINTER, {"key": key, "fingerprint": version}, overwrite=True)
        return dg.MaterializeResult(
            metadata={"vocab_size": dg.MetadataValue.int(len(tokenizer)), "uri": store.uri(key)},
            data_version=dg.DataVersion(version),
        )

    @dg.asset(
        partitions_def=parts.stage,
        group_name="base",
        code_version=BASE_CODE_VERSION,
        deps=["base_tokenizer", "general_corpus"],
        kinds={"pytorch"},
    )
    def stage_base(
        context: dg.AssetExecutionContext, settings: PipelineSettings, store: CheckpointStore
    ) -> dg.MaterializeResult:
        """The base checkpoint of a stage: the initial base for the first stage, a registered
        mid-training checkpoint for later ones. Experts of this stage all start from it."""
        s = settings.get()
        stage = context.partition_key
        if stage != s.initial_stage or s.model.base != "embedded":
            # An outside checkpoint: record where it is, never copy a big model we do not need to.
            if stage == s.initial_stage:
                source = s.model.base
            else:
                source = read_pointer(store, layout.stage_registration(stage), f"registration of stage {stage!r}")[
                    "checkpoint"
                ]
            local = Path(store.fetch_external(source))
            if local.is_dir():
                # recorded so every later load verifies the files (manifest) and the tokenizer is in the key
                fingerprint = checkpoint_fingerprint(local)
                pointer = {
                    "path": source,
                    "fingerprint": fingerprint,
                    "manifest": checkpoint_manifest(local),
                    "tokenizer": tokenizer_fingerprint(local),
                }
            else:  # a hub id: load once and keep a local copy in the store
                model, tokenizer = load_checkpoint(source)
                with tempfile.TemporaryDirectory() as tmp:
                    save_checkpoint(model, tokenizer, Path(tmp) / "ckpt")
                    fingerprint = checkpoint_fingerprint(Path(tmp) / "ckpt")
                    tok_fp = tokenizer_fingerprint(Path(tmp) / "ckpt")
                    key = layout.base_key(stage, fingerprint[:16])
                    if not store.exists(key):
                        store.put_dir(Path(tmp) / "ckpt", key)
                pointer = {"key": key, "fingerprint": fingerprint, "tokenizer": tok_fp}
            store.put_json(layout.base_pointer(stage), pointer | {"source": source}, overwrite=True)
            identity = checkpoint_identity(pointer)
            return dg.MaterializeResult(
                metadata={
                    "source": source,
                    "fingerprint": fingerprint,
                    "source_fingerprint": dg.MetadataValue.text(checkpoint_source_fingerprint(source)),
                },
                data_version=dg.DataVersion(identity[:16]),
            )

        tok = read_pointer(store, layout.TOKENIZER_POINTER, "the tokenizer")
        general = read_pointer(store, layout.corpus_pointer("general"), "the general corpus")
        version = layout.content_version(
            {
                "tokenizer": tok["fingerprint"],
                "corpus": general["fingerprint"],
                "spec": asdict(tiny_spec(s, 0)),
                "recipe": s.pretrain.model_dump(),
                "code": BASE_CODE_VERSION,
            }
        )
        key = layout.base_key(stage, version)
        metadata: dict = {}
        if store.exists(key):
            context.log.info(f"base {key} already trained with these inputs: reusing it")
            metadata["reused"] = True
        else:
            with tempfile.TemporaryDirectory() as tmp:
                metadata = _pretrain_embedded_base(context, s, store, Path(tmp) / "ckpt")
                store.put_dir(Path(tmp) / "ckpt", key)
        fingerprint = checkpoint_fingerprint(store.get_dir(key))
        store.put_json(layout.base_pointer(stage), {"key": key, "fingerprint": fingerprint}, overwrite=True)
        metadata |= {"uri": dg.MetadataValue.path(store.uri(key)), "fingerprint": fingerprint}
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(fingerprint[:16]))

    return [base_tokenizer, stage_base]
