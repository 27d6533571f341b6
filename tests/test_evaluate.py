"""lm-eval evaluation of an in-memory model on the bundled tasks: resolution, scores, no stale cache, offline."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch

from mergemix_dagster.core.errors import MissingTaskError
from mergemix_dagster.core.evaluation.harness import (
    DEFAULT_TASKS,
    HELDOUT_TASKS,
    BenchmarkScore,
    Evaluator,
    TaskSpec,
    default_tasks_dir,
)


def _tiny_model_and_tokenizer(vocab_size: int = 512, seed: int = 0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from mergemix_dagster.core.data.defaults import build_general_documents

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(build_general_documents(20_000, seed=0), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval(), tokenizer


@pytest.fixture(scope="module")
def tiny():
    return _tiny_model_and_tokenizer()


@pytest.fixture(scope="module")
def evaluator():
    return Evaluator(DEFAULT_TASKS, batch_size=32, limit=12)


class _NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise _NetworkUsed(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def test_bundled_tasks_exist():
    d = default_tasks_dir()
    for spec in DEFAULT_TASKS + HELDOUT_TASKS:
        assert (d / f"{spec.name}.yaml").is_file() and (d / "data" / f"{spec.name}.jsonl").is_file()
    assert [t.capability for t in DEFAULT_TASKS] == ["math", "code", "language", "knowledge"]
    assert HELDOUT_TASKS[0].capability == "heldout"


def test_missing_task_names_task_and_location(tmp_path):
    with pytest.raises(MissingTaskError, match=r"mm_nonexistent.*" + str(default_tasks_dir()).replace("\\", "\\\\")):
        Evaluator([TaskSpec("mm_math", "math"), TaskSpec("mm_nonexistent", "x")])
    with pytest.raises(MissingTaskError, match=str(tmp_path)):
        Evaluator([TaskSpec("mm_math", "math")], tasks_dir=tmp_path)
    # YAML present but its data file missing
    shutil.copy(default_tasks_dir() / "mm_math.yaml", tmp_path / "mm_math.yaml")
    with pytest.raises(MissingTaskError, match="mm_metrics"):  # its process_results module is missing
        Evaluator([TaskSpec("mm_math", "math")], tasks_dir=tmp_path)
    shutil.copy(default_tasks_dir() / "mm_metrics.py", tmp_path / "mm_metrics.py")
    with pytest.raises(MissingTaskError, match="data file"):
        Evaluator([TaskSpec("mm_math", "math")], tasks_dir=tmp_path)


def test_one_score_per_task_in_unit_interval(tiny, evaluator):
    model, tokenizer = tiny
    scores = evaluator.evaluate(model, tokenizer)
    assert [s.task for s in scores] == [t.name for t in DEFAULT_TASKS]
    for s, spec in zip(scores, DEFAULT_TASKS):
        assert isinstance(s, BenchmarkScore)
        assert s.metric == "acc" and s.capability == spec.capability
        assert 0.0 <= s.value <= 1.0
        assert s.stderr is None or s.stderr >= 0


def test_other_metric_and_heldout_task(tiny):
    model, tokenizer = tiny
    ev = Evaluator([TaskSpec("mm_arith_words", "heldout", "acc_norm")], limit=8)
    (score,) = ev.evaluate(model, tokenizer)
    assert score.task == "mm_arith_words" and score.metric == "acc_norm" and 0 <= score.value <= 1


def _record_loglikelihoods(monkeypatch) -> list[list[float]]:
    from lm_eval.models.huggingface import HFLM

    calls: list[list[float]] = []
    original = HFLM.loglikelihood

    def recording(self, requests, disable_tqdm: bool = False):
        out = original(self, requests, disable_tqdm=disable_tqdm)
        calls.append([float(ll) for ll, _ in out])
        return out

    monkeypatch.setattr(HFLM, "loglikelihood", recording)
    return calls


def test_in_place_weight_change_is_seen(tiny, evaluator, monkeypatch):
    """No cache may answer for the old weights: perturb in place, scores come from the new weights."""
    model, tokenizer = tiny
    calls = _record_loglikelihoods(monkeypatch)
    before_scores = evaluator.evaluate(model, tokenizer)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
        after_scores = evaluator.evaluate(model, tokenizer)
    finally:
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved[k])
    restored_scores = evaluator.evaluate(model, tokenizer)
    assert len(calls) == 3 and len(calls[0]) == len(calls[1]) == 4 * 12 * len(DEFAULT_TASKS)
    diffs = [abs(a - b) for a, b in zip(calls[0], calls[1])]
    assert min(diffs) > 0, "some log-likelihoods did not change with the weights"
    # restoring the weights restores the answers: evaluation is a pure function of the weights
    assert calls[2] == pytest.approx(calls[0], abs=1e-4)
    assert [s.value for s in restored_scores] == [s.value for s in before_scores]
    assert [s.value for s in after_scores] != [s.value for s in before_scores] or max(diffs) > 0.1


def test_prompt_token_cache_never_crosses_tokenizers(tiny, evaluator, monkeypatch):
    """The evaluator reuses prompt token ids across calls; another tokenizer must get its own ids."""
    model_a, tok_a = tiny
    model_b, tok_b = _tiny_model_and_tokenizer(vocab_size=300, seed=3)
    assert len(tok_b) != len(tok_a)
    calls = _record_loglikelihoods(monkeypatch)
    evaluator.evaluate(model_a, tok_a)
    evaluator.evaluate(model_b, tok_b)  # shares the evaluator (and its caches) with tokenizer A's run
    Evaluator(DEFAULT_TASKS, batch_size=32, limit=12).evaluate(model_b, tok_b)  # fresh evaluator
    assert len(calls) == 3
    assert calls[1] == pytest.approx(calls[2], abs=1e-4)
    assert calls[1] != pytest.approx(calls[0], abs=1e-4)


def test_no_network_and_any_working_directory(tiny, tmp_path, monkeypatch, no_network):
    # the guard is live
    with pytest.raises(_NetworkUsed):
        socket.create_connection(("127.0.0.1", 9))
    # a fresh copy of the tasks (new paths: no datasets cache hit) loaded from another working directory
    tasks = tmp_path / "tasks"
    shutil.copytree(default_tasks_dir(), tasks)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model, tokenizer = tiny
    ev = Evaluator(DEFAULT_TASKS, tasks_dir=Path("..") / "tasks", limit=4)
    monkeypatch.chdir(tmp_path)  # the data paths were made absolute at construction
    scores = ev.evaluate(model, tokenizer)
    assert len(scores) == len(DEFAULT_TASKS)


_FRESH_PROCESS = r'''
import os, socket, sys
for var in [v for v in os.environ if v.startswith(("HF_", "TRANSFORMERS_"))]:
    del os.environ[var]
os.environ["HF_HOME"] = sys.argv[1]  # empty cache: datasets must build from the local files

def refuse(*args, **kwargs):
    raise SystemExit("NETWORK ACCESS ATTEMPTED: %r" % (args[1:],))

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from mergemix_dagster.core.evaluation.harness import Evaluator, TaskSpec
assert "HF_HUB_OFFLINE" not in os.environ  # importing forces nothing: offline mode is a setting
ev = Evaluator([TaskSpec("mm_facts", "knowledge")], limit=2, offline=True)
assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
import huggingface_hub.constants, datasets
assert huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
sys.path.insert(0, sys.argv[2])
from test_evaluate import _tiny_model_and_tokenizer
model, tok = _tiny_model_and_tokenizer()
(score,) = ev.evaluate(model, tok)
print("OK", score.value)
'''


def test_fresh_process_without_offline_env_never_touches_network(tmp_path):
    """``offline=True`` makes everything offline: no HF_* variables set, sockets refused, empty HF cache."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(tmp_path / "hf"), str(Path(__file__).parent)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert "OK" in proc.stdout
    assert "NETWORK ACCESS ATTEMPTED" not in proc.stderr + proc.stdout


