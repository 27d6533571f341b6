"""Every bad input and fault of issue 10, as a test: a named error before training where the input is a config
or path problem; for the silent cases, the rerun that now happens, with row counts before and after.

The pipeline tests use a user's own tiny bases (Qwen2, GPT-NeoX, GPT-2; random weights made here with
``save_pretrained`` and a byte-level BPE tokenizer), their own corpora (jsonl, parquet, txt, a glob) and their
own lm-eval task, on a real Dagster instance. docs/reliability.md lists the same cases.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from mergemix_dagster.core.preflight import check_settings, check_tokenizer
from mergemix_dagster.core.settings import check_stage_name
from mergemix_dagster.core.data.corpora import read_documents
from mergemix_dagster.core.errors import (
    CheckpointChangedError,
    ConfigError,
    CorpusError,
    CorruptDatabaseError,
    InvalidStageNameError,
    MissingTaskError,
    MissingTokenizerError,
    NonFiniteWeightsError,
    StoreError,
    TruncatedCheckpointError,
)
from mergemix_dagster.core.settings import Settings, load_settings

BIN = Path(sys.executable).parent
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


# ------------------------------------------------------------------------------------------ helpers


def _texts(kind: str, n: int) -> list[str]:
    if kind == "math":
        return [f"{i} plus {i % 7} equals {i + i % 7}." for i in range(n)]
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(12)) + "." for i in range(n)]


def make_base(folder: Path, arch: str, tokenizer: bool = True) -> Path:
    """A user's tiny random causal LM of family ``arch``, saved with ``save_pretrained`` (+ its tokenizer)."""
    import torch
    import transformers as tf

    from mergemix_dagster.core.training.model import train_tokenizer

    tok = train_tokenizer(_texts("math", 200) + _texts("words", 200), vocab_size=300)
    common = dict(vocab_size=300, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    configs = {
        "gpt2": lambda: tf.GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=64, **common),
        "gpt_neox": lambda: tf.GPTNeoXConfig(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=64, tie_word_embeddings=False, **common
        ),
        "qwen2": lambda: tf.Qwen2Config(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=32,
            max_position_embeddings=64, **common
        ),
    }
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(configs[arch]())
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if tokenizer:
        tok.save_pretrained(folder)
    return folder


