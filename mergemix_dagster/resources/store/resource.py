"""``CheckpointStore``: the Dagster resource. Every public method is written once; the key rules, the refusal to
overwrite, JSON, markers and manifests live here, and only what a filesystem and S3 do differently (how a write
becomes visible, where a read lands) is delegated to ``LocalBackend`` or ``S3Backend``, chosen in ``_backend``."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import dagster as dg

from mergemix_dagster.core.errors import StoreError
from mergemix_dagster.resources.store.common import (
    COMPLETE_MARKER,
    FILE_SUFFIXES,
    cache_root,
    clean_key,
    split_s3,
)
from mergemix_dagster.resources.store.local import LocalBackend
from mergemix_dagster.resources.store.s3 import S3Backend, s3_client
from mergemix_dagster.resources.store.s3 import fetch_external as fetch_s3_external


class CheckpointStore(dg.ConfigurableResource):
    """Where artifacts live: ``root`` is a local directory or ``s3://bucket/prefix``.

    ``endpoint_url`` / ``region_name``: S3 client settings (also used by ``fetch_external`` for a user's
    own ``s3://`` locations). ``cache_dir``: where S3 objects are downloaded (default
    ``$MERGEMIX_CACHE``, else ``~/.cache/mergemix``, else the temp directory).
    """

    root: str = ".mergemix/store"
    endpoint_url: str | None = None
    region_name: str | None = None
    cache_dir: str | None = None

    # ------------------------------------------------------------- basics
    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def _backend(self) -> LocalBackend | S3Backend:
        """The one place where local and S3 part ways."""
        if self.is_s3:
            bucket, prefix = split_s3(self.root)
            return S3Backend(bucket, prefix, self._client, self.cache_dir)
        return LocalBackend(Path(self.root).expanduser().absolute())

    def _client(self) -> Any:
        return s3_client(self.endpoint_url, self.region_name)

    def uri(self, key: str) -> str:
        """Where ``key`` lives: an absolute local path or an ``s3://`` URI (recorded in metadata: keep stable)."""
        key = clean_key(key)
        return self._backend().uri(key)

    def local_path(self, key: str) -> Path:
        """The local path of ``key`` (for writing in place); only for local roots, ``StoreError`` for S3.

        Nothing is checked or created: a directory written here is complete for ``exists``/``get_dir``
        only once its ``_COMPLETE`` marker is written (prefer ``put_dir``, which stages and renames).
        """
        key = clean_key(key)
        return self._backend().local_path(key)

    # --------------------------------------------------------------- exists
    def exists(self, key: str) -> bool:
        """A file/JSON object exists, or a directory object is complete (its ``_COMPLETE`` marker exists)."""
        key = clean_key(key)
        backend = self._backend()
        return backend.is_file(key) or backend.is_file(f"{key}/{COMPLETE_MARKER}")

    def _refuse(self, key: str, overwrite: bool) -> None:
        if not overwrite and self.exists(key):
            raise StoreError(f"{self.uri(key)} already exists; refusing to overwrite (pass overwrite=True)")

    # ----------------------------------------------------------- directories
    def put_dir(self, local_dir: Path, key: str, overwrite: bool = False) -> str:
        """Upload a directory; ``_COMPLETE`` is written last. Returns the URI."""
        local_dir = Path(local_dir)
        key = clean_key(key)
        if not local_dir.is_dir():
            raise StoreError(f"cannot store {local_dir}: not a directory")
        self._refuse(key, overwrite)
        return self._backend().put_dir(local_dir, key)

    def get_dir(self, key: str, cache_dir: Path | None = None) -> Path:
        """A local directory with the contents of the complete directory object ``key``."""
        key = clean_key(key)
        return self._backend().get_dir(key, cache_dir)

    def verify_dir(self, key: str, what: str, full_fingerprint: str | None = None) -> Path:
        """``get_dir`` and check the files against the signatures recorded in the ``_COMPLETE`` marker.

        Raises ``CheckpointChangedError`` for a replaced or edited file, ``TruncatedCheckpointError`` for a cut
        safetensors file; ``full_fingerprint`` adds the full content hash (reads every byte).
        """
        from mergemix_dagster.core.training.model import verify_checkpoint

        local = self.get_dir(key)
        try:
            manifest = json.loads((local / COMPLETE_MARKER).read_text()).get("files")
        except (OSError, ValueError):
            manifest = None  # a marker written before manifests existed: only the structural checks apply
        verify_checkpoint(local, what, manifest=manifest, fingerprint=full_fingerprint)
        return local

    def quarantine(self, key: str) -> str:
        """Take a damaged directory object out of use (``exists`` becomes False, so its producer reruns) without
        deleting it: locally it is renamed to ``<name>.corrupt-<time>``; in S3 its ``_COMPLETE`` marker is
        removed. Returns where it went."""
        key = clean_key(key)
        return self._backend().quarantine(key)

    # ---------------------------------------------------------------- files
    def put_file(self, local_path: Path, key: str, overwrite: bool = False) -> str:
        local_path = Path(local_path)
        key = clean_key(key)
        if not local_path.is_file():
            raise StoreError(f"cannot store {local_path}: not a file")
        self._refuse(key, overwrite)
        return self._backend().put_file(local_path, key)

    def get_file(self, key: str, cache_dir: Path | None = None) -> Path:
        key = clean_key(key)
        return self._backend().get_file(key, cache_dir)

    def put_json(self, key: str, obj: Any, overwrite: bool = False) -> str:
        key = clean_key(key)
        blob = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        self._refuse(key, overwrite)
        return self._backend().write_bytes(key, blob, "application/json")

    def get_json(self, key: str) -> Any:
        key = clean_key(key)
        blob = self._backend().read_bytes(key, "JSON object")
        try:
            return json.loads(blob)
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.uri(key)} is not valid JSON: {e}") from e

    def list_keys(self, prefix: str) -> list[str]:
        """Sorted keys (relative to ``root``) of every stored file whose key starts with ``prefix``.

        Directory objects show up as their files, ``_COMPLETE`` markers included; staging copies do not.
        """
        prefix = str(prefix).lstrip("/")
        return self._backend().list_keys(prefix)

    # ------------------------------------------------------------- outside
    def fetch_external(self, path_or_uri: str) -> Path | str:
        """A user's own location, made local.

        - a local path → ``Path`` (unchanged; not checked — callers decide what a missing path means);
        - ``s3://bucket/key`` → the object downloaded to the cache (``Path`` of the file);
          ``s3://bucket/prefix`` → every object under ``prefix/`` downloaded (``Path`` of the directory);
          unchanged objects (same ETag) are not downloaded again;
        - anything else (a Hugging Face hub id like ``org/model``, ``hf://...``) → returned unchanged.
        """
        s = str(path_or_uri)
        if s.startswith("s3://"):  # the user's URI, whatever this store's root is
            return fetch_s3_external(s, self._client, lambda: cache_root(None, self.cache_dir))
        if s.startswith("file://"):
            return Path(s[len("file://") :])
        if "://" in s:
            return s  # hf://, gs://, ...: not ours to resolve
        p = Path(s).expanduser()
        if p.exists() or s.startswith(("/", "./", "../", "~", ".\\")) or (len(s) > 1 and s[1] == ":"):
            return p
        if PurePosixPath(s).suffix.lower() in FILE_SUFFIXES:
            return p  # a data file that is not there (yet): a path, the caller reports it missing
        return s  # e.g. a Hugging Face hub id "org/model"
