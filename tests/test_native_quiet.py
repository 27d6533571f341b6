"""A documented command prints each kind of lm-eval warning once per process, however many evaluators it builds."""

from __future__ import annotations

import logging
from collections import Counter

from mergemix_dagster.core import evaluate


def test_each_warning_kind_is_printed_once_per_process_and_counted_per_evaluator(monkeypatch):
    monkeypatch.setattr(evaluate, "_PRINTED_KINDS", set())
    first, second = Counter(), Counter()
    filters = [evaluate._RepeatedWarnings(first), evaluate._RepeatedWarnings(second)]  # e.g. candidates, rounds

    def passes(f, n: int) -> bool:
        record = logging.LogRecord("lm_eval.models.huggingface", logging.WARNING, __file__, 1,
                                   f"Truncating {n} tokens from the left.", None, None)
        return f.filter(record)

    printed = [passes(filters[0], 95), passes(filters[0], 12), passes(filters[1], 95), passes(filters[1], 7)]
    assert printed == [True, False, False, False]
    assert first == second == Counter({"Truncating # tokens from the left.": 2})
    other = logging.LogRecord("lm_eval", logging.WARNING, __file__, 1, "another kind", None, None)
    assert filters[1].filter(other)  # a new kind still gets through once
