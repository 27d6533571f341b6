"""The identity of an evaluation: what a score was computed under, so a score is reused only under the same
task files, metric and item limit (rows scored under other settings are rescored, never mixed)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from mergemix_dagster.core.evaluation.harness import default_tasks_dir, task_file_contents, task_yaml_paths

if TYPE_CHECKING:  # pragma: no cover
    from mergemix_dagster.core.settings import Settings


def evaluation_fingerprints(s: Settings, heldout: bool = False) -> dict[str, str]:
    """task -> hash of its YAML and data files' bytes, its metric and ``evaluation.limit``."""
    tasks_dir = Path(s.evaluation.tasks_dir) if s.evaluation.tasks_dir else default_tasks_dir()
    index = task_yaml_paths(tasks_dir)
    out = {}
    for t in list(s.evaluation.tasks) + (list(s.validation.heldout_tasks) if heldout else []):
        h = hashlib.sha256(repr((t.name, t.metric, s.evaluation.limit)).encode())
        path = index.get(t.name)
        if path is not None:
            for blob in task_file_contents(path):
                h.update(blob)
        out[t.name] = h.hexdigest()[:16]
    return out
