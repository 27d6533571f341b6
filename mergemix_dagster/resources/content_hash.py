"""The content hash of a local source file, cached by (path, size, mtime, inode) so an unchanged file costs one
``stat``: what ``files_fingerprint`` (the identity of a corpus's sources) is made of.

A file edited in place with the same size and mtime (and inode) hits the cache and keeps its old hash: only
``mergemix check --full`` (``MERGEMIX_VERIFY=full``), which re-reads every source file, sees the new content;
it replaces the cache entry, so the next ``mergemix run`` re-reads that domain. Entries live in
``<cache>/content-hashes/`` (``$MERGEMIX_CACHE``, else ``~/.cache/mergemix``), one small file per key.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mergemix_dagster.resources.store.common import cache_root, part_path

CHUNK = 1 << 20


def _entry(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode()).hexdigest()[:32]
    return cache_root(None, None) / "content-hashes" / f"{key}.sha256"


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(path: str | Path, refresh: bool | None = None) -> str:
    """The cached content hash of ``path``; ``refresh`` (default: ``MERGEMIX_VERIFY=full``) reads the file again
    and replaces the entry."""
    path = Path(path)
    if refresh is None:
        refresh = os.environ.get("MERGEMIX_VERIFY", "").lower() == "full"
    entry = _entry(path)
    if not refresh and entry.is_file():
        return entry.read_text().strip()
    digest = file_sha256(path)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(entry)
    tmp.write_text(digest)
    tmp.replace(entry)
    return digest


def changed_in_place(paths: list[Path]) -> list[Path]:
    """The files whose bytes differ from their cached hash although size, mtime and inode are the same (the
    cache entries are replaced, so the next run sees the change)."""
    changed = []
    for path in paths:
        entry = _entry(Path(path))
        before = entry.read_text().strip() if entry.is_file() else None
        if content_hash(path, refresh=True) != before and before is not None:
            changed.append(Path(path))
    return changed


def changed_sources(settings) -> list[str]:
    """``mergemix check --full``: one line per local corpus file (domains, sub-domains, ``model.general_paths``)
    edited in place without its size or mtime changing; the next ``mergemix run`` re-reads its domain."""
    from mergemix_dagster.core.data.corpora import expand_paths
    from mergemix_dagster.core.errors import CorpusError

    named = [p for d in settings.domains for p in (d.paths or [q for sub in d.subdomains for q in sub.paths])]
    files: list[Path] = []
    for raw in [*named, *settings.model.general_paths]:
        if "://" in str(raw) and not str(raw).startswith("file://"):
            continue
        try:
            files += expand_paths([raw])
        except CorpusError:
            continue  # reported by the corpus checks
    return [f"{f}: its content changed although its size and mtime did not; `mergemix run` re-reads it"
            for f in changed_in_place(files)]
