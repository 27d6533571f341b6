"""An HF export of corpora kept under an S3 prefix (a cluster's data, not on this machine) loads through s3fs.

The project never reads such a domain; its export lists one optional pattern per readable suffix, and the
written snippet keeps the patterns that match and loads them with `datasets` over fsspec. Here the prefix is
on a local S3-compatible server (moto), reached the way a team's job reaches its bucket: AWS_* variables.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mergemix_dagster.core.settings import Settings
from mergemix_dagster.core.training.exports import write_exports

pytest.importorskip("s3fs", reason="s3fs is a dev extra: `datasets` reads s3:// through it")

_TAKE_BY_DOMAIN = """
import collections, json, runpy, sys
build = runpy.run_path(sys.argv[1])["build_mixture"]
seen = collections.defaultdict(set)
for row in build(seed=0).take(int(sys.argv[2])):
    seen[row["text"].split()[0]].add(row["text"])
print(json.dumps({k: sorted(v) for k, v in seen.items()}))
"""


def _docs(name: str, n: int) -> list[str]:
    return [f"{name} document {i}" for i in range(n)]


def test_an_s3_prefix_domain_loads_beside_a_local_one(moto_endpoint, tmp_path):
    import boto3

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint, "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true",
        "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
    }
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="team-corpora")
    # the remote domain: a gzipped jsonl in a sub-prefix, a plain jsonl and a parquet file (large_string, as
    # pandas writes text)
    remote = _docs("remote", 6)
    body = "".join(json.dumps({"text": d}) + "\n" for d in remote[:2]).encode()
    s3.put_object(Bucket="team-corpora", Key="mid/remote/shard-0/part.jsonl.gz", Body=gzip.compress(body))
    body = "".join(json.dumps({"text": d}) + "\n" for d in remote[2:4]).encode()
    s3.put_object(Bucket="team-corpora", Key="mid/remote/part.jsonl", Body=body)
    table = io.BytesIO()
    pq.write_table(pa.table({"text": pa.array(remote[4:], pa.large_string())}), table)
    s3.put_object(Bucket="team-corpora", Key="mid/remote/part.parquet", Body=table.getvalue())
    s3.put_object(Bucket="team-corpora", Key="mid/remote/README.md", Body=b"not a corpus")
    local = tmp_path / "local.jsonl"
    local.write_text("".join(json.dumps({"text": d}) + "\n" for d in _docs("local", 3)))

    settings = Settings(home=str(tmp_path / "home"), domains=[
        {"name": "remote", "paths": ["s3://team-corpora/mid/remote"]}, {"name": "local", "paths": [str(local)]},
    ])
    out = write_exports({"weights": {"remote": 0.5, "local": 0.5}}, None, settings, tmp_path / "out",
                        formats=["hf_python"])
    run = subprocess.run([sys.executable, "-c", _TAKE_BY_DOMAIN, str(out["hf_python"]), "200"],
                         check=False, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen == {"remote": remote, "local": _docs("local", 3)}  # every document of both, nothing else
