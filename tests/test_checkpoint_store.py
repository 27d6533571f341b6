"""Checkpoint store: local directory and S3 (against a local moto server on 127.0.0.1, never the internet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mergemix_dagster.core.errors import StoreError
from mergemix_dagster.resources import CheckpointStore


def _make_dir(path: Path, marker: str = "v1") -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "config.json").write_text('{"marker": "%s"}' % marker)
    (path / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    return path


def _roundtrip(store: CheckpointStore, tmp_path: Path) -> None:
    src = _make_dir(tmp_path / "ckpt")
    assert not store.exists("stages/s0/base/abc")
    uri = store.put_dir(src, "stages/s0/base/abc")
    assert uri == store.uri("stages/s0/base/abc")
    assert store.exists("stages/s0/base/abc")
    got = store.get_dir("stages/s0/base/abc", cache_dir=tmp_path / "cache")
    assert (got / "config.json").read_text() == '{"marker": "v1"}'
    assert (got / "sub" / "weights.bin").read_bytes() == b"\x00\x01" * 1000

    with pytest.raises(StoreError, match="stages/s0/base/abc"):
        store.put_dir(src, "stages/s0/base/abc")
    src2 = _make_dir(tmp_path / "ckpt2", marker="v2")
    store.put_dir(src2, "stages/s0/base/abc", overwrite=True)
    got = store.get_dir("stages/s0/base/abc", cache_dir=tmp_path / "cache")
    assert (got / "config.json").read_text() == '{"marker": "v2"}'

    assert store.put_json("stages/s0/ptr.json", {"key": "x", "n": 1}) == store.uri("stages/s0/ptr.json")
    assert store.exists("stages/s0/ptr.json")
    assert store.get_json("stages/s0/ptr.json") == {"key": "x", "n": 1}
    with pytest.raises(StoreError, match="ptr.json"):
        store.put_json("stages/s0/ptr.json", {"key": "y"})
    store.put_json("stages/s0/ptr.json", {"key": "y"}, overwrite=True)
    assert store.get_json("stages/s0/ptr.json") == {"key": "y"}

    f = tmp_path / "corpus.jsonl.gz"
    f.write_bytes(b"corpus-bytes")
    store.put_file(f, "corpora/math/abc.jsonl.gz")
    assert store.get_file("corpora/math/abc.jsonl.gz", cache_dir=tmp_path / "cache").read_bytes() == b"corpus-bytes"
    with pytest.raises(StoreError, match="abc.jsonl.gz"):
        store.put_file(f, "corpora/math/abc.jsonl.gz")

    keys = store.list_keys("stages/s0/")
    assert "stages/s0/ptr.json" in keys and "stages/s0/base/abc/config.json" in keys
    assert "stages/s0/base/abc/sub/weights.bin" in keys
    assert all(k.startswith("stages/s0/") for k in keys)
    assert store.list_keys("nothing/here") == []

    for missing in ("nope.json",):
        with pytest.raises(StoreError, match="nope.json"):
            store.get_json(missing)
        with pytest.raises(StoreError, match="nope.json"):
            store.get_file(missing, cache_dir=tmp_path / "cache")
    with pytest.raises(StoreError, match="no/dir"):
        store.get_dir("no/dir", cache_dir=tmp_path / "cache")


def test_local_roundtrip(tmp_path):
    store = CheckpointStore(root=str(tmp_path / "store"))
    _roundtrip(store, tmp_path)
    assert store.uri("a/b") == str((tmp_path / "store" / "a" / "b").absolute())
    # no staging leftovers next to the stored directory
    assert sorted(p.name for p in (tmp_path / "store" / "stages" / "s0" / "base").iterdir()) == ["abc"]


def test_local_incomplete_directory_is_not_seen(tmp_path):
    store = CheckpointStore(root=str(tmp_path / "store"))
    partial = tmp_path / "store" / "stages" / "s0" / "experts" / "math" / "v1"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")  # an interrupted upload: no _COMPLETE marker
    assert not store.exists("stages/s0/experts/math/v1")
    with pytest.raises(StoreError, match="incomplete"):
        store.get_dir("stages/s0/experts/math/v1")
    # a new upload replaces the leftover without needing overwrite=True
    store.put_dir(_make_dir(tmp_path / "src"), "stages/s0/experts/math/v1")
    assert store.exists("stages/s0/experts/math/v1")
    assert (store.get_dir("stages/s0/experts/math/v1") / "sub" / "weights.bin").exists()


def test_local_path_for_in_place_writes(tmp_path):
    store = CheckpointStore(root=str(tmp_path / "store"))
    p = store.local_path("stages/s0/tmp/x.bin")
    assert p == (tmp_path / "store" / "stages" / "s0" / "tmp" / "x.bin").absolute()
    assert str(p) == store.uri("stages/s0/tmp/x.bin")
    p.parent.mkdir(parents=True)
    p.write_bytes(b"in place")
    assert store.exists("stages/s0/tmp/x.bin")
    with pytest.raises(StoreError):
        store.local_path("../outside")
    with pytest.raises(StoreError, match="s3://bucket/pre/k"):
        CheckpointStore(root="s3://bucket/pre").local_path("k")


def test_bad_keys_and_fetch_external_local(tmp_path):
    store = CheckpointStore(root=str(tmp_path / "store"))
    with pytest.raises(StoreError):
        store.put_json("../escape.json", {})
    assert store.fetch_external(str(tmp_path / "does-not-exist")) == tmp_path / "does-not-exist"
    assert store.fetch_external(str(tmp_path)) == tmp_path
    assert store.fetch_external("org/model") == "org/model"


# ---------------------------------------------------------------- S3 (moto)
@pytest.fixture
def s3_env(moto_endpoint, monkeypatch, tmp_path):
    import boto3

    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = f"mm-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    client.create_bucket(Bucket=bucket)
    return moto_endpoint, client, bucket


def test_s3_roundtrip(s3_env, tmp_path):
    endpoint, client, bucket = s3_env
    store = CheckpointStore(root=f"s3://{bucket}/prefix", endpoint_url=endpoint, region_name="us-east-1")
    assert store.uri("a/b.json") == f"s3://{bucket}/prefix/a/b.json"
    _roundtrip(store, tmp_path)
    objects = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "prefix/stages/s0/base/abc/_COMPLETE" in objects
    assert "prefix/stages/s0/base/abc/sub/weights.bin" in objects


def test_s3_incomplete_upload_not_seen(s3_env, tmp_path):
    endpoint, client, bucket = s3_env
    store = CheckpointStore(root=f"s3://{bucket}", endpoint_url=endpoint, region_name="us-east-1")
    client.put_object(Bucket=bucket, Key="stages/s0/experts/math/v1/config.json", Body=b"{}")
    assert not store.exists("stages/s0/experts/math/v1")
    with pytest.raises(StoreError, match=f"s3://{bucket}/stages/s0/experts/math/v1"):
        store.get_dir("stages/s0/experts/math/v1", cache_dir=tmp_path / "cache")
    store.put_dir(_make_dir(tmp_path / "src"), "stages/s0/experts/math/v1")
    assert store.exists("stages/s0/experts/math/v1")


def test_s3_fetch_external(s3_env, tmp_path, monkeypatch):
    endpoint, client, bucket = s3_env
    monkeypatch.setenv("MERGEMIX_CACHE", str(tmp_path / "cache"))
    client.put_object(Bucket=bucket, Key="user/ckpts/step100/config.json", Body=b'{"a": 1}')
    client.put_object(Bucket=bucket, Key="user/ckpts/step100/model.safetensors", Body=b"weights")
    client.put_object(Bucket=bucket, Key="user/ckpts/step200/config.json", Body=b'{"a": 2}')
    client.put_object(Bucket=bucket, Key="user/data/math.jsonl", Body=b'{"text": "1+1=2"}\n')
    store = CheckpointStore(root=str(tmp_path / "store"), endpoint_url=endpoint, region_name="us-east-1")

    d = store.fetch_external(f"s3://{bucket}/user/ckpts")
    assert isinstance(d, Path) and d.is_dir()
    assert (d / "step100" / "model.safetensors").read_bytes() == b"weights"
    assert (d / "step200" / "config.json").read_text() == '{"a": 2}'
    assert str(d).startswith(str(tmp_path / "cache"))

    f = store.fetch_external(f"s3://{bucket}/user/data/math.jsonl")
    assert isinstance(f, Path) and f.read_text() == '{"text": "1+1=2"}\n'

    # a changed object is downloaded again
    client.put_object(Bucket=bucket, Key="user/data/math.jsonl", Body=b'{"text": "2+2=4"}\n')
    assert store.fetch_external(f"s3://{bucket}/user/data/math.jsonl").read_text() == '{"text": "2+2=4"}\n'

    with pytest.raises(StoreError, match="missing-prefix"):
        store.fetch_external(f"s3://{bucket}/missing-prefix")


# ------------------------------------------------- what local and S3 do differently, on purpose
def _quarantine_and_lists(store: CheckpointStore, tmp_path: Path) -> str:
    import torch
    from safetensors.torch import save_file

    src = _make_dir(tmp_path / "q")
    save_file({"w": torch.ones(4)}, str(src / "model.safetensors"))
    store.put_dir(src, "stages/s0/experts/math/v1")
    assert store.verify_dir("stages/s0/experts/math/v1", "expert 'math'").is_dir()
    where = store.quarantine("stages/s0/experts/math/v1")
    assert not store.exists("stages/s0/experts/math/v1")
    store.put_json("stages/s0/bad.json", {"a": 1})
    assert store.list_keys("/stages/s0/bad") == ["stages/s0/bad.json"]
    return where


def test_local_quarantine_renames_and_writes_in_progress_are_not_keys(tmp_path):
    store = CheckpointStore(root=str(tmp_path / "store"))
    where = _quarantine_and_lists(store, tmp_path)
    assert Path(where).name.startswith("v1.corrupt-") and (Path(where) / "config.json").is_file()
    # a staging copy and a .part file of writes in progress are never keys
    (tmp_path / "store" / "stages" / "s0" / ".staging-x-1234").mkdir()
    (tmp_path / "store" / "stages" / "s0" / ".staging-x-1234" / "f").write_text("x")
    (tmp_path / "store" / "stages" / "s0" / ".y.json.abcd.part").write_text("x")
    assert all(".staging-" not in k and not k.endswith(".part") for k in store.list_keys("stages/"))
    (tmp_path / "store" / "broken.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.get_json("broken.json")


def test_s3_quarantine_removes_the_marker_and_overwrite_drops_stale_files(s3_env, tmp_path, monkeypatch):
    endpoint, client, bucket = s3_env
    monkeypatch.setenv("MERGEMIX_CACHE", str(tmp_path / "cache"))
    store = CheckpointStore(root=f"s3://{bucket}", endpoint_url=endpoint, region_name="us-east-1")
    assert store.uri("a/b") == f"s3://{bucket}/a/b"
    where = _quarantine_and_lists(store, tmp_path)
    assert where == f"s3://{bucket}/stages/s0/experts/math/v1"
    left = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="stages/s0/experts/")["Contents"]}
    assert "stages/s0/experts/math/v1/config.json" in left and "stages/s0/experts/math/v1/_COMPLETE" not in left
    # a new upload of fewer files leaves none of the old ones behind
    small = tmp_path / "small"
    small.mkdir()
    (small / "config.json").write_text("{}")
    store.put_dir(small, "stages/s0/experts/math/v1")
    assert store.list_keys("stages/s0/experts/math/v1/") == [
        "stages/s0/experts/math/v1/_COMPLETE",
        "stages/s0/experts/math/v1/config.json",
    ]
    client.put_object(Bucket=bucket, Key="broken.json", Body=b"{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.get_json("broken.json")
