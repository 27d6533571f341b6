"""Re-merge a loaded model in place for any α: the fast path for scoring many merged proxies.

``InMemoryMerger`` keeps, on the model's device, the base tensors and each method's
α-independent ``prepare`` result (linear: the K expert tensors stacked in their own dtype; ties /
dare: the K trimmed / dropped task vectors in float32). Memory: (K + 1) × the model for
linear/bf16 checkpoints; ties/dare on half-precision checkpoints keep float32 task vectors
(2 × K × the model). ``apply(α)`` runs ``combine`` per parameter and ``copy_``s the result into
the parameter under ``torch.no_grad()``, so the model object, its hooks and any evaluator holding
it stay valid. The per-tensor functions are the ones of ``merge_state_dicts`` and
``merge_checkpoints``: the same α gives bit-identical weights on the same device.

Tied parameters (``lm_head.weight`` is ``model.embed_tokens.weight``) are one ``Parameter``: it
is written once, under whichever of its names the state dicts carry.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from mergemix_dagster.core.errors import CheckpointMismatchError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.merge.registry import canonical_domains, get_method
from mergemix_dagster.core.merge.compatibility import check_compatible


class InMemoryMerger:
    """Writes Θ_base ⊕_method {Θ_k} with weights α into ``model``'s parameters."""

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
        # one entry per distinct Parameter (tied weights share one), under a name the states carry
        groups: dict[int, list[str]] = {}
        params: dict[int, torch.nn.Parameter] = {}
        for pname, p in model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(p), []).append(pname)
            params[id(p)] = p
        tied = {n for names in groups.values() if len(names) > 1 for n in names}
        check_compatible(base_state, expert_states, base_config, expert_configs, tied_keys=tied)
        self._slots: list[tuple[torch.nn.Parameter, str, Tensor, Any]] = []
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
                self._slots.append((p, key, *self._keep(base_t, prepared)))
        buffers = {n for n, _ in model.named_buffers()}
        unknown = sorted(set(base_state) - used - buffers)
        if unknown:
            raise CheckpointMismatchError(f"base state has parameter {unknown[0]!r} that the model does not have")

    def _keep(self, base_t: Tensor, prepared: Any) -> tuple[Tensor, Any]:
        """Where a parameter's base and prepared task vectors are kept: on the model's device (subclasses move them)."""
        return base_t, prepared

    def weights_for(self, mixture: Mixture) -> list[float]:
        """α in this merger's (sorted) expert order; ``ConfigError`` if the domains differ."""
        canonical_domains(mixture.domains, self.domains)
        return [mixture[d] for d in self.domains]

    @torch.no_grad()
    def apply(self, mixture: Mixture) -> None:
        """Overwrite the model's parameters with the merge at ``mixture`` (α over the experts)."""
        weights = self.weights_for(mixture)
        for p, key, base_t, prepared in self._slots:
            p.copy_(self.method.combine(key, base_t, prepared, weights))

    @torch.no_grad()
    def restore_base(self) -> None:
        """Put the base weights back into the model."""
        for p, _, base_t, _ in self._slots:
            p.copy_(base_t)

    def __repr__(self) -> str:
        return f"InMemoryMerger({self.method!r}, domains={self.domains}, parameters={len(self._slots)})"
