"""What the local and the S3 store share: key rules, the ``_COMPLETE`` marker, and where downloads are cached."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from mergemix_dagster.core.errors import StoreError

COMPLETE_MARKER = "_COMPLETE"
#: hidden siblings a local write is staged in / an old copy is moved to; never listed as keys
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
#: suffixes that make ``fetch_external`` read a missing path as a data file, not a Hugging Face hub id
FILE_SUFFIXES = {".jsonl", ".json", ".gz", ".parquet", ".txt", ".csv", ".zst", ".bz2", ".xz", ".safetensors", ".bin"}


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` → ``("bucket", "some/prefix")``."""
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StoreError(f"S3 URI without a bucket: {uri!r}")
    return bucket, prefix.strip("/")


def clean_key(key: str) -> str:
    """A key as stored: relative, ``/``-separated, no ``..`` (a key can never leave the root)."""
    key = str(key).strip("/")
    parts = PurePosixPath(key).parts
    if not key or any(p in ("..", ".") for p in parts) or "\\" in key:
        raise StoreError(f"invalid store key {key!r}: use a relative '/'-separated path without '..'")
    return "/".join(parts)


def part_path(dest: Path) -> Path:
    """A hidden temporary sibling of ``dest`` that a download or write fills before it is renamed onto ``dest``."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")


def marker_payload(local_dir: Path | None = None) -> str:
    """The ``_COMPLETE`` marker: a token, the time, and the files' signatures (size + sampled bytes), so a
    reader can tell a truncated or replaced file from the one written (``CheckpointStore.verify_dir``)."""
    payload: dict = {"token": uuid.uuid4().hex, "completed_at": datetime.now(timezone.utc).isoformat()}
    if local_dir is not None:
        from mergemix_dagster.core.training.model import file_manifest

        payload["files"] = {k: v for k, v in file_manifest(local_dir).items() if k != COMPLETE_MARKER}
    return json.dumps(payload)


def default_cache_root() -> Path:
    """``$MERGEMIX_CACHE``, else ``~/.cache/mergemix``, else the temp directory: the first writable one."""
    env = os.environ.get("MERGEMIX_CACHE")
    candidates = [Path(env)] if env else []
    candidates += [Path.home() / ".cache" / "mergemix", Path(tempfile.gettempdir()) / "mergemix-cache"]
    for c in candidates:
        try:
            c.mkdir(parents=True, exist_ok=True)
            if os.access(c, os.W_OK):
                return c
        except OSError:
            continue
    return Path(tempfile.mkdtemp(prefix="mergemix-cache-"))


def cache_root(cache_dir: Path | None, configured: str | None) -> Path:
    """Where S3 objects are downloaded: the call's ``cache_dir``, else the store's, else the default (created)."""
    root = Path(cache_dir) if cache_dir is not None else (Path(configured) if configured else default_cache_root())
    root.mkdir(parents=True, exist_ok=True)
    return root