def test_gold_prob_is_the_softmax_probability_of_the_gold_choice():
    import math

    from mergemix_dagster.tasks.mm_metrics import process_results

    doc = {"gold": 1, "choices": ["a", "bbbb", "cc"]}
    out = process_results(doc, [(-2.0, False), (-1.0, True), (-3.0, False)])
    z = math.exp(-2) + math.exp(-1) + math.exp(-3)
    assert out["gold_prob"] == pytest.approx(math.exp(-1) / z)
    assert out["acc"] == 1.0
    # acc_norm divides by the choice's length in characters: -2/1, -1/4, -3/2 -> choice 1 still wins
    assert out["acc_norm"] == 1.0
    wrong = process_results({"gold": 0, "choices": ["x", "y"]}, [(-5.0, False), (-1.0, True)])
    assert wrong["acc"] == 0.0 and wrong["gold_prob"] < 0.5


def test_offline_mode_follows_the_setting_when_the_definitions_load(tmp_path):
    """``model.offline`` decides; importing the definitions no longer forces it."""
    import subprocess
    import sys

    import yaml

    from mergemix_dagster.core.settings import resolve_config_path

    online = yaml.safe_load(resolve_config_path("smoke").read_text())
    online["model"]["offline"] = False
    (tmp_path / "online.yaml").write_text(yaml.safe_dump(online))
    probe = "import os, mergemix_dagster.definitions; print('HF_HUB_OFFLINE=' + os.environ.get('HF_HUB_OFFLINE', 'unset'))"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    seen = {}
    for config in ("smoke", str(tmp_path / "online.yaml")):
        proc = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
            env=env | {"MERGEMIX_CONFIG": config, "MERGEMIX_HOME": str(tmp_path / "home")},
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen[config] = proc.stdout.strip().splitlines()[-1]
        assert "BetaWarning" not in proc.stderr
    assert list(seen.values()) == ["HF_HUB_OFFLINE=1", "HF_HUB_OFFLINE=unset"]


