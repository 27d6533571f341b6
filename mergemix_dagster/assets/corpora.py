"""Domain corpora (one partition per domain) and the general corpus used for the tokenizer and base."""


import os
from pathlib import Path

import dagster as dg

from mergemix_dagster.core.data.corpora import corpus_fingerprint, expand_paths, is_glob, read_documents, validate_documents
from mergemix_dagster.core.data.defaults import EMBEDDED_DOMAINS, build_domain_documents, build_general_documents
from mergemix_dagster.core.data.defaults.subdomains import EMBEDDED_SUBDOMAINS, EMBEDDED_SUBDOMAINS_VERSION, build_subdomain_documents
from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.resources import CheckpointStore
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.core.search.hierarchy import proportional_caps, weighted_caps
from mergemix_dagster.core.data.subdomains import leaf_name
from mergemix_dagster.core.settings import DomainSettings, SubdomainSettings
from mergemix_dagster.resources import layout
from mergemix_dagster.steps.metadata import corpus_metadata
from mergemix_dagster.resources.artifacts import store_corpus
from mergemix_dagster.resources.content_hash import content_hash

CORPUS_CODE_VERSION = "1"


def _cap_chars(docs: list[str], max_chars: int) -> list[str]:
    """At most ``max_chars`` characters: whole documents, the one that crosses the budget cut to fit."""
    kept, total = [], 0
    for doc in docs:
        if total >= max_chars:
            break
        kept.append(doc[: max_chars - total])
        total += len(kept[-1])
    return kept


REMOTE_SOURCE = "remote"


def files_fingerprint(paths: list[str]) -> str:
    """Identity of local files named by ``paths`` (dirs and globs expanded): names, sizes and content hashes,
    cached by size, mtime and inode (``resources/content_hash.py``: one ``stat`` per unchanged file; a file
    edited in place with the same size and mtime is seen by ``mergemix check --full``).

    A remote path (``s3://``) contributes only the marker ``remote``: its content is checked by reading it.
    """
    entries: list = []
    for path in paths:
        if "://" in str(path) and not str(path).startswith("file://"):
            entries.append([path, REMOTE_SOURCE])
            continue
        p = Path(path).expanduser()
        if is_glob(path) or p.exists():
            try:
                files = expand_paths([path])
            except Exception:  # an empty glob or dir: its (missing) content is the identity
                files = []
            entries.append([path, [[str(f), os.stat(f).st_size, content_hash(f)] for f in files]])
        else:
            entries.append([path, "missing"])
    return layout.content_version(entries)


def source_fingerprint(cfg: DomainSettings) -> str:
    """Cheap identity of a domain's source: file paths, sizes and cached content hashes (``files_fingerprint``), or
    the embedded builder's settings.

    ``mergemix run`` (and the corpus sensor) compare it with the one recorded at the last materialization
    and re-read the corpus when it differs; remote sources are re-read on every run.
    """
    paths = list(cfg.paths) or [p for sub in cfg.subdomains for p in sub.paths]  # a split domain: its sub-domains
    if not paths:
        identity = {"embedded": cfg.name, "settings": cfg.model_dump(), "code": CORPUS_CODE_VERSION}
        if cfg.subdomains:  # a split embedded domain is built from the embedded sub-domain builders
            identity["subdomains"] = EMBEDDED_SUBDOMAINS_VERSION
        return layout.content_version(identity)
    return files_fingerprint(paths) + ("" if not has_remote(paths) else f"+{REMOTE_SOURCE}")


def subdomain_source_fingerprint(cfg: DomainSettings, sub: SubdomainSettings) -> str:
    """Cheap identity of one sub-domain's files (as ``source_fingerprint`` for a domain)."""
    if not sub.paths:
        return layout.content_version({"embedded": leaf_name(cfg.name, sub.name), "settings": cfg.model_dump(),
                                       "code": CORPUS_CODE_VERSION, "subdomains": EMBEDDED_SUBDOMAINS_VERSION})
    return files_fingerprint(list(sub.paths)) + ("" if not has_remote(sub.paths) else f"+{REMOTE_SOURCE}")


def has_remote(paths) -> bool:
    return any("://" in str(p) and not str(p).startswith("file://") for p in paths)


def general_source_fingerprint(s) -> str:
    """Identity of the general corpus's source: the user's ``model.general_paths`` or the embedded builder."""
    if not s.model.general_paths:
        return layout.content_version({"embedded": "general", "max_chars": s.model.general_max_chars})
    return files_fingerprint(list(s.model.general_paths)) + ("" if not has_remote(s.model.general_paths) else f"+{REMOTE_SOURCE}")


