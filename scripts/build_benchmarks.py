#!/usr/bin/env python
"""Regenerate the embedded benchmarks: ``mergemix_dagster/tasks/data/*.jsonl`` (and the YAML next to it).

Deterministic: the same interpreter's stdlib + the same pycountry give byte-identical files.
Run from anywhere::

    python scripts/build_benchmarks.py [--out mergemix_dagster/tasks] [--seed 0]

Item format (one JSON object per line): ``{"id", "query", "choices", "gold", "source"}``; the task YAML
scores ``query + choices[i]`` by log-likelihood (``target_delimiter: ""``, each choice carries its own
leading space / newline). The bits-per-byte task (``ROLLING``) has ``{"id", "text", "source"}`` items scored
whole by lm-eval's ``loglikelihood_rolling``. See docs/data.md for the design and the leakage rules.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mergemix_dagster.core.data.defaults import arithmetic as ar  # noqa: E402
from mergemix_dagster.core.data.defaults import facts as ft  # noqa: E402
from mergemix_dagster.core.data.defaults import prose as pr  # noqa: E402
from mergemix_dagster.core.data.defaults.split import is_heldout, read_source  # noqa: E402
from mergemix_dagster.core.data.defaults.stdlib_code import clean_code, heldout_code_files, training_code_files  # noqa: E402

N_ITEMS = {"mm_math": 250, "mm_code": 250, "mm_prose": 250, "mm_facts": 250, "mm_arith_words": 200, "mm_prose_bpb": 200,
           "mm_code_bpb": 200}

TASKS = {
    # name: (capability, description)
    "mm_math": ("math", "Small-number arithmetic in the math corpus format; 4 numeric answers (right one + near-misses)."),
    "mm_code": ("code", "Next line of held-out stdlib Python files; 4 candidate lines (distractors from other held-out files)."),
    "mm_prose": ("language", "Ending of held-out documentation sentences; 4 candidate endings (distractors from other sentences)."),
    "mm_facts": ("knowledge", "pycountry facts in the SFT instruction format; 4 candidate answers of the same kind."),
    "mm_arith_words": ("heldout", "HELD-OUT, not used in the search: arithmetic word problems whose templates never appear in any corpus."),
    "mm_prose_bpb": ("language", ("Bits per byte of held-out documentation paragraphs (150-600 characters), "
                                  "scored whole; byte_prob = 2 ** -bits_per_byte per paragraph.")),
    "mm_code_bpb": ("code", ("Bits per byte of held-out stdlib Python blocks (150-600 characters, shortest first), "
                             "scored whole; byte_prob = 2 ** -bits_per_byte per block.")),
}
#: Tasks scored by ``loglikelihood_rolling`` (whole documents), not multiple choice.
ROLLING = ("mm_prose_bpb", "mm_code_bpb")


def _item(rng: random.Random, idx: int, query: str, right: str, wrong: list[str], source: str) -> dict:
    choices = [right] + list(wrong)
    assert len(set(choices)) == len(choices) == 4, choices
    order = list(range(4))
    rng.shuffle(order)
    shuffled = [choices[i] for i in order]
    return {"id": idx, "query": query, "choices": shuffled, "gold": order.index(0), "source": source}


@lru_cache(maxsize=1)
def _training_code() -> str:
    """Every training stdlib file, cleaned, as one text: the leakage filter of both code benchmarks (read once)."""
    return "\n".join(clean_code(t) for t in (read_source(p) for _, p in training_code_files()) if t)


# ---------------------------------------------------------------- math
def _near_misses(rng: random.Random, c: int) -> list[str]:
    pool = sorted({c + d for d in (-10, -3, -2, -1, 1, 2, 3, 10)} - {c})
    pool = [v for v in pool if v >= 0]
    return rng.sample(pool, 3)


def build_math(rng: random.Random, n: int) -> list[dict]:
    facts = sorted({(op, a, b) for op in ar.OPS for a in range(ar.ADD_MAX + 1) for b in range(ar.ADD_MAX + 1)
                    if (op != "-" or b <= a) and (op != "*" or (a <= ar.MUL_MAX and b <= ar.MUL_MAX))})
    chosen = rng.sample(facts, n)
    items = []
    for i, (op, a, b) in enumerate(chosen):
        c = ar.apply(op, a, b)
        wrong = [f" {a} {op} {b} = {v}." for v in _near_misses(rng, c)]
        items.append(_item(rng, i, f"Question: What is {a} {op} {b}?\nAnswer:", f" {a} {op} {b} = {c}.", wrong, "generated"))
    return items


def build_arith_words(rng: random.Random, n: int) -> list[dict]:
    items, seen = [], set()
    while len(items) < n:
        op, q = ar.HELDOUT_STORY_TEMPLATES[len(items) % len(ar.HELDOUT_STORY_TEMPLATES)]
        _, a, b = ar.sample_fact(rng, op)
        x = rng.choice(ar.ITEMS)
        if (op, a, b, x) in seen:
            continue
        seen.add((op, a, b, x))
        c = ar.apply(op, a, b)
        other = [o for o in ar.OPS if o != op and ar.apply(o, a, b) >= 0 and ar.apply(o, a, b) != c]
        wrong = []
        if other:
            o = rng.choice(other)
            wrong.append(f" {a} {o} {b} = {ar.apply(o, a, b)}.")
        for v in _near_misses(rng, c):
            cand = f" {a} {op} {b} = {v}."
            if len(wrong) < 3 and cand not in wrong:
                wrong.append(cand)
        items.append(_item(rng, len(items), f"Question: {q.format(a=a, b=b, x=x)}\nAnswer:", f" {a} {op} {b} = {c}.", wrong, "generated"))
    return items


# ---------------------------------------------------------------- code
CONTEXT_LINES = 4


def _code_line_ok(line: str) -> bool:
    s = line.strip()
    return (12 <= len(line) <= 72 and not s.startswith(("#", '"', "'")) and any(ch in s for ch in "=()[]:")
            and not s.endswith(".") and s.isascii())


def build_code(rng: random.Random, n: int) -> list[dict]:
    training_text = _training_code()
    files = []
    for key, path in heldout_code_files():
        text = read_source(path)
        if text:
            files.append((key, clean_code(text).split("\n")))
    all_lines = [(key, ln) for key, lines in files for ln in set(lines) if _code_line_ok(ln)]
    all_lines.sort()
    candidates = []
    for key, lines in files:
        positions = []
        for i in range(CONTEXT_LINES, len(lines)):
            ctx = lines[i - CONTEXT_LINES:i]
            if not _code_line_ok(lines[i]) or sum(1 for c in ctx if c.strip()) < 3 or not ctx[-1].strip() or max(len(c) for c in ctx) > 80:
                continue
            if not all(c.isascii() for c in ctx):
                continue
            positions.append(i)
        rng.shuffle(positions)
        for i in positions[:4]:
            candidates.append((key, lines, i))
    rng.shuffle(candidates)
    items, seen = [], set()
    for key, lines, i in candidates:
        if len(items) >= n:
            break
        context = "\n".join(lines[i - CONTEXT_LINES:i]) + "\n"
        target = lines[i]
        window = context + target
        if window in seen or window in training_text:
            continue
        file_lines = set(lines)
        pool = [ln for k, ln in all_lines if k != key and ln not in file_lines and abs(len(ln) - len(target)) <= max(2, 0.15 * len(target))]
        pool = sorted(set(pool))
        if len(pool) < 3:
            continue
        seen.add(window)
        items.append(_item(rng, len(items), context, target, rng.sample(pool, 3), f"stdlib:{key}"))
    return items


# ---------------------------------------------------------------- prose
def build_prose(rng: random.Random, n: int) -> list[dict]:
    units = pr.prose_units()
    training_text = "\n".join(doc for key, doc in units if not is_heldout(key))
    sentences = []
    for key, doc in units:
        if not is_heldout(key):
            continue
        for s in pr.split_sentences(doc):
            words = s.split()
            if 50 <= len(s) <= 180 and len(words) >= 8 and s.isascii() and s[0].isupper() and s[-1] in ".!?" and s not in training_text:
                sentences.append((key, s))
    sentences = sorted(set(sentences))
    rng.shuffle(sentences)
    split = []
    for key, s in sentences:
        words = s.split()
        k = max(4, len(words) // 2)
        split.append((key, " ".join(words[:k]), " " + " ".join(words[k:])))
    items, used = [], set()
    for key, ctx, ending in split:
        if len(items) >= n:
            break
        if (ctx, ending) in used:
            continue
        pool = sorted({e for k, c, e in split if e != ending and abs(len(e) - len(ending)) <= max(3, 0.2 * len(ending))})
        if len(pool) < 3:
            continue
        used.add((ctx, ending))
        items.append(_item(rng, len(items), ctx, ending, rng.sample(pool, 3), f"python-docs:{key}"))
    return items


PARAGRAPH_CHARS = (150, 600)
MAX_PARAGRAPHS_PER_UNIT = 8


def build_prose_bpb(rng: random.Random, n: int) -> list[dict]:
    """Whole paragraphs of held-out prose units, for bits per byte.

    A paragraph is kept when it is PARAGRAPH_CHARS long, does not occur verbatim in the training prose pool,
    and none of its sentences of >= 40 characters does either (docstrings are copied between modules); at most
    MAX_PARAGRAPHS_PER_UNIT per unit, so a few long docstrings do not make up the benchmark.
    """
    units = pr.prose_units()
    training_text = "\n".join(doc for key, doc in units if not is_heldout(key))
    lo, hi = PARAGRAPH_CHARS
    candidates = sorted({(key, p) for key, doc in units if is_heldout(key) for p in doc.split("\n\n")
                         if lo <= len(p) <= hi and p not in training_text
                         and not any(len(s) >= 40 and s in training_text for s in pr.split_sentences(p))})
    rng.shuffle(candidates)
    return [{"id": i, "text": para, "source": f"python-docs:{key}"}
            for i, (key, para) in enumerate(_first_distinct(candidates, n, MAX_PARAGRAPHS_PER_UNIT))]


def _first_distinct(candidates: list[tuple[str, str]], n: int, per_unit: int) -> list[tuple[str, str]]:
    """The first ``n`` distinct texts of shuffled ``(unit, text)`` candidates, at most ``per_unit`` from one unit."""
    chosen, taken, seen = [], {}, set()
    for key, text in candidates:
        if len(chosen) >= n:
            break
        if text in seen or taken.get(key, 0) >= per_unit:
            continue
        seen.add(text)
        taken[key] = taken.get(key, 0) + 1
        chosen.append((key, text))
    return chosen


CODE_BLOCK_CHARS = (150, 600)
MAX_BLOCKS_PER_FILE = 4
#: a block is dropped when one of its lines this long (stripped) occurs in the training code
COPIED_LINE_CHARS = 40


def build_code_bpb(rng: random.Random, n: int) -> list[dict]:
    """Whole blocks of held-out stdlib files (runs of lines between blank lines), for bits per byte.

    A block is kept when it is CODE_BLOCK_CHARS long, ASCII, not verbatim in the training code, and none of its
    lines of >= COPIED_LINE_CHARS characters is a training line (idioms copied between modules); at most
    MAX_BLOCKS_PER_FILE per file. Items are written shortest first: lm-eval batches rolling windows in document
    order, so similar lengths pad less (``mm_prose_bpb`` pays for its unsorted order, docs/results.md attempt 5).
    """
    training_text = _training_code()
    training_lines = {ln.strip() for ln in training_text.split("\n")}
    lo, hi = CODE_BLOCK_CHARS
    candidates = []
    for key, path in heldout_code_files():
        text = read_source(path)
        if not text:
            continue
        for block in clean_code(text).split("\n\n"):
            block = block.strip("\n")
            if (lo <= len(block) <= hi and block.isascii() and block not in training_text
                    and not any(len(ln.strip()) >= COPIED_LINE_CHARS and ln.strip() in training_lines
                                for ln in block.split("\n"))):
                candidates.append((key, block))
    candidates = sorted(set(candidates))
    rng.shuffle(candidates)
    chosen = sorted(_first_distinct(candidates, n, MAX_BLOCKS_PER_FILE), key=lambda kb: (len(kb[1]), kb))
    return [{"id": i, "text": block, "source": f"stdlib:{key}"} for i, (key, block) in enumerate(chosen)]


# ---------------------------------------------------------------- facts
def build_facts(rng: random.Random, n: int) -> list[dict]:
    pools = ft.fact_pools()
    core = list(ft.core_facts())
    assert len(core) >= n, (len(core), n)
    rng.shuffle(core)
    items = []
    for fact in core[:n]:
        answers = sorted({f.response for f in pools[fact.template]} - {fact.response})
        items.append(_item(rng, len(items), ft.SFT_PROMPT.format(instruction=fact.instruction), fact.response,
                           rng.sample(answers, 3), f"pycountry:{fact.template}"))
    return items


BUILDERS = {"mm_math": build_math, "mm_code": build_code, "mm_prose": build_prose, "mm_facts": build_facts, "mm_arith_words": build_arith_words,
            "mm_prose_bpb": build_prose_bpb, "mm_code_bpb": build_code_bpb}


def task_yaml(name: str) -> str:
    # The header names core.evaluate, the module's name before issue 17 moved it to core/evaluation/harness.py:
    # every byte of a task YAML is in its evaluation fingerprint, so editing the comment would rescore every
    # stored evaluation. Change it together with a deliberate rescoring (e.g. lm-eval `include:` templates).
    capability, description = TASKS[name]
    return f"""# {description}
