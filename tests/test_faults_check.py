"""Faults of issue 19 that `mergemix check` (and so the first step of `mergemix run`) catches before any training:
bounds no mixture meets, a token budget no corpus can feed, malformed task YAML named as malformed, task YAML that
imports code, names too long for a folder, special files and symlinks that leave the corpus folder.
docs/reliability.md lists the same cases."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from mergemix_dagster.core.data.corpora import expand_paths
from mergemix_dagster.core.errors import (
    ConfigError,
    CorpusError,
    InfeasibleConstraintsError,
    MalformedTaskError,
    MissingTaskError,
)
from mergemix_dagster.core.preflight import check_bounds, check_tasks, task_code_warnings
from mergemix_dagster.core.settings import Settings, TaskSettings, load_settings

DOMAINS = [{"name": "math", "capability": "math"}, {"name": "code", "capability": "code"}]


def _settings(**overrides) -> Settings:
    return Settings(**({"domains": DOMAINS} | overrides))


def test_minimum_weights_summing_above_one_are_refused_by_check():
    (error,) = check_bounds(_settings(search={"min_weight": {"math": 0.6, "code": 0.6}}))
    assert isinstance(error, InfeasibleConstraintsError) and "minimum weights sum to 1.2" in str(error)
    (error,) = check_bounds(_settings(search={"max_weight": {"math": 0.3, "code": 0.3}}))
    assert "maximum weights sum to 0.6" in str(error)
    assert check_bounds(_settings(search={"min_weight": {"math": 0.4}, "max_weight": {"code": 0.7}})) == []


def test_a_token_budget_no_corpus_can_feed_is_refused_by_check():
    (error,) = check_bounds(_settings(target={"tokens": int(1e30)}))
    assert isinstance(error, InfeasibleConstraintsError) and "target.tokens 1e+30 cannot be met" in str(error)
    assert check_bounds(_settings(target={"tokens": 1_000_000})) == []  # 4M characters per domain: plenty


def _task(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_text(json.dumps({"q": "1 plus 1", "choices": [" 2", " 3"], "gold": 0}) + "\n")
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


GOOD = """\
    task: {name}
    dataset_path: json
    dataset_kwargs:
      data_files:
        test: data.jsonl
    test_split: test
    output_type: multiple_choice
    doc_to_text: q
    doc_to_choice: choices
    doc_to_target: {target}
    metric_list:
      - metric: acc
    """


@pytest.mark.parametrize("broken, where", [
    ("task: mine\ndataset_path: json\n  bad_indent: [1, 2\n", "line 3"),
    ("task: mine\ndataset_path: !!python/object:os.system {}\n", "line 2"),
])
def test_a_malformed_task_yaml_is_named_malformed_not_missing(tmp_path, broken, where):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "mine.yaml").write_text(broken)
    (error,) = check_tasks([TaskSettings(name="mine", capability="math", metric="acc")], str(tmp_path / "tasks"), 4,
                           "evaluation.tasks")
    assert isinstance(error, MalformedTaskError) and isinstance(error, MissingTaskError)
    assert "mine.yaml is malformed" in str(error) and where in str(error) and "not found" not in str(error)


def test_check_says_when_a_task_yaml_imports_code(tmp_path):
    folder = tmp_path / "tasks"
    _task(folder, "plain", GOOD.format(name="plain", target="gold"))
    _task(folder, "coded", GOOD.format(name="coded", target="!function helpers.target"))
    (folder / "helpers.py").write_text("def target(doc):\n    return doc['gold']\n")
    tasks = [TaskSettings(name=n, capability="math", metric="acc") for n in ("plain", "coded")]
    (line,) = task_code_warnings(tasks, str(folder))
    assert "task 'coded'" in line and "helpers.target" in line and "top-level code" in line
    assert check_tasks(tasks, str(folder), 1, "evaluation.tasks") == []  # both load


def test_a_300_character_domain_name_is_a_named_config_error(tmp_path):
    with pytest.raises(ValidationError, match="300 characters; at most 64"):
        _settings(domains=[{"name": "d" * 300}, {"name": "code"}])
    config = tmp_path / "long.yaml"
    config.write_text(json.dumps({"domains": [{"name": "d" * 300}, {"name": "code"}]}))
    with pytest.raises(ConfigError, match="at most 64"):
        load_settings(str(config))


def test_special_files_and_links_that_leave_the_corpus_folder_are_refused(tmp_path, monkeypatch):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not corpus data")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("real data")
    (corpus / "b.txt").symlink_to(secret)
    monkeypatch.delenv("MERGEMIX_ALLOW_OUTSIDE_LINKS", raising=False)
    for named in (corpus, corpus / "b.txt", corpus / "*.txt"):
        with pytest.raises(CorpusError, match="outside .*MERGEMIX_ALLOW_OUTSIDE_LINKS=1"):
            expand_paths([str(named)])
    (corpus / "c.txt").symlink_to(corpus / "a.txt")  # a link inside the folder is fine
    (corpus / "b.txt").unlink()
    assert [p.name for p in expand_paths([str(corpus)])] == ["a.txt", "c.txt"]
    (corpus / "b.txt").symlink_to(secret)
    monkeypatch.setenv("MERGEMIX_ALLOW_OUTSIDE_LINKS", "1")
    assert [p.name for p in expand_paths([str(corpus)])] == ["a.txt", "b.txt", "c.txt"]
    monkeypatch.delenv("MERGEMIX_ALLOW_OUTSIDE_LINKS")
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    with pytest.raises(CorpusError, match="not a regular file"):
        expand_paths([str(fifo)])
    with pytest.raises(CorpusError, match="not a regular file"):
        expand_paths(["/dev/zero"])
