"""DARE (Yu et al., 2024, "Language Models are Super Mario"): drop and rescale, then linear.

With task vectors δ_k = Θ_k − Θ_base (float32 for fp16/bf16 tensors) and drop rate p:

    m_k ~ Bernoulli(1 − p) elementwise,   δ̃_k = m_k ⊙ δ_k / (1 − p)
    Θ = Θ_base + Σ_k α_k δ̃_k                      (summed in expert order, as ``linear``)

Default ``drop_rate=0.5`` (the paper drops up to 0.9 for large fine-tunes; our experts are short
continued-pre-training runs with dense task vectors, so a moderate rate is the safer default).
``drop_rate=0`` is exactly ``linear`` without its vertex special case.

Deterministic: the mask of expert k on parameter ``name`` comes from a CPU ``torch.Generator``
seeded with sha256(seed, name, expert key) (the expert key is the domain name when the caller
passes ``keys``, else the index), so it is the same on CPU and GPU, in the streaming and the
in-memory path, and independent of the other experts. Another ``seed`` gives other masks.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import Tensor

from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.merge.registry import MergeMethodBase, accumulate, chunk_elements, compute_dtype, expert_keys, register


def mask_seed(seed: int, name: str, key: str) -> int:
    digest = hashlib.sha256(f"{seed}\0{name}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def keep_mask(shape: torch.Size, drop_rate: float, seed: int, name: str, key: str) -> Tensor:
    """Boolean CPU mask, True with probability 1 − drop_rate."""
    g = torch.Generator(device="cpu")
    g.manual_seed(mask_seed(seed, name, key))
    return torch.rand(shape, generator=g, dtype=torch.float32) >= drop_rate


@register
class Dare(MergeMethodBase):
    name = "dare"

    def __init__(self, drop_rate: float = 0.5, seed: int = 0):
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ConfigError(f"dare drop_rate must be in [0, 1), got {drop_rate}")
        self.drop_rate = float(drop_rate)
        self.seed = int(seed)

    def prepare(self, name: str, base: Tensor, experts: Sequence[Tensor], keys: Sequence[str] | None = None) -> Tensor:
        c = compute_dtype(base)
        b = base.to(c)
        scale = 1.0 / (1.0 - self.drop_rate)
        out = torch.empty((len(experts), *base.shape), dtype=c, device=b.device)  # δ̃_k: (K, *shape)
        zero = torch.zeros((), dtype=c, device=b.device)
        for i, (key, e) in enumerate(zip(expert_keys(keys, len(experts)), experts)):
            delta = e.to(device=b.device, dtype=c) - b
            mask = keep_mask(delta.shape, self.drop_rate, self.seed, name, key).to(b.device)
            torch.where(mask, delta.mul_(scale), zero, out=out[i])
        return out

    def combine(self, name: str, base: Tensor, prepared: Tensor, weights: Sequence[float]) -> Tensor:
        # elementwise given δ̃: done in chunks of the flattened tensor to bound the temporaries
        c = compute_dtype(base)
        flat_p = prepared.reshape(len(prepared), -1)
        flat_b = base.reshape(-1)
        out = torch.empty(base.shape, dtype=base.dtype, device=base.device)
        flat_out = out.view(-1)
        step = chunk_elements(prepared)
        for s in range(0, flat_b.numel(), step):
            terms = [float(a) * flat_p[i, s : s + step] for i, a in enumerate(weights)]
            flat_out[s : s + step] = flat_b[s : s + step].to(c) + accumulate(terms)
        return out
