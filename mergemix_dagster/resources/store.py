"""The checkpoint store: a local directory or an S3 prefix holding checkpoints, corpora and JSON pointers.

Keys are ``/``-separated paths relative to ``root``. A *directory* object (a checkpoint, a surrogate
bundle) is complete only once its ``_COMPLETE`` marker exists: the marker is written last, so an
interrupted upload is never mistaken for a finished one. Local directories are staged in a hidden
temporary sibling and renamed into place; S3 uploads write every file, then the marker.

S3 goes through ``dagster_aws.s3.S3Resource(endpoint_url=..., region_name=...).get_client()``;
credentials come from the usual AWS environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, instance roles, ...). ``AWS_ENDPOINT_URL`` is honoured by boto3 when
``endpoint_url`` is not set (MinIO, moto, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import dagster as dg

from mergemix_dagster.core.errors import StoreError

COMPLETE_MARKER = "_COMPLETE"
_STAGING_PREFIX = ".staging-"
_TRASH_PREFIX = ".trash-"
_FILE_SUFFIXES = {".jsonl", ".json", ".gz", ".parquet", ".txt", ".csv", ".zst", ".bz2", ".xz", ".safetensors", ".bin"}


_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
_CLIENTS: dict = {}  # boto3 clients are thread-safe and costly to build; one per settings + environment


def _split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StoreError(f"S3 URI without a bucket: {uri!r}")
    return bucket, prefix.strip("/")


def _clean_key(key: str) -> str:
    key = str(key).strip("/")
    parts = PurePosixPath(key).parts
    if not key or any(p in ("..", ".") for p in parts) or "\\" in key:
        raise StoreError(f"invalid store key {key!r}: use a relative '/'-separated path without '..'")
    return "/".join(parts)


def _marker_payload(local_dir: Path | None = None) -> str:
    """The ``_COMPLETE`` marker: a token, the time, and the files' signatures (size + sampled bytes), so a
    reader can tell a truncated or replaced file from the one written (``CheckpointStore.verify_dir``)."""
    payload: dict = {"token": uuid.uuid4().hex, "completed_at": datetime.now(timezone.utc).isoformat()}
    if local_dir is not None:
        from mergemix_dagster.core.training.model import file_manifest

        payload["files"] = {k: v for k, v in file_manifest(local_dir).items() if k != COMPLETE_MARKER}
    return json.dumps(payload)


def _default_cache_root() -> Path:
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

    def _local_root(self) -> Path:
        return Path(self.root).expanduser().absolute()

    def _s3_key(self, key: str) -> tuple[str, str]:
        bucket, prefix = _split_s3(self.root)
        key = _clean_key(key)
        return bucket, f"{prefix}/{key}" if prefix else key

    def _client(self):
        """An S3 client from ``dagster_aws.s3.S3Resource`` (cached per settings and AWS environment)."""
        env = tuple(os.environ.get(v) for v in _AWS_ENV)
        cache_key = (self.endpoint_url, self.region_name, env)
        client = _CLIENTS.get(cache_key)
        if client is None:
            from dagster_aws.s3 import S3Resource

            client = S3Resource(endpoint_url=self.endpoint_url, region_name=self.region_name).get_client()
            _CLIENTS[cache_key] = client
        return client

    def _cache_root(self, cache_dir: Path | None = None) -> Path:
        root = Path(cache_dir) if cache_dir is not None else (
            Path(self.cache_dir) if self.cache_dir else _default_cache_root()
        )
        root.mkdir(parents=True, exist_ok=True)
        return root

    def uri(self, key: str) -> str:
        """Where ``key`` lives: an absolute local path or an ``s3://`` URI."""
        if self.is_s3:
            bucket, k = self._s3_key(key)
            return f"s3://{bucket}/{k}"
        return str(self._local_root() / _clean_key(key))

    def local_path(self, key: str) -> Path:
        """The local path of ``key`` (for writing in place); only for local roots, ``StoreError`` for S3.

        Nothing is checked or created: a directory written here is complete for ``exists``/``get_dir``
        only once its ``_COMPLETE`` marker is written (prefer ``put_dir``, which stages and renames).
        """
        if self.is_s3:
            raise StoreError(f"{self.uri(key)} is in S3: there is no local path to write in place")
        return self._local_root() / _clean_key(key)

    # ------------------------------------------------------------ S3 helpers
    def _s3_head(self, client, bucket: str, key: str) -> dict | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StoreError(f"cannot read s3://{bucket}/{key}: {e}") from e
        except BotoCoreError as e:  # no credentials, endpoint down, ...
            raise StoreError(f"cannot reach s3://{bucket}/{key}: {type(e).__name__}: {e}") from e

    def _s3_list(self, client, bucket: str, prefix: str) -> list[dict]:
        from botocore.exceptions import BotoCoreError, ClientError

        out: list[dict] = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                out.extend(page.get("Contents", []))
        except (ClientError, BotoCoreError) as e:
            raise StoreError(f"cannot list s3://{bucket}/{prefix}: {type(e).__name__}: {e}") from e
        return out

    @staticmethod
    def _sync_object(client, bucket: str, key: str, dest: Path, etag: str | None, meta_root: Path | None) -> Path:
        """Download ``key`` to ``dest`` unless the copy there has the same ETag (recorded at download time).

        ETags live in ``<cache>/.etags/`` (one small file per downloaded path), not next to the data, so
        a downloaded checkpoint directory contains exactly the stored files.
        """
        if etag is None:
            etag = client.head_object(Bucket=bucket, Key=key)["ETag"]
        meta = None
        if meta_root is not None:
            meta = meta_root / ".etags" / hashlib.sha1(str(dest.absolute()).encode()).hexdigest()
            if dest.is_file() and meta.is_file() and meta.read_text() == etag:
                return dest
            meta.parent.mkdir(parents=True, exist_ok=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            client.download_file(bucket, key, str(tmp))
            os.replace(tmp, dest)
            if meta is not None:
                meta.write_text(etag)
        finally:
            if tmp.exists():
                tmp.unlink()
        return dest

    # --------------------------------------------------------------- exists
    def exists(self, key: str) -> bool:
        """A file/JSON object exists, or a directory object is complete (its ``_COMPLETE`` marker exists)."""
        key = _clean_key(key)
        if not self.is_s3:
            p = self._local_root() / key
            if p.is_dir():
                return (p / COMPLETE_MARKER).is_file()
            return p.is_file()
        client = self._client()
        bucket, k = self._s3_key(key)
        if self._s3_head(client, bucket, k) is not None:
            return True
        return self._s3_head(client, bucket, f"{k}/{COMPLETE_MARKER}") is not None

    def _refuse(self, key: str, overwrite: bool) -> None:
        if not overwrite and self.exists(key):
            raise StoreError(f"{self.uri(key)} already exists; refusing to overwrite (pass overwrite=True)")

    # ----------------------------------------------------------- directories
    def put_dir(self, local_dir: Path, key: str, overwrite: bool = False) -> str:
        """Upload a directory; ``_COMPLETE`` is written last. Returns the URI."""
        local_dir = Path(local_dir)
        key = _clean_key(key)
        if not local_dir.is_dir():
            raise StoreError(f"cannot store {local_dir}: not a directory")
        self._refuse(key, overwrite)
        files = sorted(p for p in local_dir.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER)
        if not self.is_s3:
            dest = self._local_root() / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = dest.parent / f"{_STAGING_PREFIX}{dest.name}-{uuid.uuid4().hex[:8]}"
            try:
                shutil.copytree(local_dir, staging, ignore=shutil.ignore_patterns(COMPLETE_MARKER))
                (staging / COMPLETE_MARKER).write_text(_marker_payload(local_dir))
                trash = None
                if dest.exists() or dest.is_symlink():
                    trash = dest.parent / f"{_TRASH_PREFIX}{dest.name}-{uuid.uuid4().hex[:8]}"
                    os.replace(dest, trash)
                os.replace(staging, dest)
                if trash is not None:
                    shutil.rmtree(trash, ignore_errors=True) if trash.is_dir() else trash.unlink()
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            return str(dest)
        client = self._client()
        bucket, prefix = self._s3_key(key)
        marker = f"{prefix}/{COMPLETE_MARKER}"
        try:
            # Invalidate first: while we replace, readers must not take the old+new mix as complete.
            client.delete_object(Bucket=bucket, Key=marker)
            uploaded = set()
            for f in files:
                rel = f.relative_to(local_dir).as_posix()
                client.upload_file(str(f), bucket, f"{prefix}/{rel}")
                uploaded.add(f"{prefix}/{rel}")
            for obj in self._s3_list(client, bucket, prefix + "/"):
                if obj["Key"] not in uploaded and obj["Key"] != marker:
                    client.delete_object(Bucket=bucket, Key=obj["Key"])
            client.put_object(Bucket=bucket, Key=marker, Body=_marker_payload(local_dir).encode())
        except StoreError:
            raise
        except Exception as e:  # botocore / S3 transfer errors
            raise StoreError(f"upload of {local_dir} to s3://{bucket}/{prefix} failed: {e}") from e
        return f"s3://{bucket}/{prefix}"

    def get_dir(self, key: str, cache_dir: Path | None = None) -> Path:
        """A local directory with the contents of the complete directory object ``key``."""
        key = _clean_key(key)
        if not self.is_s3:
            p = self._local_root() / key
            if not (p / COMPLETE_MARKER).is_file():
                what = "incomplete (no _COMPLETE marker)" if p.is_dir() else "missing"
                raise StoreError(f"directory {self.uri(key)} is {what}")
            return p
        client = self._client()
        bucket, prefix = self._s3_key(key)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            remote_marker = client.get_object(Bucket=bucket, Key=f"{prefix}/{COMPLETE_MARKER}")["Body"].read()
        except (ClientError, BotoCoreError) as e:
            raise StoreError(f"directory s3://{bucket}/{prefix} is missing or incomplete (no _COMPLETE)") from e
        dest = self._cache_root(cache_dir) / "store" / bucket / prefix
        local_marker = dest / COMPLETE_MARKER
        if local_marker.is_file() and local_marker.read_bytes() == remote_marker:
            return dest
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f"{_STAGING_PREFIX}{dest.name}-{uuid.uuid4().hex[:8]}"
        try:
            for obj in self._s3_list(client, bucket, prefix + "/"):
                rel = obj["Key"][len(prefix) + 1 :]
                if not rel or rel == COMPLETE_MARKER or rel.endswith("/"):
                    continue
                self._sync_object(client, bucket, obj["Key"], staging / rel, obj.get("ETag"), None)
            staging.mkdir(parents=True, exist_ok=True)
            (staging / COMPLETE_MARKER).write_bytes(remote_marker)
            if dest.exists():  # another process finished first
                shutil.rmtree(staging, ignore_errors=True)
            else:
                os.replace(staging, dest)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return dest

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
        key = _clean_key(key)
        if self.is_s3:
            bucket, prefix = self._s3_key(key)
            self._client().delete_object(Bucket=bucket, Key=f"{prefix}/{COMPLETE_MARKER}")
            return f"s3://{bucket}/{prefix}"
        src = self._local_root() / key
        dest = src.with_name(f"{src.name}.corrupt-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}")
        os.replace(src, dest)
        return str(dest)

    # ---------------------------------------------------------------- files
    def put_file(self, local_path: Path, key: str, overwrite: bool = False) -> str:
        local_path = Path(local_path)
        key = _clean_key(key)
        if not local_path.is_file():
            raise StoreError(f"cannot store {local_path}: not a file")
        self._refuse(key, overwrite)
        if not self.is_s3:
            dest = self._local_root() / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
            try:
                shutil.copyfile(local_path, tmp)
                os.replace(tmp, dest)
            finally:
                if tmp.exists():
                    tmp.unlink()
            return str(dest)
        client = self._client()
        bucket, k = self._s3_key(key)
        try:
            client.upload_file(str(local_path), bucket, k)
        except Exception as e:
            raise StoreError(f"upload of {local_path} to s3://{bucket}/{k} failed: {e}") from e
        return f"s3://{bucket}/{k}"

    def get_file(self, key: str, cache_dir: Path | None = None) -> Path:
        key = _clean_key(key)
        if not self.is_s3:
            p = self._local_root() / key
            if not p.is_file():
                raise StoreError(f"file {self.uri(key)} is missing")
            return p
        client = self._client()
        bucket, k = self._s3_key(key)
        head = self._s3_head(client, bucket, k)
        if head is None:
            raise StoreError(f"file s3://{bucket}/{k} is missing")
        cache = self._cache_root(cache_dir)
        return self._sync_object(client, bucket, k, cache / "store" / bucket / k, head["ETag"], cache)

    def put_json(self, key: str, obj: Any, overwrite: bool = False) -> str:
        key = _clean_key(key)
        blob = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        self._refuse(key, overwrite)
        if not self.is_s3:
            dest = self._local_root() / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
            tmp.write_bytes(blob)
            os.replace(tmp, dest)
            return str(dest)
        client = self._client()
        bucket, k = self._s3_key(key)
        try:
            client.put_object(Bucket=bucket, Key=k, Body=blob, ContentType="application/json")
        except Exception as e:
            raise StoreError(f"write of s3://{bucket}/{k} failed: {e}") from e
        return f"s3://{bucket}/{k}"

    def get_json(self, key: str) -> Any:
        key = _clean_key(key)
        if not self.is_s3:
            p = self._local_root() / key
            if not p.is_file():
                raise StoreError(f"JSON object {self.uri(key)} is missing")
            blob = p.read_bytes()
        else:
            from botocore.exceptions import BotoCoreError, ClientError

            client = self._client()
            bucket, k = self._s3_key(key)
            try:
                blob = client.get_object(Bucket=bucket, Key=k)["Body"].read()
            except (ClientError, BotoCoreError) as e:
                raise StoreError(f"JSON object s3://{bucket}/{k} is missing or unreadable: {e}") from e
        try:
            return json.loads(blob)
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.uri(key)} is not valid JSON: {e}") from e

    def list_keys(self, prefix: str) -> list[str]:
        """Sorted keys (relative to ``root``) of every stored file whose key starts with ``prefix``.

        Directory objects show up as their files, ``_COMPLETE`` markers included; staging copies do not.
        """
        prefix = str(prefix).lstrip("/")
        if not self.is_s3:
            root = self._local_root()
            start = root / prefix if (root / prefix).is_dir() else (root / prefix).parent
            if not start.is_dir():
                return []
            keys = []
            for p in start.rglob("*"):
                if not p.is_file():
                    continue
                rel = p.relative_to(root).as_posix()
                parts = rel.split("/")
                if any(x.startswith((_STAGING_PREFIX, _TRASH_PREFIX)) for x in parts) or parts[-1].endswith(".part"):
                    continue
                if rel.startswith(prefix):
                    keys.append(rel)
            return sorted(keys)
        client = self._client()
        bucket, base = _split_s3(self.root)
        full = f"{base}/{prefix}" if base else prefix
        cut = len(base) + 1 if base else 0
        return sorted(o["Key"][cut:] for o in self._s3_list(client, bucket, full))

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
        if s.startswith("s3://"):
            bucket, key = _split_s3(s)
            client = self._client()
            cache = self._cache_root()
            dest_root = cache / "external" / bucket
            if key:
                head = self._s3_head(client, bucket, key)
                if head is not None:
                    return self._sync_object(client, bucket, key, dest_root / key, head["ETag"], cache)
            prefix = f"{key}/" if key else ""
            objects = self._s3_list(client, bucket, prefix)
            if not objects:
                raise StoreError(f"nothing at {s}: no such object and no objects under that prefix")
            dest = dest_root / key if key else dest_root
            for obj in objects:
                rel = obj["Key"][len(prefix) :]
                if not rel or rel.endswith("/"):
                    continue
                self._sync_object(client, bucket, obj["Key"], dest / rel, obj.get("ETag"), cache)
            return dest
        if s.startswith("file://"):
            return Path(s[len("file://") :])
        if "://" in s:
            return s  # hf://, gs://, ...: not ours to resolve
        p = Path(s).expanduser()
        if p.exists() or s.startswith(("/", "./", "../", "~", ".\\")) or (len(s) > 1 and s[1] == ":"):
            return p
        if PurePosixPath(s).suffix.lower() in _FILE_SUFFIXES:
            return p  # a data file that is not there (yet): a path, the caller reports it missing
        return s  # e.g. a Hugging Face hub id "org/model"