# capability: {capability}. Generated by scripts/build_benchmarks.py; see docs/data.md.
# data_files is relative to this file; mergemix_dagster.core.evaluate makes it absolute.
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/{name}.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: query
doc_to_choice: choices
doc_to_target: gold
target_delimiter: ""
num_fewshot: 0
process_results: !function mm_metrics.process_results
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
  - metric: gold_prob
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
  capability: {capability}
"""


def rolling_task_yaml(name: str) -> str:
    capability, description = TASKS[name]
    return f"""# {description}
# capability: {capability}. Generated by scripts/build_benchmarks.py; see docs/data.md.
# data_files is relative to this file; mergemix_dagster/core/evaluation/harness.py makes it absolute.
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/{name}.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
num_fewshot: 0
process_results: !function mm_metrics.process_results_rolling
metric_list:
  - metric: byte_prob
    aggregation: mean
    higher_is_better: true
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
metadata:
  version: 1.0
  capability: {capability}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "mergemix_dagster" / "tasks")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    (args.out / "data").mkdir(parents=True, exist_ok=True)
    for name, build in BUILDERS.items():
        rng = random.Random(f"{name}/{args.seed}")
        items = build(rng, N_ITEMS[name])
        if len(items) < N_ITEMS[name]:
            print(f"warning: {name}: only {len(items)} items", file=sys.stderr)
        with open(args.out / "data" / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as fh:
            for it in items:
                fh.write(json.dumps(it, ensure_ascii=True, sort_keys=True) + "\n")
        (args.out / f"{name}.yaml").write_text((rolling_task_yaml if name in ROLLING else task_yaml)(name), encoding="utf-8")
        print(f"{name}: {len(items)} items")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
