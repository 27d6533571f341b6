"""The store in S3 (boto3 through ``dagster_aws``), and downloads of a user's own ``s3://`` locations.

S3 has no rename, so nothing here is staged and swapped in: a directory object is made complete by writing its
``_COMPLETE`` marker last (and invalidated by deleting that marker first). Reads download into a local cache and
skip objects whose ETag has not changed. Errors of boto3 (no credentials, endpoint down, access denied) become
``StoreError``\\s that name the URI.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from mergemix_dagster.core.errors import StoreError
from mergemix_dagster.resources.store.common import (
    COMPLETE_MARKER,
    STAGING_PREFIX,
    cache_root,
    marker_payload,
    part_path,
    split_s3,
)

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


def s3_client(endpoint_url: str | None, region_name: str | None) -> Any:
    """An S3 client from ``dagster_aws.s3.S3Resource`` (cached per settings and AWS environment)."""
    env = tuple(os.environ.get(v) for v in _AWS_ENV)
    cache_key = (endpoint_url, region_name, env)
    client = _CLIENTS.get(cache_key)
    if client is None:
        from dagster_aws.s3 import S3Resource

        client = S3Resource(endpoint_url=endpoint_url, region_name=region_name).get_client()
        _CLIENTS[cache_key] = client
    return client


def head(client, bucket: str, key: str) -> dict | None:
    """The object's metadata, or None if there is no such object."""
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


def list_objects(client, bucket: str, prefix: str) -> list[dict]:
    from botocore.exceptions import BotoCoreError, ClientError

    out: list[dict] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend(page.get("Contents", []))
    except (ClientError, BotoCoreError) as e:
        raise StoreError(f"cannot list s3://{bucket}/{prefix}: {type(e).__name__}: {e}") from e
    return out


def sync_object(client, bucket: str, key: str, dest: Path, etag: str | None, meta_root: Path | None) -> Path:
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
    tmp = part_path(dest)
    try:
        client.download_file(bucket, key, str(tmp))
        os.replace(tmp, dest)
        if meta is not None:
            meta.write_text(etag)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def fetch_external(uri: str, make_client: Callable[[], Any], make_cache: Callable[[], Path]) -> Path:
    """``s3://bucket/key`` → the object in ``<cache>/external/``; ``s3://bucket/prefix`` → every object under it.

    The client and the cache are made only once ``uri`` has been parsed (a URI without a bucket costs nothing).
    """
    bucket, key = split_s3(uri)
    client, cache = make_client(), make_cache()
    dest_root = cache / "external" / bucket
    if key:
        found = head(client, bucket, key)
        if found is not None:
            return sync_object(client, bucket, key, dest_root / key, found["ETag"], cache)
    prefix = f"{key}/" if key else ""
    objects = list_objects(client, bucket, prefix)
    if not objects:
        raise StoreError(f"nothing at {uri}: no such object and no objects under that prefix")
    dest = dest_root / key if key else dest_root
    for obj in objects:
        rel = obj["Key"][len(prefix) :]
        if not rel or rel.endswith("/"):
            continue
        sync_object(client, bucket, obj["Key"], dest / rel, obj.get("ETag"), cache)
    return dest


