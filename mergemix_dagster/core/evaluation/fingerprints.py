"""The identity of an evaluation: what a score was computed under, so a score is reused only under the same
task files, metric and item limit (rows scored under other settings are rescored, never mixed).

``ROW_FORMAT`` versions what a stored row holds besides its score. ``items:1``: rows carry the per-item metric
values (``evaluations.item_values``) that the paired resolution rule (``steps/search_inputs.py``) compares
mixtures on. Rows stored before that have no items; hashing the format into the fingerprint makes them stale,
so the existing machinery (``runner/plan.py`` ``stale_evaluations``, ``steps/proxy_scoring.finished_fingerprints``,
``resources/artifacts.configured_rows``) rescores them once instead of silently using them without items
(which would quietly send every capability to the unpaired fallback rule).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from mergemix_dagster.core.evaluation.harness import default_tasks_dir, task_file_contents, task_yaml_paths

if TYPE_CHECKING:  # pragma: no cover
    from mergemix_dagster.core.settings import Settings

#: What a stored evaluation row holds (see the module docstring); a new value rescores every stored row once.
ROW_FORMAT = "items:1"


def evaluation_fingerprints(s: Settings, heldout: bool = False) -> dict[str, str]:
    """task -> hash of its YAML and data files' bytes, its metric, ``evaluation.limit`` and ``ROW_FORMAT``,
    and, for an evaluator other than ``embedded``, the evaluator's identity (kind, command, image): a team's
    command may score the same task differently, so its rows are never taken for the embedded ones. The
    embedded evaluator adds nothing, so fingerprints of homes built before evaluator kinds existed hold."""
    tasks_dir = Path(s.evaluation.tasks_dir) if s.evaluation.tasks_dir else default_tasks_dir()
    index = task_yaml_paths(tasks_dir)
    out = {}
    for t in list(s.evaluation.tasks) + (list(s.validation.heldout_tasks) if heldout else []):
        h = hashlib.sha256(repr((t.name, t.metric, s.evaluation.limit)).encode())
        h.update(ROW_FORMAT.encode())
        identity = s.evaluator.identity()
        if identity is not None:
            h.update(repr(sorted(identity.items())).encode())
        path = index.get(t.name)
        if path is not None:
            for blob in task_file_contents(path):
                h.update(blob)
        out[t.name] = h.hexdigest()[:16]
    return out
