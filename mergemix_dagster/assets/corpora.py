"""Domain corpora (one partition per domain) and the general corpus used for the tokenizer and base."""


import os
import tempfile
from pathlib import Path

import dagster as dg

from ..core.corpora import corpus_fingerprint, load_documents, validate_documents, write_corpus
from ..core.defaults import EMBEDDED_DOMAINS, build_domain_documents, build_general_documents
from ..partitions import PipelinePartitions
from ..resources import CheckpointStore
from ..resources.settings import PipelineSettings
from ..settings import DomainSettings
from . import layout

CORPUS_CODE_VERSION = "1"


def _cap_chars(docs: list[str], max_chars: int) -> list[str]:
    kept, total = [], 0
    for doc in docs:
        if total >= max_chars:
            break
        kept.append(doc)
        total += len(doc)
    return kept


def source_fingerprint(cfg: DomainSettings) -> str:
    """Cheap identity of a domain's source: file paths, sizes and mtimes (or the embedded builder's settings).

    The corpus sensor compares it with the one recorded at the last materialization to notice edits.
    """
    if not cfg.paths:
        return layout.content_version({"embedded": cfg.name, "settings": cfg.model_dump(), "code": CORPUS_CODE_VERSION})
    entries: list = []
    for path in cfg.paths:
        p = Path(path)
        if not p.exists():
            entries.append([path, "remote"])  # s3:// and other remote sources: re-read on every run
            continue
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                st = os.stat(f)
                entries.append([str(f), st.st_size, st.st_mtime_ns])
    return layout.content_version(entries)


def read_domain_documents(cfg: DomainSettings, store: CheckpointStore, seed: int) -> tuple[list[str], str]:
    """The documents of one domain and a description of where they came from."""
    if not cfg.paths:
        if cfg.name not in EMBEDDED_DOMAINS:
            from ..core.errors import ConfigError

            raise ConfigError(
                f"domain {cfg.name!r} has no `paths` and no embedded default exists for it "
                f"(embedded domains: {list(EMBEDDED_DOMAINS)})"
            )
        return build_domain_documents(cfg.name, max_chars=cfg.max_chars, seed=seed), f"embedded:{cfg.name}"
    local_paths = [store.fetch_external(path) for path in cfg.paths]
    return load_documents(local_paths, text_field=cfg.text_field), ", ".join(cfg.paths)


def _write_corpus(store: CheckpointStore, docs: list[str], key: str) -> str:
    if store.exists(key):
        return store.uri(key)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl.gz"
        write_corpus(docs, path)
        return store.put_file(path, key)


def _corpus_metadata(docs: list[str], fingerprint: str, uri: str, source: str) -> dict:
    preview = docs[0][:400] if docs else ""
    return {
        "documents": dg.MetadataValue.int(len(docs)),
        "characters": dg.MetadataValue.int(sum(len(d) for d in docs)),
        "fingerprint": dg.MetadataValue.text(fingerprint),
        "uri": dg.MetadataValue.path(uri),
        "source": dg.MetadataValue.text(source),
        "preview": dg.MetadataValue.md(f"```\n{preview}\n```"),
    }


def build_corpus_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @dg.asset(
        partitions_def=parts.domain,
        group_name="corpora",
        code_version=CORPUS_CODE_VERSION,
        kinds={"python"},
    )
    def domain_corpus(
        context: dg.AssetExecutionContext, settings: PipelineSettings, store: CheckpointStore
    ) -> dg.MaterializeResult:
        """One domain's training documents, validated, capped to `max_chars`, stored by content hash."""
        cfg = settings.get().domain(context.partition_key)
        source_fp = source_fingerprint(cfg)
        docs, source = read_domain_documents(cfg, store, seed=settings.get().search.seed)
        docs = _cap_chars(validate_documents(cfg.name, docs), cfg.max_chars)
        fingerprint = corpus_fingerprint(docs)
        uri = _write_corpus(store, docs, layout.corpus_key(cfg.name, fingerprint))
        store.put_json(
            layout.corpus_pointer(cfg.name),
            {"key": layout.corpus_key(cfg.name, fingerprint), "fingerprint": fingerprint, "source": source},
            overwrite=True,
        )
        context.log.info(f"{cfg.name}: {len(docs)} documents from {source}")
        return dg.MaterializeResult(
            metadata=_corpus_metadata(docs, fingerprint, uri, source)
            | {"source_fingerprint": dg.MetadataValue.text(source_fp)},
            data_version=dg.DataVersion(fingerprint[:16]),
        )

    @dg.asset(group_name="corpora", code_version=CORPUS_CODE_VERSION, kinds={"python"})
    def general_corpus(settings: PipelineSettings, store: CheckpointStore) -> dg.MaterializeResult:
        """General text for the tokenizer and the embedded base's pre-training (and DeMix-style mixing)."""
        s = settings.get()
        docs = validate_documents("general", build_general_documents(s.model.general_max_chars, seed=s.search.seed))
        fingerprint = corpus_fingerprint(docs)
        uri = _write_corpus(store, docs, layout.corpus_key("general", fingerprint))
        store.put_json(
            layout.corpus_pointer("general"),
            {"key": layout.corpus_key("general", fingerprint), "fingerprint": fingerprint, "source": "embedded"},
            overwrite=True,
        )
        return dg.MaterializeResult(
            metadata=_corpus_metadata(docs, fingerprint, uri, "embedded:general"),
            data_version=dg.DataVersion(fingerprint[:16]),
        )

    return [domain_corpus, general_corpus]