def test_results_json_is_lm_evals_own(tiny, evaluator, tmp_path):
    """The JSON a candidate leaves is what `lm_eval` writes: a user can diff it against their own run."""
    import json

    model, tokenizer = tiny
    path = tmp_path / "c00.json"
    scores = evaluator.evaluate(model, tokenizer, results_path=path, model_name="c00")
    data = json.loads(path.read_text())
    assert {"results", "configs", "versions", "n-shot", "n-samples", "config"} <= set(data)
    assert data["config"]["model"] == "c00" and data["config"]["limit"] == 12
    for score in scores:
        assert data["results"][score.task][f"{score.metric},none"] == pytest.approx(score.value)
        assert data["n-samples"][score.task]["effective"] == 12


def test_repeated_lm_eval_warnings_print_once_and_are_counted(caplog, monkeypatch):
    """A model whose context is shorter than the prompts makes lm-eval warn on every request: one line per
    process, however many evaluators (a fresh process is simulated by emptying the printed kinds)."""
    import logging

    from mergemix_dagster.core.evaluation import harness as evaluate

    monkeypatch.setattr(evaluate, "PRINTED_WARNING_KINDS", set())

    model, tokenizer = _tiny_model_and_tokenizer()
    model.config.max_position_embeddings = 24  # lm-eval truncates every prompt longer than this
    ev = Evaluator([TaskSpec("mm_facts", "knowledge")], limit=6)
    with caplog.at_level(logging.WARNING):
        ev.evaluate(model, tokenizer)
        ev.evaluate(model, tokenizer)
        Evaluator([TaskSpec("mm_facts", "knowledge")], limit=6).evaluate(model, tokenizer)  # a second evaluator
    truncating = [r for r in caplog.records if "Truncating" in r.getMessage()]
    assert len(truncating) == 1 and "counted, not printed" in truncating[0].getMessage()
    (line,) = [x for x in ev.warning_summary() if "Truncating" in x]
    assert int(line.split("warned ")[1].split("x")[0]) >= 2 * 6  # every request of both calls was counted


def test_task_by_task_progress_gives_the_same_scores_and_json(tiny, evaluator, tmp_path):
    import json

    model, tokenizer = tiny
    lines: list[str] = []
    together = evaluator.evaluate(model, tokenizer, results_path=tmp_path / "one_call.json")
    one_by_one = evaluator.evaluate(model, tokenizer, results_path=tmp_path / "by_task.json", progress_log=lines.append)
    assert [s.value for s in one_by_one] == pytest.approx([s.value for s in together], abs=1e-6)
    assert lines[0].startswith(f"tasks 1/{len(DEFAULT_TASKS)}") and lines[-1].startswith(f"tasks {len(DEFAULT_TASKS)}/")
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("one_call.json", "by_task.json"))
    assert set(a["results"]) == set(b["results"]) == {t.name for t in DEFAULT_TASKS}
    assert a["n-samples"] == b["n-samples"]


def test_per_item_values_average_to_lm_evals_score(tiny, evaluator, tmp_path):
    """Every score carries its items in document order; their mean is lm-eval's aggregate, unchanged."""
    import json
    import math

    model, tokenizer = tiny
    path = tmp_path / "c00.json"
    scores = evaluator.evaluate(model, tokenizer, results_path=path)
    for score in scores:
        assert score.items is not None and len(score.items) == 12
        assert set(score.items) <= {0.0, 1.0}  # acc: one 0/1 per item
        assert abs(math.fsum(score.items) / len(score.items) - score.value) < 1e-9
    data = json.loads(path.read_text())
    assert "samples" not in data and "task_hashes" not in data  # the JSON is as before: no per-item dump
    # a continuous metric, task by task (the progress path merges lm-eval's sections per task)
    ev = Evaluator([TaskSpec(t.name, t.capability, "gold_prob") for t in DEFAULT_TASKS], limit=12)
    together = ev.evaluate(model, tokenizer)
    one_by_one = ev.evaluate(model, tokenizer, progress_log=lambda _: None)
    for a, b in zip(together, one_by_one):
        assert len(set(a.items)) > 1 and abs(math.fsum(a.items) / 12 - a.value) < 1e-9
        assert a.items == pytest.approx(b.items, abs=1e-9)


