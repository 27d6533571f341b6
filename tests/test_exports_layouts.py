"""The HF exports load with `datasets` for every corpus layout the project reads (core/data/corpora.py):
a file, a glob, a folder of .txt / .jsonl / .jsonl.gz / .parquet / mixed files, a .json array.

The written snippet runs in a fresh interpreter with HF_DATASETS_OFFLINE=1 (local files only) and must yield
rows from every domain; the YAML's parts, loaded with `load_dataset` as listed, must read the same documents
the project reads. The Megatron blend is checked in tests/test_exports.py with megatron-core itself.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mergemix_dagster.core.data.corpora import read_documents
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.core.training.exports import hf_sources, write_exports
from mergemix_dagster.core.training.hf_layout import hf_parts

DOCS = 3


def _docs(name: str) -> list[str]:
    return [f"{name} document {i} line one\n{name} line two" for i in range(DOCS)]


def _jsonl(path: Path, docs: list[str], field: str) -> None:
    path.write_text("".join(json.dumps({field: d, "other": 1}) + "\n" for d in docs))


def _layouts(root: Path) -> dict[str, dict]:
    """One domain per layout, each document starting with its domain's name; hidden and foreign files in
    folders that the project ignores (and `load_dataset` must too)."""
    domains: dict[str, dict] = {}

    (root / "file.jsonl").parent.mkdir(parents=True, exist_ok=True)
    _jsonl(root / "file.jsonl", _docs("afile"), "problem")
    domains["afile"] = {"paths": [str(root / "file.jsonl")], "text_field": "problem"}

    (root / "globbed").mkdir()
    for i in range(2):
        _jsonl(root / "globbed" / f"part{i}.jsonl", _docs("aglob")[i:i + 2], "text")
    (root / "globbed" / "notes.md").write_text("not a corpus")
    domains["aglob"] = {"paths": [str(root / "globbed" / "*.jsonl")]}

    txt = root / "txtdir"
    (txt / "nested").mkdir(parents=True)
    (txt / ".hidden").mkdir()
    for i, d in enumerate(_docs("txtdir")):
        (txt / ("nested" if i else ".") / f"doc{i}.txt").write_text(d)
    (txt / ".hidden" / "secret.txt").write_text("hidden must not be read")
    (txt / "README").write_text("not a corpus")
    domains["txtdir"] = {"paths": [str(txt)]}

    (root / "jsonldir").mkdir()
    _jsonl(root / "jsonldir" / "a.jsonl", _docs("jsonldir"), "text")
    domains["jsonldir"] = {"paths": [str(root / "jsonldir")]}

    (root / "gzdir" / "sub").mkdir(parents=True)
    with gzip.open(root / "gzdir" / "sub" / "a.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"body": d}) + "\n" for d in _docs("gzdir")))
    domains["gzdir"] = {"paths": [str(root / "gzdir")], "text_field": "body"}

    (root / "parquetdir").mkdir()
    # large_string, as pandas' to_parquet writes text: the snippet must interleave it with the json/text parts
    pq.write_table(pa.table({"text": pa.array(_docs("parquetdir"), pa.large_string()), "n": list(range(DOCS))}),
                   root / "parquetdir" / "a.parquet")
    domains["parquetdir"] = {"paths": [str(root / "parquetdir") + "/"]}

    mixed = root / "mixeddir"
    mixed.mkdir()
    docs = _docs("mixeddir")
    (mixed / "one.txt").write_text(docs[0])
    _jsonl(mixed / "two.jsonl", docs[1:2], "content")
    pq.write_table(pa.table({"content": docs[2:]}), mixed / "three.parquet")
    domains["mixeddir"] = {"paths": [str(mixed)], "text_field": "content"}

    (root / "arr.json").write_text(json.dumps([{"text": d} for d in _docs("jsonarray")]))
    domains["jsonarray"] = {"paths": [str(root / "arr.json")]}
    return domains


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> tuple[Settings, dict[str, dict]]:
    root = tmp_path_factory.mktemp("layouts")
    domains = _layouts(root)
    settings = Settings(
        home=str(root / "home"),
        domains=[{"name": name, **spec} for name, spec in domains.items()],
    )
    return settings, domains


def _weights(domains) -> dict[str, float]:
    return {name: 1 / len(domains) for name in domains}


def test_every_layout_gets_builders_the_project_agrees_with(layouts):
    settings, domains = layouts
    by_name = {s["name"]: s["parts"] for s in hf_sources(_weights(domains), settings, None)}
    builders = {name: sorted(p["builder"] for p in parts) for name, parts in by_name.items()}
    assert builders == {
        "afile": ["json"], "aglob": ["json"], "txtdir": ["text"], "jsonldir": ["json"], "gzdir": ["json"],
        "parquetdir": ["parquet"], "mixeddir": ["json", "parquet", "text"], "jsonarray": ["json"],
    }
    txt = by_name["txtdir"][0]
    assert txt["data_files"] == [domains["txtdir"]["paths"][0] + "/**/*.txt"]
    assert txt["load_kwargs"] == {"sample_by": "document"}  # the project reads a .txt file as one document
    assert by_name["gzdir"][0]["data_files"][0].endswith("/gzdir/**/*.jsonl.gz")
    assert not any(p["optional"] for parts in by_name.values() for p in parts)


def test_yaml_parts_read_exactly_the_documents_the_project_reads(layouts, tmp_path, monkeypatch):
    """Each YAML part through `load_dataset` as written (in-process, streaming, local files)."""
    from datasets import load_dataset

    settings, domains = layouts
    out = write_exports({"weights": _weights(domains)}, None, settings, tmp_path, formats=["hf_yaml"])
    doc = yaml.safe_load(out["hf_yaml"].read_text())
    assert [d["name"] for d in doc["datasets"]] == list(domains)
    for entry in doc["datasets"]:
        read = []
        for part in entry["parts"]:
            ds = load_dataset(
                part["builder"], data_files=part["data_files"], split="train", streaming=True,
                **part.get("load_kwargs", {}),
            )
            read += [row[part["text_field"]] for row in ds]
        spec = domains[entry["name"]]
        expected = read_documents(spec["paths"], spec.get("text_field", "text"))
        assert sorted(read) == sorted(expected), entry["name"]


_RUN_SNIPPET = """
import collections, json, runpy, sys
build = runpy.run_path(sys.argv[1])["build_mixture"]
seen = collections.Counter(row["text"].split()[0] for row in build(seed=0).take(int(sys.argv[2])))
print(json.dumps(seen))
"""


def test_written_snippet_yields_rows_from_every_layout_offline(layouts, tmp_path):
    """The hf_python file itself, in a fresh interpreter, offline: every domain appears in the first rows."""
    settings, domains = layouts
    out = write_exports({"weights": _weights(domains)}, None, settings, tmp_path, formats=["hf_python"])
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run(
        [sys.executable, "-c", _RUN_SNIPPET, str(out["hf_python"]), "100"],
        check=False, env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(seen) == set(domains), seen  # no row from anything else (hidden files, READMEs)
    assert sum(seen.values()) == 100


def test_a_folder_not_on_this_machine_becomes_optional_patterns_for_every_suffix(tmp_path):
    parts = hf_parts(["s3://bucket/corpus/math", str(tmp_path / "absent")], "text")
    assert all(p["optional"] for p in parts)
    files = [f for p in parts for f in p["data_files"]]
    assert "s3://bucket/corpus/math/**/*.jsonl.gz" in files and f"{tmp_path}/absent/**/*.txt" in files
    assert hf_parts(["s3://bucket/k/a.parquet"], "text") == [
        {"builder": "parquet", "data_files": ["s3://bucket/k/a.parquet"], "text_field": "text", "load_kwargs": {},
         "optional": False}
    ]


def test_snippet_skips_empty_optional_parts_and_fails_by_name_when_nothing_matches(tmp_path):
    """An optional part that matches nothing is skipped; a name with no file at all is a FileNotFoundError
    naming it, not an empty source."""
    folder = tmp_path / "late"
    (tmp_path / "here.txt").write_text("here it is")
    domains = [{"name": "late", "paths": [str(folder)]}, {"name": "here", "paths": [str(tmp_path / "here.txt")]}]
    settings = Settings(home=str(tmp_path / "home"), domains=domains)
    weights = {"late": 0.5, "here": 0.5}
    out = write_exports({"weights": weights}, None, settings, tmp_path / "out", formats=["hf_python"])
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    cmd = [sys.executable, "-c", _RUN_SNIPPET, str(out["hf_python"]), "20"]
    folder.mkdir()
    failed = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "FileNotFoundError: late: no data file" in failed.stderr
    (folder / "x.txt").write_text("late arrival")  # the folder filled after the export: only .txt exists
    ran = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert set(json.loads(ran.stdout.strip().splitlines()[-1])) == {"late", "here"}
