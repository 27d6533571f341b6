"""Per-item metric values from lm-eval's logged samples (``evaluate(..., log_samples=True)``).

Every candidate mixture is scored on the same benchmark items, so a difference between two mixtures can be
judged item by item (``core.evaluation.paired``); that needs each item's value, not only the task mean.
lm-eval 0.4 returns ``out["samples"][task]``: one dict per (document, filter) with ``doc_id``, ``filter``
and the metric values ``process_results`` gave that document.

Items are kept only for metrics lm-eval aggregates by a plain mean (``acc``, ``acc_norm``, ``gold_prob``):
only then is the task score the average of its items, which is what a paired analysis of means assumes.
A perplexity or F1 item is not a number whose mean is the score, so such a metric gets ``None``.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any, Callable, Mapping, Sequence

LOG = logging.getLogger(__name__)

#: How far the mean of the items may sit from lm-eval's aggregate (float summation order only).
MEAN_TOLERANCE = 1e-9


def is_mean_aggregation(aggregation: Callable | None) -> bool:
    """Whether lm-eval aggregates a metric with its registered ``mean`` (the YAML's ``aggregation: mean``)."""
    if aggregation is None:
        return False
    try:
        from lm_eval.api.metrics import mean
    except ImportError:  # pragma: no cover - other lm-eval layouts
        return getattr(aggregation, "__name__", "") == "mean"
    return aggregation is mean


def item_values(
    samples: Sequence[Mapping[str, Any]] | None,
    metric: str,
    aggregate: float,
    filter_key: str = "none",
) -> tuple[float, ...] | None:
    """The per-item values of ``metric`` under ``filter_key``, ordered by ``doc_id``; None when unusable.

    Unusable: no samples, a value that is not a real number, a repeated ``doc_id``, or a mean that is not
    lm-eval's ``aggregate`` (then the items would describe another number than the score; logged).
    """
    if not samples:
        return None
    chosen = [s for s in samples if s.get("filter", filter_key) == filter_key]
    if not chosen or any(metric not in s or "doc_id" not in s for s in chosen):
        return None
    values: dict[int, float] = {}
    for s in sorted(chosen, key=lambda s: int(s["doc_id"])):
        v = s[metric]
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, numbers.Real):
            return None
        doc_id = int(s["doc_id"])
        if doc_id in values:
            return None
        values[doc_id] = float(v)
    items = tuple(values.values())
    mean = math.fsum(items) / len(items)
    if math.isfinite(aggregate) and not abs(mean - aggregate) <= MEAN_TOLERANCE * max(1.0, abs(aggregate)):
        LOG.warning("per-item %s values average %r, not lm-eval's %r: items dropped", metric, mean, aggregate)
        return None
    return items


def task_item_values(task: Any, samples: Mapping[str, Sequence] | None, name: str, metric: str,
                     aggregate: float) -> tuple[float, ...] | None:
    """``item_values`` of task ``name`` when lm-eval's task object aggregates ``metric`` by a mean."""
    try:
        aggregation = (task.aggregation() or {}).get(metric)
    except Exception:  # noqa: BLE001 - a task without aggregation info gets no items, not a failed evaluation
        aggregation = None
    if not is_mean_aggregation(aggregation):
        return None
    return item_values((samples or {}).get(name), metric, aggregate)


__all__ = ["MEAN_TOLERANCE", "is_mean_aggregation", "item_values", "task_item_values"]