def test_items_follow_doc_id_order(tiny, evaluator):
    """Item i is document i: scoring a model on the first 6 documents gives the first 6 items of 12."""
    model, tokenizer = tiny
    few = Evaluator([TaskSpec("mm_facts", "knowledge", "gold_prob")], limit=6).evaluate(model, tokenizer)[0]
    more = Evaluator([TaskSpec("mm_facts", "knowledge", "gold_prob")], limit=12).evaluate(model, tokenizer)[0]
    assert more.items[:6] == pytest.approx(few.items, abs=1e-6)


def test_item_values_refuses_what_is_not_a_mean_of_items():
    from mergemix_dagster.core.evaluation.samples import is_mean_aggregation, item_values

    samples = [{"doc_id": 1, "filter": "none", "acc": 1.0}, {"doc_id": 0, "filter": "none", "acc": 0.0},
               {"doc_id": 0, "filter": "other", "acc": 1.0}]
    assert item_values(samples, "acc", 0.5) == (0.0, 1.0)  # doc_id order, only the "none" filter
    assert item_values(samples, "acc", 0.7) is None  # the items would describe another number
    assert item_values([{"doc_id": 0, "ppl": (1.0, 2)}], "ppl", 1.0) is None  # not a real number
    assert item_values(None, "acc", 0.5) is None and item_values(samples, "f1", 0.5) is None
    assert not is_mean_aggregation(None) and not is_mean_aggregation(max)


def test_identified_scores_keep_their_items():
    """The fingerprinted copy the pipeline stores (steps.proxy_scoring) and a pickled worker result keep items."""
    import pickle

    from mergemix_dagster.steps.proxy_scoring import fingerprinted

    score = BenchmarkScore("mm_math", "acc", 0.5, "math", 0.1, (0.0, 1.0))
    (identified,) = fingerprinted([score], {"mm_math": "fp"})
    assert identified.items == (0.0, 1.0) and identified.evaluation_fingerprint == "fp"
    assert pickle.loads(pickle.dumps(identified)) == identified
    assert BenchmarkScore("t", "acc", 0.5, "c").items is None  # the old positional form still builds


def test_byte_prob_of_a_known_log_likelihood():
    """``byte_prob`` = exp(log-likelihood / UTF-8 bytes); bits_per_byte keeps lm-eval's (ll, bytes) pair."""
    import math

    from mergemix_dagster.tasks.mm_metrics import process_results_rolling

    doc = {"text": "caf\u00e9 au lait"}  # 12 characters, 13 UTF-8 bytes
    out = process_results_rolling(doc, [-13 * math.log(4.0)])  # 2 bits per byte
    assert out["byte_prob"] == pytest.approx(0.25, abs=1e-12)
    assert out["bits_per_byte"] == (pytest.approx(-13 * math.log(4.0)), 13)
    assert process_results_rolling(doc, [0.0])["byte_prob"] == 1.0  # a certain model
    with pytest.raises(ValueError):
        process_results_rolling(doc, [-1.0, -2.0])  # one log-likelihood per document, nothing else


@pytest.mark.parametrize("task,capability", [("mm_prose_bpb", "language"), ("mm_code_bpb", "code")])
def test_bits_per_byte_task_yields_per_item_values(tiny, tmp_path, task, capability):
    """The language and code benchmarks load through the harness; lm-eval's rolling log-likelihoods arrive as one
    item per paragraph (block) whose mean is the score, and its own bits_per_byte agrees with them."""
    import json
    import math

    model, tokenizer = tiny
    ev = Evaluator([TaskSpec(task, capability, "byte_prob")], batch_size=8, limit=10)
    path = tmp_path / "bpb.json"
    (score,) = ev.evaluate(model, tokenizer, results_path=path)
    assert score.items is not None and len(score.items) == 10 and len(set(score.items)) == 10
    assert all(0.0 < x < 1.0 for x in score.items)
    assert abs(math.fsum(score.items) / 10 - score.value) < 1e-9 and score.stderr > 0
    bpb = json.loads(path.read_text())["results"][task]["bits_per_byte,none"]
    # the byte-weighted bits per byte of the same documents lies between the per-document values
    assert min(score.items) <= 2.0 ** -bpb <= max(score.items)
    again = ev.evaluate(model, tokenizer, progress_log=lambda _: None)[0]  # task by task: the same items
    assert again.items == pytest.approx(score.items, abs=1e-9)
    saved = model.lm_head.weight.detach().clone()
    with torch.no_grad():  # a change of the weights moves every paragraph's value
        model.lm_head.weight.mul_(1.5)
    try:
        moved = ev.evaluate(model, tokenizer)[0]
    finally:
        with torch.no_grad():
            model.lm_head.weight.copy_(saved)
    assert all(abs(a - b) > 1e-9 for a, b in zip(moved.items, score.items))
