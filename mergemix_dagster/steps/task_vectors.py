"""The experts' task vectors as the search sees them: ‖Δ‖/‖base‖ and the cosines between the Δ = expert − base.

The merge method assumes small, not too conflicting updates (MergeMix Appendix B); these two numbers say how far
a run's experts are from that regime, so every optimize run shows them (``merge_candidates`` metadata and
``candidates.json``, ``mergemix report``), not only the validation study. The checkpoints are read lazily, one
tensor of each at a time (``core/merge/streaming/reader.py``): the cost is one pass over K + 1 checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch

from mergemix_dagster.core.evaluation.fidelity import (
    TaskVectorDiagnostics,
    task_vector_diagnostics,
)
from mergemix_dagster.core.merge.streaming.reader import CheckpointReader
from mergemix_dagster.resources import CheckpointStore
from mergemix_dagster.resources.artifacts import base_checkpoint, expert_checkpoint_dir


class _LazyState(Mapping):
    """A checkpoint's tensors as a mapping that reads each tensor when asked for it."""

    def __init__(self, reader: CheckpointReader) -> None:
        self.reader = reader

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.reader.tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.reader.entries)

    def __len__(self) -> int:
        return len(self.reader.entries)


def stage_task_vectors(store: CheckpointStore, stage: str, domains: Sequence[str]) -> TaskVectorDiagnostics:
    """Task-vector diagnostics of the stage's base and its experts (one per domain)."""
    readers = [CheckpointReader(base_checkpoint(store, stage)[0])]
    try:
        for d in domains:
            readers.append(CheckpointReader(expert_checkpoint_dir(store, stage, d)[0]))
        base, experts = readers[0], readers[1:]
        return task_vector_diagnostics(_LazyState(base), {d: _LazyState(r) for d, r in zip(domains, experts)})
    finally:
        for r in readers:
            r.close()


def as_json(diag: TaskVectorDiagnostics) -> dict:
    return {"domains": list(diag.domains), "cosine": [[round(float(x), 6) for x in row] for row in diag.cosine],
            "relative_update": {d: round(float(v), 6) for d, v in diag.relative_update.items()}}


def markdown(payload: Mapping) -> str:
    """The table of ``as_json``'s output: cosines between the task vectors and ‖Δ‖/‖base‖ per expert."""
    domains = list(payload["domains"])
    lines = ["| | " + " | ".join(domains) + " | ‖Δ‖/‖base‖ |", "|---" * (len(domains) + 2) + "|"]
    for i, d in enumerate(domains):
        cells = " | ".join(f"{float(x):.3f}" for x in payload["cosine"][i])
        lines.append(f"| {d} | {cells} | {float(payload['relative_update'][d]):.4f} |")
    return "\n".join(lines)


__all__ = ["as_json", "markdown", "stage_task_vectors"]
