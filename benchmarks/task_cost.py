"""CPU seconds of one candidate evaluation on a run's stored base: the attempt-4 search tasks vs attempt 5's.

Not a test. docs/results.md attempt 5 quotes its output. Attempt 4 scored ``language`` with ``mm_prose``
(multiple choice, gold_prob), attempt 5 with ``mm_prose_bpb`` (bits per byte, byte_prob). Each evaluator is
warmed up once, then timed ``--repeats`` times, interleaved; process CPU time, because wall time on shared
cores measures the neighbours. Also prints the tokens each language task scores with the run's tokenizer.

    MERGEMIX_HOME=<a home with a stage base> .venv/bin/python benchmarks/task_cost.py [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="s0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mergemix_dagster.core.evaluation.harness import (
        Evaluator,
        TaskSpec,
        default_tasks_dir,
    )
    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.resources.artifacts import base_checkpoint

    torch.set_num_threads(args.threads)
    s = load_settings(None)
    base_dir, _ = base_checkpoint(CheckpointStore(root=s.store_uri), args.stage)
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    tok = AutoTokenizer.from_pretrained(base_dir)
    others = [TaskSpec("mm_math", "math", "gold_prob"), TaskSpec("mm_code", "code", "gold_prob"),
              TaskSpec("mm_facts", "knowledge", "gold_prob")]
    prose, bpb = TaskSpec("mm_prose", "language", "gold_prob"), TaskSpec("mm_prose_bpb", "language", "byte_prob")
    lists = {"attempt 4 (mm_prose)": others + [prose], "attempt 5 (mm_prose_bpb)": others + [bpb],
             "mm_prose alone": [prose], "mm_prose_bpb alone": [bpb]}
    evaluators = {k: Evaluator(v, batch_size=s.evaluation.batch_size) for k, v in lists.items()}
    for ev in evaluators.values():
        ev.evaluate(model, tok)  # warm-up: datasets, prompt token ids
    seconds: dict[str, list[float]] = {k: [] for k in evaluators}
    for _ in range(args.repeats):
        for k, ev in evaluators.items():
            start = time.process_time()
            ev.evaluate(model, tok)
            seconds[k].append(time.process_time() - start)
    for k, v in seconds.items():
        print(f"{k}: median {statistics.median(v):.2f} CPU s (runs {', '.join(f'{x:.2f}' for x in v)})")

    data = default_tasks_dir() / "data"
    n = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
    mc = [json.loads(line) for line in (data / "mm_prose.jsonl").read_text().splitlines()]
    docs = [json.loads(line) for line in (data / "mm_prose_bpb.jsonl").read_text().splitlines()]
    print("mm_prose tokens scored (context + choice, 4 per item):", sum(n(it["query"] + c) for it in mc for c in it["choices"]))
    print("mm_prose_bpb tokens scored (+1 prefix token per paragraph):", sum(n(d["text"]) + 1 for d in docs),
          "longest paragraph", max(n(d["text"]) for d in docs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