def make_task(folder: Path) -> Path:
    """The user's own lm-eval task: 6 multiple-choice sums, metric acc."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"query": f"{a} plus {b} equals", "choices": [f" {a + b}.", f" {a + b + 1}."], "gold": 0}
            for a, b in [(1, 2), (3, 4), (5, 1), (2, 2), (6, 3), (4, 0)]]
    (folder / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "my_sums.yaml").write_text(textwrap.dedent("""\
        task: my_sums
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: sums.jsonl
        test_split: test
        output_type: multiple_choice
        doc_to_text: query
        doc_to_choice: choices
        doc_to_target: gold
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
        """))
    return folder


def make_user_config(root: Path, arch: str, base: Path | None = None) -> Path:
    """Two domains on the user's own files: math as jsonl + parquet (a glob), words as txt files."""
    data = root / "data"
    (data / "math").mkdir(parents=True, exist_ok=True)
    (data / "words").mkdir(parents=True, exist_ok=True)
    math = _texts("math", 120)
    (data / "math" / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in math[:60]))
    pd.DataFrame({"text": math[60:]}).to_parquet(data / "math" / "b.parquet")
    for i, chunk in enumerate([_texts("words", 60)[:30], _texts("words", 60)[30:]]):
        (data / "words" / f"w{i}.txt").write_text("\n".join(chunk))
    (data / "general.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts("words", 40) + math[:40]))
    base = base or make_base(root / f"base-{arch}", arch)
    tasks = make_task(root / "tasks")
    raw = {
        "home": str(root / "home"),
        "domains": [
            {"name": "math", "paths": [str(data / "math" / "*")], "capability": "math"},
            {"name": "words", "paths": [str(data / "words")], "capability": "math"},
        ],
        "model": {"base": str(base), "general_paths": [str(data / "general.jsonl")]},
        "experts": {"tokens": 1024, "seq_len": 32, "batch_size": 8, "general_fraction": 0.5},
        "evaluation": {"tasks_dir": str(tasks), "tasks": [{"name": "my_sums", "capability": "math", "metric": "acc"}],
                       "limit": 4, "batch_size": 8},
        "search": {"n_candidates": 3, "n_samples": 200, "cv_folds": 2},
        "validation": {"heldout_tasks": [], "n_mixtures": 3},
    }
    path = root / f"{arch}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_pipeline(config: Path, instance, stage: str = "s0") -> dict[str, float]:
    from mergemix_dagster.definitions import build_definitions
    from mergemix_dagster.runner.stage import run_stage
    from mergemix_dagster.resources.settings import _load

    _load.cache_clear()  # the settings resource caches a config by path; these tests edit the file in place
    settings = load_settings(str(config))
    check_settings(settings).raise_first()
    steps: list[tuple[str, object]] = []
    timings = run_stage(build_definitions(settings, config=str(config)), settings, instance, stage,
                        on_step=lambda job, part, _: steps.append((job, str(part))), log_level="ERROR")
    return {"timings": timings, "steps": steps}


def seed_rows(settings) -> pd.DataFrame:
    from mergemix_dagster.resources import EvaluationDatabase

    rows = EvaluationDatabase(path=settings.database_path).evaluations("s0")
    return rows[rows["kind"].isin(["seed", "base"])]


def _settings(**overrides) -> Settings:
    raw = {"domains": [{"name": "math", "capability": "math"}, {"name": "code", "capability": "code"}]}
    raw.update(overrides)
    return Settings(**raw)


# ----------------------------------------------------------------- config problems, before training


def test_a_zero_learning_rate_is_refused_when_the_config_loads():
    with pytest.raises(Exception, match="learning_rate"):
        _settings(experts={"tokens": 1000, "learning_rate": 0})


def test_fewer_candidates_than_domains_plus_one_is_refused():
    with pytest.raises(Exception, match="n_candidates.{0,4}2 is below"):
        _settings(search={"n_candidates": 2})


@pytest.mark.parametrize("name", ["", "s0|x", "a/b", "x" * 300, "has space"])
def test_invalid_stage_names_are_refused_by_name(name):
    with pytest.raises(InvalidStageNameError):
        check_stage_name(name)
    with pytest.raises(InvalidStageNameError):
        _settings(stages={"checkpoints": {name: "/ckpt"}})


def test_check_lists_every_config_problem_with_a_named_error(tmp_path):
    s = _settings(
        domains=[
            {"name": "math", "paths": [str(tmp_path / "nothing" / "*.jsonl")], "capability": "math"},
            {"name": "code", "capability": "coding"},
        ],
        evaluation={"tasks": [{"name": "mm_math", "capability": "math", "metric": "nope"},
                              {"name": "no_such_task", "capability": "math"}]},
        stages={"checkpoints": {"s1": str(tmp_path / "missing-ckpt")}},
        home=str(tmp_path / "home"),
    )
    report = check_settings(s)
    kinds = [type(e) for e in report.errors]
    assert CorpusError in kinds  # the glob matches nothing
    assert MissingTaskError in kinds  # no_such_task
    assert sum(k is ConfigError for k in kinds) == 2  # capability 'coding' has no task; metric 'nope'
    assert StoreError in kinds  # the registered checkpoint does not exist
    with pytest.raises(CorpusError, match="more problems"):
        report.raise_first()


def test_unknown_merge_method_is_a_config_error_before_any_training(tmp_path):
    s = _settings(domains=[{"name": "math", "capability": "math"}, {"name": "code", "capability": "code"}],
                  search={"merge_method": "slerpp"}, home=str(tmp_path / "home"))
    errors = [e for e in check_settings(s).errors if "merge_method" in str(e)]
    assert len(errors) == 1 and isinstance(errors[0], ConfigError)
    assert "slerpp" in str(errors[0]) and "linear" in str(errors[0])  # names the known methods


def test_default_heldout_task_missing_from_a_users_tasks_dir_is_reported(tmp_path):
    """Only for `validate`, which uses it: `check_settings` (what `check` and `run` stop on) lets it pass."""
    from mergemix_dagster.core.preflight import check_validation_settings

    s = _settings(domains=[{"name": "math", "capability": "math"}, {"name": "code", "capability": "math"}],
                  evaluation={"tasks_dir": str(make_task(tmp_path / "tasks")),
                              "tasks": [{"name": "my_sums", "capability": "math", "metric": "acc"}]},
                  home=str(tmp_path / "home"))
    assert check_settings(s).errors == []
    errors = check_validation_settings(s)
    assert [type(e) for e in errors] == [MissingTaskError] * 3  # one per default held-out task
    assert all("validation.heldout_tasks" in str(e) for e in errors)
    assert "mm_arith_words" in str(errors[0]) and "'mm_prose'" in str(errors[1]) and "'mm_code'" in str(errors[2])
    assert "set validation.heldout_tasks to" in str(errors[0]) and "or to []" in str(errors[0])  # the fix


def test_a_base_without_tokenizer_files_is_a_named_error(tmp_path):
    base = make_base(tmp_path / "base", "gpt2", tokenizer=False)
    assert [type(e) for e in check_tokenizer(str(base))] == [MissingTokenizerError]
    s = _settings(model={"base": str(base)}, home=str(tmp_path / "home"), experts={"tokens": 1000, "seq_len": 32})
    assert MissingTokenizerError in [type(e) for e in check_settings(s).errors]


def test_a_registered_checkpoint_of_another_architecture_is_refused(tmp_path):
    base = make_base(tmp_path / "base", "gpt2")
    other = make_base(tmp_path / "other", "qwen2")
    s = _settings(model={"base": str(base)}, home=str(tmp_path / "home"), experts={"tokens": 1000, "seq_len": 32},
                  stages={"checkpoints": {"s1": str(other), "s2": str(base)}})
    errors = [str(e) for e in check_settings(s).errors]
    assert len(errors) == 1 and "stage 's1'" in errors[0] and "Qwen2ForCausalLM" in errors[0]


def test_cli_run_stops_before_training_on_a_missing_task(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({
        "domains": [{"name": "math", "capability": "math"}, {"name": "code", "capability": "math"}],
        "evaluation": {"tasks": [{"name": "no_such_task", "capability": "math"}]},
    }))
    env = os.environ | {"MERGEMIX_HOME": str(tmp_path / "home")}
    proc = subprocess.run([BIN / "mergemix", "--config", str(config), "run"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "MissingTaskError" in proc.stderr and "no_such_task" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "home" / "dagster").exists()  # nothing ran, nothing trained


def test_cli_stage_add_refuses_bad_names_and_missing_checkpoints(tmp_path, monkeypatch, capsys):
    from mergemix_dagster.cli import main

    monkeypatch.setenv("MERGEMIX_HOME", str(tmp_path / "home"))
    for args, error in [([""], "InvalidStageNameError"), (["s0|x"], "InvalidStageNameError"),
                        (["x" * 300], "InvalidStageNameError"),
                        (["s1", "--checkpoint", str(tmp_path / "nope")], "StoreError")]:
        assert main(["--config", "smoke", "stage", "add", *args]) == 2
        err = capsys.readouterr().err
        assert f"mergemix: error: {error}" in err and "Traceback" not in err
    assert not (tmp_path / "home" / "store" / "stages").exists()
    assert not (tmp_path / "home" / "dagster").exists()


def test_home_that_is_a_file_and_corrupt_database_are_named(tmp_path, monkeypatch, capsys):
    from mergemix_dagster.cli import main

    home_file = tmp_path / "home"
    home_file.write_text("oops")
    monkeypatch.setenv("MERGEMIX_HOME", str(home_file))
    assert main(["--config", "smoke", "check"]) == 2
    out = capsys.readouterr().out
    assert "StoreError" in out and "is a file" in out
    bad_db = tmp_path / "bad.duckdb"
    bad_db.write_bytes(b"this is not a database" * 500)
    from mergemix_dagster.resources import EvaluationDatabase

    with pytest.raises(CorruptDatabaseError, match="bad.duckdb"):
        EvaluationDatabase(path=str(bad_db)).evaluations("s0")
    s = _settings(home=str(tmp_path / "h2"), database=str(bad_db))
    assert [type(e) for e in check_settings(s).errors] == [CorruptDatabaseError]


def test_s3_unreachable_or_without_credentials_is_a_store_error(monkeypatch):
    from mergemix_dagster.resources import CheckpointStore

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StoreError, match="NoCredentialsError"):
        CheckpointStore(root="s3://bucket/mm", region_name="us-east-1").exists("x.json")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    store = CheckpointStore(root="s3://bucket/mm", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StoreError, match="cannot reach"):
        store.exists("x.json")


# ------------------------------------------------------------------------------------- corpora


def test_globs_in_paths_resolve_to_supported_files(tmp_path):
    (tmp_path / "math").mkdir()
    (tmp_path / "math" / "a.jsonl").write_text(json.dumps({"text": "one"}) + "\n")
    pd.DataFrame({"text": ["two"]}).to_parquet(tmp_path / "math" / "b.parquet")
    (tmp_path / "math" / "README.md").write_text("ignored")
    assert read_documents([str(tmp_path / "math" / "*.jsonl")]) == ["one"]
    assert read_documents([str(tmp_path / "math" / "*")]) == ["one", "two"]
    assert read_documents([str(tmp_path / "**" / "*.parquet")]) == ["two"]
    with pytest.raises(CorpusError, match="matches no"):
        read_documents([str(tmp_path / "math" / "*.txt")])


def test_max_chars_bounds_a_single_huge_document(tmp_path):
    huge = tmp_path / "huge.txt"
    huge.write_text("word " * 6_000_000)  # one 30M-character document
    tracemalloc.start()
    docs = read_documents([huge], max_chars=100_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [len(d) for d in docs] == [100_000]
    assert peak < 5_000_000  # the file is never read whole
    line = tmp_path / "huge.jsonl"
    line.write_text(json.dumps({"text": "x" * 3_000_000}) + "\n" + json.dumps({"text": "never read"}) + "\n")
    assert [len(d) for d in read_documents([line], max_chars=1000)] == [1000]


def test_a_malformed_line_deep_in_a_corpus_is_a_short_named_error_in_the_cli(tmp_path):
    bad = tmp_path / "math.jsonl"
    bad.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts("math", 30)) + "{broken\n")
    raw = yaml.safe_load((Path(__file__).parents[1] / "mergemix_dagster/configs/smoke.yaml").read_text())
    raw["domains"][0]["paths"] = [str(bad)]
    raw["model"]["general_max_chars"] = 20_000
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = os.environ | {"MERGEMIX_HOME": str(tmp_path / "home")}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.run([BIN / "mergemix", "--config", str(config), "run"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "MalformedCorpusError" in proc.stderr and "math.jsonl:31" in proc.stderr
    assert "Traceback" not in proc.stderr and "trace: " in proc.stderr
    log = Path(proc.stderr.split("trace: ")[1].strip())
    assert log.is_file() and "Traceback" in log.read_text()


# ---------------------------------------------------------------------------- database and runs


def test_a_locked_database_keeps_the_training_run_row(tmp_path):
    from mergemix_dagster.resources import EvaluationDatabase

    path = tmp_path / "db.duckdb"
    db = EvaluationDatabase(path=str(path), lock_timeout_s=0.2)
    db.query("SELECT 1")  # create the file
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(path)!r}); print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        db.record_training_run("s0", "expert:math:v1", "expert", {"math": 1.0}, 0, 1000, 1.5, 2.0, "/store/x")
        assert len(list((tmp_path / "db.duckdb.pending").glob("*.json"))) == 1
    finally:
        holder.kill()
        holder.wait()
    rows = db.training_runs("s0")
    assert rows["run_id"].tolist() == ["expert:math:v1"] and rows["tokens"].tolist() == [1000]
    assert not list((tmp_path / "db.duckdb.pending").glob("*.json"))


