"""Linear merging (task arithmetic), the default.

    Θ = Θ_base + Σ_k α_k · δ_k,     δ_k = Θ_k − Θ_base

computed exactly as written, in float32 for fp16/bf16 tensors (the computation dtype c is
float32 for half types, the tensor's own dtype otherwise), then cast back to the base dtype:

    b = c(Θ_base);  Θ = b + (((α_1·(c(Θ_1) − b)) + α_2·(c(Θ_2) − b)) + ...)

i.e. the task-vector terms are summed one at a time in expert order, then added to the base.
No renormalisation or scaling. At a vertex of the simplex (α_k = 1, all others 0) the expert's
tensor is returned unchanged: Θ_base + (Θ_k − Θ_base) is not always bit-equal to Θ_k in floating
point, but a vertex must reproduce the expert exactly.

``prepare`` keeps references to the experts in their own dtype (no copy, no precision lost); the
deltas are formed in ``combine`` one at a time and accumulated in place, so a merge holds one
running sum and one delta beyond its inputs.

Elementwise: ``combine_block`` runs the same operations, in the same order, on one block of
elements (used by the streaming path), so a blocked merge is bit-identical to ``combine``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from mergemix_dagster.core.merge.registry import MergeMethodBase, compute_dtype, register, vertex_index


@register
class Linear(MergeMethodBase):
    name = "linear"
    elementwise = True

    def prepare(
        self, name: str, base: Tensor, experts: Sequence[Tensor], keys: Sequence[str] | None = None
    ) -> tuple[Tensor, ...]:
        return tuple(e.to(device=base.device) for e in experts)

    def combine(self, name: str, base: Tensor, prepared: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
        k = vertex_index(weights)
        if k is not None:
            return prepared[k].to(dtype=base.dtype, copy=True)
        c = compute_dtype(base)
        b = base.to(c)
        total = None
        for i, a in enumerate(weights):
            delta = prepared[i].to(c) - b
            delta.mul_(float(a))  # same value as float(a) * delta, without another temporary
            total = delta if total is None else total.add_(delta)
        return total.add_(b).to(base.dtype)

    def combine_block(self, base: Tensor, experts: Tensor, weights: Sequence[float], out: Tensor) -> None:
        # the operations of ``combine``, elementwise and in the same order, on reused buffers:
        # δ_k = Θ_k − b (in place), α_k·δ_k, then ((α_1δ_1 + α_2δ_2) + ...) + b
        k = vertex_index(weights)
        if k is not None:
            out.copy_(experts[k])
            return
        experts.sub_(base)
        experts.mul_(self._alphas(weights, experts))  # row k times float(α_k), as mul_(float(a)) does
        if len(experts) == 1:
            out.copy_(experts[0])
        else:
            torch.add(experts[0], experts[1], out=out)
            for row in experts[2:]:
                out.add_(row)
        out.add_(base)

    def nonfinite_propagates(self, weights: Sequence[float]) -> bool:
        # sub, mul and add only: NaN/inf in an input reaches the output (0·inf = NaN), except at a
        # vertex, where the other experts are not used
        return vertex_index(weights) is None

    def _alphas(self, weights: Sequence[float], like: Tensor) -> Tensor:
        """α as a (K, 1) tensor in ``like``'s dtype and device, cached per merge."""
        key = (tuple(float(a) for a in weights), like.dtype, like.device)
        cached = getattr(self, "_alpha_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, torch.tensor(key[0], dtype=like.dtype, device=like.device).view(-1, 1))
            self._alpha_cache = cached
        return cached[1]