class S3Backend:
    """Keys (already cleaned) under ``s3://bucket/prefix``; the client is built on first use, so ``uri`` and
    ``local_path`` work without AWS settings."""

    def __init__(self, bucket: str, prefix: str, client: Callable[[], Any], cache_dir: str | None):
        self.bucket, self.prefix = bucket, prefix
        self._make_client = client
        self.cache_dir = cache_dir

    @property
    def client(self) -> Any:
        return self._make_client()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def local_path(self, key: str) -> Path:
        raise StoreError(f"{self.uri(key)} is in S3: there is no local path to write in place")

    def is_file(self, key: str) -> bool:
        return head(self.client, self.bucket, self._key(key)) is not None

    def read_bytes(self, key: str, what: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        client, k = self.client, self._key(key)
        try:
            return client.get_object(Bucket=self.bucket, Key=k)["Body"].read()
        except (ClientError, BotoCoreError) as e:
            raise StoreError(f"{what} s3://{self.bucket}/{k} is missing or unreadable: {e}") from e

    def write_bytes(self, key: str, blob: bytes, content_type: str) -> str:
        """One PUT: S3 makes a single object visible whole, so no staging is needed."""
        client, k = self.client, self._key(key)
        try:
            client.put_object(Bucket=self.bucket, Key=k, Body=blob, ContentType=content_type)
        except Exception as e:
            raise StoreError(f"write of s3://{self.bucket}/{k} failed: {e}") from e
        return f"s3://{self.bucket}/{k}"

    def put_file(self, local_path: Path, key: str) -> str:
        client, k = self.client, self._key(key)
        try:
            client.upload_file(str(local_path), self.bucket, k)
        except Exception as e:
            raise StoreError(f"upload of {local_path} to s3://{self.bucket}/{k} failed: {e}") from e
        return f"s3://{self.bucket}/{k}"

    def get_file(self, key: str, cache_dir: Path | None) -> Path:
        client, k = self.client, self._key(key)
        found = head(client, self.bucket, k)
        if found is None:
            raise StoreError(f"file s3://{self.bucket}/{k} is missing")
        cache = cache_root(cache_dir, self.cache_dir)
        return sync_object(client, self.bucket, k, cache / "store" / self.bucket / k, found["ETag"], cache)

    def put_dir(self, local_dir: Path, key: str) -> str:
        """No rename in S3: delete the marker, upload every file, delete objects the new copy lacks, write the
        marker last. Readers never take the old+new mix for complete."""
        client, prefix, bucket = self.client, self._key(key), self.bucket
        files = sorted(p for p in local_dir.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER)
        marker = f"{prefix}/{COMPLETE_MARKER}"
        try:
            client.delete_object(Bucket=bucket, Key=marker)
            uploaded = set()
            for f in files:
                rel = f.relative_to(local_dir).as_posix()
                client.upload_file(str(f), bucket, f"{prefix}/{rel}")
                uploaded.add(f"{prefix}/{rel}")
            for obj in list_objects(client, bucket, prefix + "/"):
                if obj["Key"] not in uploaded and obj["Key"] != marker:
                    client.delete_object(Bucket=bucket, Key=obj["Key"])
            client.put_object(Bucket=bucket, Key=marker, Body=marker_payload(local_dir).encode())
        except StoreError:
            raise
        except Exception as e:  # botocore / S3 transfer errors
            raise StoreError(f"upload of {local_dir} to s3://{bucket}/{prefix} failed: {e}") from e
        return f"s3://{bucket}/{prefix}"

    def get_dir(self, key: str, cache_dir: Path | None) -> Path:
        """A downloaded copy in the cache, reused while its marker matches the stored one (a new upload writes a
        new marker token); downloaded into a staging sibling and renamed, so a cut download is never reused."""
        from botocore.exceptions import BotoCoreError, ClientError

        client, prefix, bucket = self.client, self._key(key), self.bucket
        try:
            remote_marker = client.get_object(Bucket=bucket, Key=f"{prefix}/{COMPLETE_MARKER}")["Body"].read()
        except (ClientError, BotoCoreError) as e:
            raise StoreError(f"directory s3://{bucket}/{prefix} is missing or incomplete (no _COMPLETE)") from e
        dest = cache_root(cache_dir, self.cache_dir) / "store" / bucket / prefix
        local_marker = dest / COMPLETE_MARKER
        if local_marker.is_file() and local_marker.read_bytes() == remote_marker:
            return dest
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f"{STAGING_PREFIX}{dest.name}-{uuid.uuid4().hex[:8]}"
        try:
            for obj in list_objects(client, bucket, prefix + "/"):
                rel = obj["Key"][len(prefix) + 1 :]
                if not rel or rel == COMPLETE_MARKER or rel.endswith("/"):
                    continue
                sync_object(client, bucket, obj["Key"], staging / rel, obj.get("ETag"), None)
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

    def quarantine(self, key: str) -> str:
        """No rename in S3 (a copy would double a checkpoint's storage): the ``_COMPLETE`` marker is deleted, so
        the objects stay where they are but no longer count as a complete directory."""
        prefix = self._key(key)
        self.client.delete_object(Bucket=self.bucket, Key=f"{prefix}/{COMPLETE_MARKER}")
        return f"s3://{self.bucket}/{prefix}"

    def list_keys(self, prefix: str) -> list[str]:
        """Every object under ``prefix`` (S3 writes are never staged, so there is nothing to hide)."""
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(o["Key"][cut:] for o in list_objects(self.client, self.bucket, full))
