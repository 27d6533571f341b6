"""Model merging: Θ = merge(Θ_base, {Θ_k}, α) with a method chosen by name.

Three ways in, one per-tensor function underneath (``MergeMethod.prepare`` + ``combine``), so all
three give bit-identical weights on the same device:

- ``merge_state_dicts``: state dicts in memory → merged state dict;
- ``InMemoryMerger``: writes merged weights into a loaded model's parameters for any α (fast
  re-merge for scoring many candidates without writing checkpoints);
- ``merge_checkpoints``: checkpoint directories → merged checkpoint, in small blocks for
  elementwise methods (``linear``), tensor by tensor for the others.

Methods (one file each, registered by name): ``linear`` (default, task arithmetic), ``ties``,
``dare``. See ``get_method`` / ``known_methods``.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.merge.registry import MergeMethod, MergeMethodBase, canonical_domains, get_method, known_methods, register
from mergemix_dagster.core.merge.compatibility import check_compatible
from mergemix_dagster.core.merge.inmemory import InMemoryMerger
from mergemix_dagster.core.merge.streaming import merge_checkpoints

__all__ = [
    "InMemoryMerger",
    "MergeMethod",
    "MergeMethodBase",
    "check_compatible",
    "get_method",
    "known_methods",
    "merge_checkpoints",
    "merge_state_dicts",
    "register",
]


def merge_state_dicts(
    base: Mapping[str, Tensor],
    experts: Mapping[str, Mapping[str, Tensor]],
    mixture: Mixture,
    method: str = "linear",
    base_config: dict | None = None,
    expert_configs: Mapping[str, dict] | None = None,
    check_finite: bool = True,
    **options: Any,
) -> dict[str, Tensor]:
    """Merged state dict (base dtypes, base key order) for merge weights ``mixture`` over ``experts``.

    ``mixture.domains`` must equal the expert names (``ConfigError``); compatibility is checked
    first (``CheckpointMismatchError`` / ``NonFiniteWeightsError``). ``options`` go to the method
    (e.g. ``density=0.2`` for ties, ``drop_rate=0.5, seed=0`` for dare). Keys present in the base
    but not in every expert (tied ``lm_head.weight`` aliases) are left out; non-floating tensors
    are copied from the base.
    """
    domains = canonical_domains(mixture.domains, list(experts))
    merger = get_method(method, **options)
    check_compatible(base, experts, base_config, expert_configs, check_finite=check_finite)
    weights = [mixture[d] for d in domains]
    out: dict[str, Tensor] = {}
    for name, b in base.items():
        if not all(name in experts[d] for d in domains):
            continue
        if not b.is_floating_point():
            out[name] = b.clone()
            continue
        out[name] = merger.merge_tensor(name, b, [experts[d][name] for d in domains], weights, keys=domains)
    return out
