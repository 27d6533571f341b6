"""Scores from lm-eval's results JSON, as an evaluation command of the team writes it (``evaluator.kind``
other than ``embedded``), validated before any row is written.

The contract (docs/cluster.md): when the command exits 0, ``{output}`` holds lm-eval's results file
(``results*.json`` anywhere below it, as ``lm_eval --output_path`` writes it: ``<output>/<model>/results_<time>.json``;
the newest one is read) with ``results[<task>]["<metric>,<filter>"]`` for every configured task and metric
(filter ``none`` preferred, else the only one there). Every value must be a finite number; a missing file, task
or metric, or a NaN/inf, is an ``EvaluatorOutputError`` naming it. The stderr (``<metric>_stderr,<filter>``)
is kept when finite. Per-item values are read from the ``samples_<task>_*.jsonl`` files lm-eval writes beside
the results with ``--log_samples`` (kept only when their mean is the score, ``core.evaluation.samples``);
without them a score has no items and paired comparisons fall back to the unpaired rule.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from collections.abc import Sequence

from mergemix_dagster.core.errors import EvaluatorOutputError
from mergemix_dagster.core.evaluation.harness import BenchmarkScore, TaskSpec
from mergemix_dagster.core.evaluation.samples import item_values


def results_file(output: Path) -> Path:
    """The newest ``results*.json`` under ``output`` (or ``output`` itself when it is that file)."""
    output = Path(output)
    if output.is_file():
        return output
    found = sorted(output.rglob("results*.json"), key=lambda p: (p.stat().st_mtime, str(p))) if output.is_dir() else []
    if not found:
        raise EvaluatorOutputError(f"no lm-eval results JSON (results*.json) under {output}: the evaluation "
                                   "command must write lm-eval's results there (--output_path {output})")
    return found[-1]


def _metric_key(row: dict, metric: str) -> str | None:
    if f"{metric},none" in row:
        return f"{metric},none"
    keys = [k for k in row if k.split(",")[0] == metric and not k.endswith("_stderr")]
    return keys[0] if len(keys) == 1 else None


def _samples(folder: Path, task: str) -> list[dict] | None:
    files = sorted(folder.glob(f"samples_{task}_*.jsonl"))
    if not files:
        return None
    lines = files[-1].read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def read_lm_eval_scores(output: Path, tasks: Sequence[TaskSpec]) -> list[BenchmarkScore]:
    """One score per configured task from the results JSON under ``output``; ``EvaluatorOutputError`` unless
    every task and metric is there and finite."""
    path = results_file(output)
    try:
        results = json.loads(path.read_text(encoding="utf-8")).get("results")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise EvaluatorOutputError(f"{path} is not lm-eval's results JSON: {exc}") from exc
    if not isinstance(results, dict):
        raise EvaluatorOutputError(f"{path} has no `results` object (not lm-eval's results JSON)")
    scores = []
    for spec in tasks:
        row = results.get(spec.name)
        if not isinstance(row, dict):
            raise EvaluatorOutputError(f"{path}: task {spec.name!r} is missing (found: {sorted(results)})")
        key = _metric_key(row, spec.metric)
        if key is None:
            raise EvaluatorOutputError(f"{path}: task {spec.name!r} has no metric {spec.metric!r} "
                                       f"(found: {sorted(k for k in row if ',' in k)})")
        value = row[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise EvaluatorOutputError(f"{path}: {spec.name} {key} is {value!r}, not a finite number")
        metric, _, filter_key = key.partition(",")
        stderr = row.get(f"{metric}_stderr,{filter_key}")
        stderr = float(stderr) if isinstance(stderr, numbers.Real) and math.isfinite(stderr) else None
        items = item_values(_samples(path.parent, spec.name), spec.metric, float(value), filter_key or "none")
        scores.append(BenchmarkScore(spec.name, spec.metric, float(value), spec.capability, stderr, items))
    return scores


__all__ = ["read_lm_eval_scores", "results_file"]