def read_subdomain_documents(
    cfg: DomainSettings, sub: SubdomainSettings, store: CheckpointStore, seed: int
) -> tuple[list[str], str]:
    """The documents of one sub-domain (capped at its own ``max_chars``, else its domain's) and their source."""
    name = leaf_name(cfg.name, sub.name)
    max_chars = sub.max_chars or cfg.max_chars
    if not sub.paths:
        if name not in EMBEDDED_SUBDOMAINS:
            from mergemix_dagster.core.errors import ConfigError

            raise ConfigError(f"sub-domain {name!r} has no `paths` and no embedded default exists for it "
                              f"(embedded sub-domains: {sorted(EMBEDDED_SUBDOMAINS)})")
        docs = build_subdomain_documents(name, max_chars=max_chars, seed=seed)
        return _cap_chars(validate_documents(name, docs), max_chars), f"embedded:{name}"
    local_paths = [store.fetch_external(path) for path in sub.paths]
    docs = read_documents(local_paths, text_field=cfg.text_field, max_chars=max_chars)
    return _cap_chars(validate_documents(name, docs, source=", ".join(sub.paths)), max_chars), ", ".join(sub.paths)


def read_split_domain_documents(cfg: DomainSettings, store: CheckpointStore, seed: int) -> tuple[list[str], str]:
    """A split domain used whole: its sub-domains' documents at their natural proportions (or their ``weight``s),
    within ``max_chars`` (each sub-domain cut to its share, so no sub-domain is dropped by the cap)."""
    parts = [read_subdomain_documents(cfg, sub, store, seed) for sub in cfg.subdomains]
    sizes = [sum(len(d) for d in docs) for docs, _ in parts]
    weights = [sub.weight for sub in cfg.subdomains]
    caps = (weighted_caps(sizes, weights, cfg.max_chars) if all(w is not None for w in weights)
            else proportional_caps(sizes, cfg.max_chars))
    docs = [d for (part, _), cap in zip(parts, caps) for d in _cap_chars(part, cap)]
    return docs, "; ".join(f"{sub.name}: {source}" for sub, (_, source) in zip(cfg.subdomains, parts))


def read_domain_documents(cfg: DomainSettings, store: CheckpointStore, seed: int) -> tuple[list[str], str]:
    """The documents of one domain and a description of where they came from."""
    if cfg.subdomains:
        return read_split_domain_documents(cfg, store, seed)
    if not cfg.paths:
        if cfg.name not in EMBEDDED_DOMAINS:
            from mergemix_dagster.core.errors import ConfigError

            raise ConfigError(
                f"domain {cfg.name!r} has no `paths` and no embedded default exists for it "
                f"(embedded domains: {list(EMBEDDED_DOMAINS)})"
            )
        return build_domain_documents(cfg.name, max_chars=cfg.max_chars, seed=seed), f"embedded:{cfg.name}"
    local_paths = [store.fetch_external(path) for path in cfg.paths]
    return read_documents(local_paths, text_field=cfg.text_field, max_chars=cfg.max_chars), ", ".join(cfg.paths)


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
        uri = store_corpus(store, docs, layout.corpus_key(cfg.name, fingerprint))
        store.put_json(
            layout.corpus_pointer(cfg.name),
            {"key": layout.corpus_key(cfg.name, fingerprint), "fingerprint": fingerprint, "source": source},
            overwrite=True,
        )
        context.log.info(f"{cfg.name}: {len(docs)} documents from {source}")
        return dg.MaterializeResult(
            metadata=corpus_metadata(docs, fingerprint, uri, source)
            | {"source_fingerprint": dg.MetadataValue.text(source_fp)},
            data_version=dg.DataVersion(fingerprint[:16]),
        )

    @dg.asset(group_name="corpora", code_version=CORPUS_CODE_VERSION, kinds={"python"})
    def general_corpus(settings: PipelineSettings, store: CheckpointStore) -> dg.MaterializeResult:
        """General text for the tokenizer and the embedded base's pre-training (and DeMix-style mixing)."""
        s = settings.get()
        if s.model.general_paths:  # the team's own general data
            local_paths = [store.fetch_external(path) for path in s.model.general_paths]
            source = ", ".join(s.model.general_paths)
            docs = read_documents(local_paths, max_chars=s.model.general_max_chars)
        else:
            source = "embedded"
            docs = build_general_documents(s.model.general_max_chars, seed=s.search.seed)
        docs = validate_documents("general", docs, source=source)
        fingerprint = corpus_fingerprint(docs)
        uri = store_corpus(store, docs, layout.corpus_key("general", fingerprint))
        store.put_json(
            layout.corpus_pointer("general"),
            {"key": layout.corpus_key("general", fingerprint), "fingerprint": fingerprint, "source": source},
            overwrite=True,
        )
        return dg.MaterializeResult(
            metadata=corpus_metadata(docs, fingerprint, uri, source if s.model.general_paths else "embedded:general")
            | {"source_fingerprint": dg.MetadataValue.text(general_source_fingerprint(s))},
            data_version=dg.DataVersion(fingerprint[:16]),
        )

    return [domain_corpus, general_corpus]
