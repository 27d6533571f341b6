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

from typing import Any, Mapping

import torch
from torch import Tensor

from ..errors import CheckpointMismatchError
from ..mixture import Mixture
from .base import get_method
from .checks import check_compatible
from .inmemory import InMemoryMerger


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

    def __init__(
        self,
        model: torch.nn.Module,
        base_state: Mapping[str, Tensor],
        expert_states: Mapping[str, Mapping[str, Tensor]],
        method: str = "linear",
        base_config: dict | None = None,
        expert_configs: Mapping[str, dict] | None = None,
        **options: Any,
    ):
        self.model = model
        self.method = get_method(method, **options)
        self.domains = tuple(sorted(expert_states))
        self.pinned = torch.cuda.is_available()
        groups: dict[int, list[str]] = {}
        params: dict[int, torch.nn.Parameter] = {}
        for pname, p in model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(p), []).append(pname)
            params[id(p)] = p
        tied = {n for names in groups.values() if len(names) > 1 for n in names}
        check_compatible(base_state, expert_states, base_config, expert_configs, tied_keys=tied)
        self._slots = []
        used: set[str] = set()
        with torch.no_grad():
            for pid, names in groups.items():
                key = next(
                    (n for n in names if n in base_state and all(n in s for s in expert_states.values())), None
                )
                if key is None:
                    raise CheckpointMismatchError(
                        f"model parameter {names[0]!r} is not in the base and expert state dicts"
                    )
                used.update(n for n in names if n in base_state)
                p = params[pid]
                if tuple(base_state[key].shape) != tuple(p.shape):
                    raise CheckpointMismatchError(
                        f"parameter {key!r}: the state dicts have shape {tuple(base_state[key].shape)}, "
                        f"the model has {tuple(p.shape)}"
                    )
                base_t = base_state[key].to(device=p.device, copy=True)
                prepared = self.method.prepare(
                    key, base_t, [expert_states[d][key].to(p.device) for d in self.domains], keys=self.domains
                )
                self._slots.append((p, key, move(base_t, "cpu", self.pinned), move(prepared, "cpu", self.pinned)))
        buffers = {n for n, _ in model.named_buffers()}
        unknown = sorted(set(base_state) - used - buffers)
        if unknown:
            raise CheckpointMismatchError(f"base state has parameter {unknown[0]!r} that the model does not have")

    @torch.no_grad()
    def apply(self, mixture: Mixture) -> None:
        """Overwrite the model's parameters with the merge at ``mixture``, one parameter at a time."""
        weights = self.weights_for(mixture)
        for p, key, base_t, prepared in self._slots:
            base_d = base_t.to(p.device, non_blocking=self.pinned)
            p.copy_(self.method.combine(key, base_d, move(prepared, p.device), weights))

    def __repr__(self) -> str:
        return f"OffloadedMerger({self.method!r}, domains={self.domains}, parameters={len(self._slots)})"
