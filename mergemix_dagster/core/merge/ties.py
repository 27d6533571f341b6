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

from ..errors import ConfigError
from .base import MergeMethodBase, compute_dtype, register, weights_tensor


def trim_by_magnitude(delta: Tensor, density: float) -> Tensor:
    """δ with all but its top ``max(1, int(density · n))`` entries by |δ| set to zero."""
    if density >= 1.0 or delta.numel() == 0:
        return delta.clone()
    flat = delta.reshape(-1)
    k = max(1, int(density * flat.numel()))
    keep = torch.topk(flat.abs(), k, sorted=False).indices
    out = torch.zeros_like(flat)
    out[keep] = flat[keep]
    return out.view_as(delta)


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
        # trimmed task vectors δ̂_k in the computation dtype: (K, *shape)
        return torch.stack([trim_by_magnitude(e.to(device=b.device, dtype=c) - b, self.density) for e in experts])

    def combine(self, name: str, base: Tensor, prepared: Tensor, weights: Sequence[float]) -> Tensor:
        c = compute_dtype(base)
        w = weights_tensor(weights, prepared)
        weighted = w * prepared  # α_k δ̂_k
        elected = torch.sign(weighted.sum(dim=0))
        agree = torch.sign(weighted) == elected
        agree &= elected != 0
        mixed = (weighted * agree).sum(dim=0)
        if self.normalize:
            divisor = (w * agree).sum(dim=0)
            divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
            mixed = mixed / divisor
        return (base.to(c) + mixed).to(base.dtype)
