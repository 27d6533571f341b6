"""TIES merging (Yadav et al., 2023), the mergekit variant with weights.

With task vectors δ_k = Θ_k − Θ_base and merge weights α_k (computed in float32 for fp16/bf16):

1. Trim (α-independent, done once in ``prepare``): keep the ``k = max(1, int(density · n))``
   entries of δ_k with the largest magnitude (``torch.topk`` on |δ_k|; ties at the threshold
   broken by ``topk``), zero the rest  →  δ̂_k.  ``density = 1`` keeps everything.
2. Elect a sign per element: s = sign(Σ_k α_k δ̂_k)  (mergekit ``consensus_method="sum"``).
3. Disjoint weighted mean over the experts that agree with the elected sign:
   agree_k = [sign(α_k δ̂_k) = s]  (a trimmed-away zero never agrees),

       Θ = Θ_base + Σ_k agree_k α_k δ̂_k / Σ_k agree_k α_k      (normalize=True, default)
       Θ = Θ_base + Σ_k agree_k α_k δ̂_k                         (normalize=False)

   where no expert agrees (all trimmed, or the weighted sum is exactly 0) the base is kept
   (divisor taken as 1 there, as in mergekit).

Defaults: ``density=0.2``, ``normalize=True``. Note that a vertex α = e_k gives
Θ_base + δ̂_k (the *trimmed* expert), not Θ_k.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.merge.registry import MergeMethodBase, chunk_elements, compute_dtype, register, weights_tensor


def trim_by_magnitude(delta: Tensor, density: float, out: Tensor | None = None) -> Tensor:
    """δ with all but its top ``max(1, int(density · n))`` entries by |δ| set to zero (into ``out`` if given)."""
    out = torch.empty_like(delta) if out is None else out
    if density >= 1.0 or delta.numel() == 0:
        return out.copy_(delta)
    flat = delta.reshape(-1)
    k = max(1, int(density * flat.numel()))
    keep = torch.topk(flat.abs(), k, sorted=False).indices
    dst = out.view(-1)
    dst.zero_()
    dst[keep] = flat[keep]
    return out


@register
class Ties(MergeMethodBase):
    name = "ties"

    def __init__(self, density: float = 0.2, normalize: bool = True):
        if not 0.0 < float(density) <= 1.0:
            raise ConfigError(f"ties density must be in (0, 1], got {density}")
        self.density = float(density)
        self.normalize = bool(normalize)

    def prepare(self, name: str, base: Tensor, experts: Sequence[Tensor], keys: Sequence[str] | None = None) -> Tensor:
        c = compute_dtype(base)
        b = base.to(c)
        # trimmed task vectors δ̂_k in the computation dtype: (K, *shape), one row written at a time
        out = torch.empty((len(experts), *base.shape), dtype=c, device=b.device)
        for i, e in enumerate(experts):
            trim_by_magnitude(e.to(device=b.device, dtype=c) - b, self.density, out=out[i])
        return out

    def combine(self, name: str, base: Tensor, prepared: Tensor, weights: Sequence[float]) -> Tensor:
        # elementwise given δ̂: done in chunks of the flattened tensor to bound the (K, chunk) temporaries
        c = compute_dtype(base)
        flat_p = prepared.reshape(len(prepared), -1)
        w = weights_tensor(weights, flat_p)  # (K, 1)
        flat_b = base.reshape(-1)
        out = torch.empty(base.shape, dtype=base.dtype, device=base.device)
        flat_out = out.view(-1)
        step = chunk_elements(prepared)
        for s in range(0, flat_b.numel(), step):
            flat_out[s : s + step] = self._combine(flat_b[s : s + step].to(c), flat_p[:, s : s + step], w)
        return out

    def _combine(self, b: Tensor, prepared: Tensor, w: Tensor) -> Tensor:
        weighted = w * prepared  # α_k δ̂_k
        elected = torch.sign(weighted.sum(dim=0))
        agree = torch.sign(weighted) == elected
        agree &= elected != 0
        mixed = (weighted * agree).sum(dim=0)
        if self.normalize:
            divisor = (w * agree).sum(dim=0)
            divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
            mixed = mixed / divisor
        return b + mixed