SLEEPY_RUN = """
import sys, time, dagster as dg
from mergemix_dagster.runner.stage import OWNER_TAG, STAGE_TAG, owner_tag

@dg.asset
def slow():
    time.sleep(60)

with dg.DagsterInstance.get() as instance:
    dg.define_asset_job("slow_job", [slow])
    defs = dg.Definitions(assets=[slow], jobs=[dg.define_asset_job("slow_job", [slow])])
    defs.resolve_job_def("slow_job").execute_in_process(instance=instance, tags={STAGE_TAG: "s0", OWNER_TAG: owner_tag()})
"""


def test_a_killed_run_is_marked_failed_so_automation_resumes(tmp_path):
    from mergemix_dagster.runner.stage import fail_abandoned_runs

    env = os.environ | {"DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.Popen([sys.executable, "-c", SLEEPY_RUN], env=env)
    os.environ["DAGSTER_HOME"] = str(tmp_path)
    try:
        with dg.DagsterInstance.get() as instance:
            started = []
            for _ in range(120):
                started = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                if started:
                    break
                time.sleep(0.5)
            assert started, "the run never started"
            assert fail_abandoned_runs(instance) == []  # its process is alive: left alone
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert instance.get_run_by_id(started[0].dagster_run.run_id).status is dg.DagsterRunStatus.STARTED
            assert fail_abandoned_runs(instance) == [started[0].dagster_run.run_id]
            assert instance.get_run_by_id(started[0].dagster_run.run_id).status is dg.DagsterRunStatus.FAILURE
    finally:
        os.environ.pop("DAGSTER_HOME", None)
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------ a user's own base, corpora and task, through the pipeline


@pytest.fixture(scope="module")
def user_pipeline(tmp_path_factory):
    """A GPT-NeoX base (its head is ``embed_out`` on disk), run once through every job of stage s0."""
    root = tmp_path_factory.mktemp("neox")
    config = make_user_config(root, "gpt_neox")
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        first = run_pipeline(config, instance)
        yield root, config, instance, first


def _rerun(config: Path, instance) -> tuple[list, pd.DataFrame, pd.DataFrame]:
    settings = load_settings(str(config))
    before = seed_rows(settings)
    out = run_pipeline(config, instance)
    return out["steps"], before, seed_rows(settings)


def _same_rows_all_rescored(before: pd.DataFrame, after: pd.DataFrame, kinds=("seed", "base")) -> None:
    """No loss, no duplicates, nothing stale left: the same (candidate, task) rows, every one scored again."""
    key = ["candidate_id", "task", "metric"]
    assert len(after) == len(before) and not after.duplicated(key).any()
    assert sorted(map(tuple, after[key].values)) == sorted(map(tuple, before[key].values))
    merged = before.merge(after, on=key, suffixes=("_old", "_new"))
    rescored = merged[merged["kind_new"].isin(kinds)]
    assert (rescored["evaluated_at_new"] > rescored["evaluated_at_old"]).all()


def test_a_gpt_neox_base_runs_end_to_end_on_its_own_corpora_and_task(user_pipeline):
    root, config, instance, first = user_pipeline
    settings = load_settings(str(config))
    jobs = [job for job, _ in first["steps"]]
    assert jobs.count("experts_job") == 2 and jobs[-1] == "optimize_job"
    rows = seed_rows(settings)
    assert len(rows) == (settings.search.n_candidates + 1) * 1 and set(rows["task"]) == {"my_sums"}
    from mergemix_dagster.resources import EvaluationDatabase

    db = EvaluationDatabase(path=settings.database_path)
    weights = db.chosen_mixture("s0")
    assert set(weights) == {"math", "words"} and abs(sum(weights.values()) - 1) < 1e-9
    # the team's own general data was mixed into the experts, not the embedded corpus
    general = json.loads((root / "home/store/corpora/general/current.json").read_text())
    assert general["source"] == str(root / "data/general.jsonl")
    runs = db.training_runs("s0")
    assert sorted(runs["alpha"].map(lambda a: tuple(sorted(a))).tolist()) == [("general", "math"), ("general", "words")]


def test_nothing_changed_nothing_reruns(user_pipeline):
    _, config, instance, _ = user_pipeline
    steps, before, after = _rerun(config, instance)
    assert steps == []
    assert after.equals(before)


def test_a_rewritten_corpus_file_reruns_its_corpus_and_what_depends_on_it(user_pipeline):
    root, config, instance, _ = user_pipeline
    (root / "data/words/w0.txt").write_text("\n".join(_texts("math", 30)))  # same name, new content
    steps, before, after = _rerun(config, instance)
    assert ("corpora_job", "words") in steps and ("experts_job", "words|s0") in steps
    assert ("corpora_job", "math") not in steps and ("experts_job", "math|s0") not in steps
    # a mixture that weighs words is another model now: rescored; the math expert alone is the same model, so its
    # rows are kept (same scores, same time) under the design's new fingerprint (docs/search.md, changing domains)
    weighs = [a.get("words", 0) > 0 for a in before["alpha"]]
    _same_rows_all_rescored(before[weighs], after[after["candidate_id"].isin(before[weighs]["candidate_id"])],
                            kinds=("seed",))
    kept = before[[k == "seed" and not w for k, w in zip(before["kind"], weighs)]]
    assert len(kept) and kept["candidate_id"].nunique() == 1
    again = after.merge(kept, on=["candidate_id", "task", "metric"], suffixes=("_new", "_old"))
    assert len(again) == len(kept) and (again["value_new"] == again["value_old"]).all()
    assert (again["evaluated_at_new"] == again["evaluated_at_old"]).all()
    assert (again["model_fingerprint_new"] != again["model_fingerprint_old"]).all()


def test_a_changed_evaluation_limit_rescores_every_candidate(user_pipeline, tmp_path):
    root, config, instance, _ = user_pipeline
    raw = yaml.safe_load(config.read_text())
    raw["evaluation"]["limit"] = 5
    config.write_text(yaml.safe_dump(raw))
    steps, before, after = _rerun(config, instance)
    assert steps == [("optimize_job", "s0")], (steps, before, after)
    _same_rows_all_rescored(before, after)
    assert after["evaluation_fingerprint"].nunique() == 1
    assert set(after["evaluation_fingerprint"]).isdisjoint(before["evaluation_fingerprint"])


def test_an_edited_task_file_rescores_every_candidate(user_pipeline):
    root, config, instance, _ = user_pipeline
    data = root / "tasks/sums.jsonl"
    data.write_text(data.read_text().replace("1 plus 2", "2 plus 1"))
    steps, before, after = _rerun(config, instance)
    assert steps == [("optimize_job", "s0")]
    _same_rows_all_rescored(before, after)


def test_a_changed_tokenizer_retrains_the_experts(user_pipeline):
    root, config, instance, _ = user_pipeline
    tok_config = root / "base-gpt_neox/tokenizer_config.json"
    cfg = json.loads(tok_config.read_text())
    cfg["model_max_length"] = 64
    tok_config.write_text(json.dumps(cfg))
    steps, before, after = _rerun(config, instance)
    assert ("stage_base_job", "s0") in steps
    assert ("experts_job", "math|s0") in steps and ("experts_job", "words|s0") in steps
    assert len(after) == len(before)


def test_check_full_verifies_every_stored_checkpoint(user_pipeline, capsys):
    from mergemix_dagster.cli import main

    root, config, _, _ = user_pipeline
    assert main(["--config", str(config), "check", "--full"]) == 0
    weights = _expert_dir(root, "words") / "model.safetensors"
    original = weights.read_bytes()
    middle = len(original) // 2
    weights.write_bytes(original[:middle] + bytes([original[middle] ^ 1]) + original[middle + 1:])  # one bit
    try:
        assert main(["--config", str(config), "check", "--full"]) == 2
        assert "CheckpointChangedError: expert 'words' of stage 's0'" in capsys.readouterr().out
    finally:
        weights.write_bytes(original)
        os.environ.pop("MERGEMIX_VERIFY", None)


def _expert_dir(root: Path, domain: str) -> Path:
    pointer = json.loads((root / f"home/store/stages/s0/experts/{domain}/current.json").read_text())
    return root / "home/store" / pointer["key"]


def test_a_replaced_or_truncated_expert_is_refused_by_name_and_retrained(user_pipeline):
    from mergemix_dagster.steps.proxy_scoring import open_proxy_scorer
    from mergemix_dagster.resources import CheckpointStore

    root, config, instance, _ = user_pipeline
    settings = load_settings(str(config))
    store = CheckpointStore(root=settings.store_uri)
    math_file = _expert_dir(root, "math") / "model.safetensors"
    shutil.copyfile(_expert_dir(root, "words") / "model.safetensors", math_file)  # another expert's weights
    with pytest.raises(CheckpointChangedError, match="expert 'math'"):
        open_proxy_scorer(store, "s0", settings)
    steps, before, after = _rerun(config, instance)
    assert steps[0] == ("experts_job", "math|s0")  # kept aside and trained again
    assert len(after) == len(before)
    open_proxy_scorer(store, "s0", settings)  # loads again

    words_file = _expert_dir(root, "words") / "model.safetensors"
    words_file.write_bytes(words_file.read_bytes()[:-1000])  # an interrupted copy
    with pytest.raises(TruncatedCheckpointError, match="cut"):
        open_proxy_scorer(store, "s0", settings)
    steps, _, _ = _rerun(config, instance)
    assert steps[0] == ("experts_job", "words|s0")


def test_an_expert_holding_nan_is_refused_by_name(user_pipeline, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from mergemix_dagster.steps.proxy_scoring import open_proxy_scorer
    from mergemix_dagster.resources import CheckpointStore

    root, config, _, _ = user_pipeline
    settings = load_settings(str(config))
    store = CheckpointStore(root=settings.store_uri)
    pointer_path = root / "home/store/stages/s0/experts/math/current.json"
    pointer = json.loads(pointer_path.read_text())
    copy = tmp_path / "nan-expert"
    shutil.copytree(_expert_dir(root, "math"), copy)
    (copy / "_COMPLETE").unlink()
    tensors = load_file(copy / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    store.put_dir(copy, "stages/s0/experts/math/nan-test")  # recorded as written: the manifest matches
    pointer_path.write_text(json.dumps(pointer | {"key": "stages/s0/experts/math/nan-test"}))
    try:
        with pytest.raises(NonFiniteWeightsError, match="expert 'math'"):
            open_proxy_scorer(store, "s0", settings)
    finally:
        pointer_path.write_text(json.dumps(pointer))


def test_two_concurrent_cli_runs_on_one_home_serialize_and_share_work(tmp_path):
    """A GPT-2 base through `mergemix run`, twice at once: the second waits for the home lock, then finds
    everything done; no "refusing to overwrite", no duplicate rows. A failed surrogate check is printed."""
    config = make_user_config(tmp_path, "gpt2")
    raw = yaml.safe_load(config.read_text())
    raw["validation"]["min_surrogate_cv_spearman"] = 1.01  # cannot pass: the warning must reach the terminal
    config.write_text(yaml.safe_dump(raw))
    env = os.environ | {"MERGEMIX_HOME": str(tmp_path / "home")}
    env.pop("DAGSTER_HOME", None)
    cmd = [BIN / "mergemix", "--config", str(config), "run"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(1)
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    stdout = outs[0][0] + outs[1][0]
    assert "waiting for another run" in stdout
    assert "refusing to overwrite" not in stdout + outs[0][1] + outs[1][1]
    steps = [line.split()[0] for line in stdout.splitlines() if line.startswith("  ") and line.split()[0].endswith("_job")]
    assert steps.count("experts_job") == 2  # each expert trained once, by whichever run came first
    assert "warning: check surrogate_cv_quality of capability_surrogates[s0] failed" in stdout
    settings = load_settings(str(config))
    from mergemix_dagster.resources import EvaluationDatabase

    assert len(EvaluationDatabase(path=settings.database_path).training_runs("s0")) == 2
    rows = seed_rows(settings)
    assert len(rows) == settings.search.n_candidates + 1 and not rows.duplicated(["candidate_id", "task"]).any()


def test_a_users_base_mixing_general_data_without_general_paths_is_warned(tmp_path):
    base = make_base(tmp_path / "base", "gpt2")
    common = dict(home=str(tmp_path / "home"), domains=[{"name": "math", "capability": "math"},
                                                         {"name": "code", "capability": "code"}])
    mixing = _settings(model={"base": str(base)}, experts={"tokens": 1000, "seq_len": 32, "general_fraction": 0.5}, **common)
    report = check_settings(mixing)
    assert report.ok and len(report.warnings) == 1 and "model.general_paths" in report.warnings[0]
    own = _settings(model={"base": str(base), "general_paths": [str(tmp_path / "g.txt")]},
                    experts={"tokens": 1000, "seq_len": 32, "general_fraction": 0.5}, **common)
    (tmp_path / "g.txt").write_text("general text")
    assert check_settings(own).warnings == []
