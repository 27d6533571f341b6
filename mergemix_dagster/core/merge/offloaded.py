"""Re-merge a device model in place while the base and the task vectors stay in CPU memory.

``InMemoryMerger`` keeps the base and K experts (or their prepared task vectors) on the model's device:
(K + 2) × the model in device memory. A model that does not fit twice on a GPU cannot do that.
``OffloadedMerger`` keeps them in CPU memory (page-locked when CUDA is available, so host-to-device copies
are fast) and, for each parameter in turn, copies that parameter's inputs to the device, combines them
there and writes the result into the parameter. Device memory beyond the model: the inputs of one
parameter (K + 1 tensors) and the method's temporaries.

Bit-identical to ``InMemoryMerger`` on the same device: ``prepare`` runs on the model's device, one
parameter at a time (its result then moves to CPU, bytes unchanged), and ``combine`` runs on the model's
device on the same bytes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.merge.inmemory import InMemoryMerger


def move(value: Any, device: torch.device | str, pin: bool = False) -> Any:
    """``value`` (a tensor, or tuples / lists / dicts of them) on ``device``; page-locked when ``pin``."""
    if isinstance(value, Tensor):
        moved = value.to(device=device)
        return moved.pin_memory() if pin else moved
    if isinstance(value, (tuple, list)):
        return type(value)(move(v, device, pin) for v in value)
    if isinstance(value, dict):
        return {k: move(v, device, pin) for k, v in value.items()}
    return value


class OffloadedMerger(InMemoryMerger):
    """An ``InMemoryMerger`` whose base and task vectors live in (pinned) CPU memory, applied tensor by tensor.

    Same constructor and methods as ``InMemoryMerger``; the state dicts may be on CPU (the cheap case).
    """

    def __init__(self, model: torch.nn.Module, *args: Any, **kwargs: Any):
        self.pinned = torch.cuda.is_available()
        super().__init__(model, *args, **kwargs)

    def _keep(self, base_t: Tensor, prepared: Any) -> tuple[Tensor, Any]:
        """Prepared on the model's device (same numbers as ``InMemoryMerger``), then kept in CPU memory."""
        return move(base_t, "cpu", self.pinned), move(prepared, "cpu", self.pinned)

    @torch.no_grad()
    def apply(self, mixture: Mixture) -> None:
        """Overwrite the model's parameters with the merge at ``mixture``, one parameter at a time."""
        weights = self.weights_for(mixture)
        for p, key, base_t, prepared in self._slots:
            base_d = base_t.to(p.device, non_blocking=self.pinned)
            p.copy_(self.method.combine(key, base_d, move(prepared, p.device), weights))

    def __repr__(self) -> str:
        return f"OffloadedMerger({self.method!r}, domains={self.domains}, parameters={len(self._slots)})"
