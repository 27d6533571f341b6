"""The store on a local (or mounted) filesystem: every write is staged beside its destination and renamed into
place, so a reader sees the old object or the new one, never half of one (``os.replace`` is atomic on one
filesystem). Reads need no cache: the stored path is returned as it is."""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mergemix_dagster.core.errors import StoreError
from mergemix_dagster.resources.store.common import (
    COMPLETE_MARKER,
    STAGING_PREFIX,
    TRASH_PREFIX,
    marker_payload,
    part_path,
)


def _atomic_write(dest: Path, fill: Callable[[Path], None]) -> str:
    """``fill`` a hidden ``.part`` sibling of ``dest``, then rename it onto ``dest``; returns ``str(dest)``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(dest)
    try:
        fill(tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(dest)


class LocalBackend:
    """Keys (already cleaned) under the absolute directory ``root``."""

    def __init__(self, root: Path):
        self.root = root

    def uri(self, key: str) -> str:
        return str(self.root / key)

    def local_path(self, key: str) -> Path:
        return self.root / key

    def is_file(self, key: str) -> bool:
        return (self.root / key).is_file()

    def read_bytes(self, key: str, what: str) -> bytes:
        p = self.root / key
        if not p.is_file():
            raise StoreError(f"{what} {self.uri(key)} is missing")
        return p.read_bytes()

    def write_bytes(self, key: str, blob: bytes, content_type: str) -> str:
        """``content_type`` is for S3's object metadata; a file has none."""
        return _atomic_write(self.root / key, lambda tmp: tmp.write_bytes(blob))

    def put_file(self, local_path: Path, key: str) -> str:
        return _atomic_write(self.root / key, lambda tmp: shutil.copyfile(local_path, tmp))

    def get_file(self, key: str, cache_dir: Path | None) -> Path:
        p = self.root / key
        if not p.is_file():
            raise StoreError(f"file {self.uri(key)} is missing")
        return p

    def put_dir(self, local_dir: Path, key: str) -> str:
        """Copy into a hidden staging sibling, write ``_COMPLETE`` there, then swap it in with two renames (the old
        copy, complete or a leftover, goes to a trash sibling first and is deleted after)."""
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f"{STAGING_PREFIX}{dest.name}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(local_dir, staging, ignore=shutil.ignore_patterns(COMPLETE_MARKER))
            (staging / COMPLETE_MARKER).write_text(marker_payload(local_dir))
            trash = None
            if dest.exists() or dest.is_symlink():
                trash = dest.parent / f"{TRASH_PREFIX}{dest.name}-{uuid.uuid4().hex[:8]}"
                os.replace(dest, trash)
            os.replace(staging, dest)
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True) if trash.is_dir() else trash.unlink()
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return str(dest)

    def get_dir(self, key: str, cache_dir: Path | None) -> Path:
        """The stored directory itself, once its ``_COMPLETE`` marker exists."""
        p = self.root / key
        if not (p / COMPLETE_MARKER).is_file():
            what = "incomplete (no _COMPLETE marker)" if p.is_dir() else "missing"
            raise StoreError(f"directory {self.uri(key)} is {what}")
        return p

    def quarantine(self, key: str) -> str:
        """Renamed to ``<name>.corrupt-<time>``: out of every key, kept for a post-mortem."""
        src = self.root / key
        dest = src.with_name(f"{src.name}.corrupt-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}")
        os.replace(src, dest)
        return str(dest)

    def list_keys(self, prefix: str) -> list[str]:
        """Files under ``prefix``; staging/trash copies and ``.part`` files of writes in progress are not keys."""
        start = self.root / prefix if (self.root / prefix).is_dir() else (self.root / prefix).parent
        if not start.is_dir():
            return []
        keys = []
        for p in start.rglob("*"):
            if not p.is_file():
                continue
            rel = p.relative_to(self.root).as_posix()
            parts = rel.split("/")
            if any(x.startswith((STAGING_PREFIX, TRASH_PREFIX)) for x in parts) or parts[-1].endswith(".part"):
                continue
            if rel.startswith(prefix):
                keys.append(rel)
        return sorted(keys)
