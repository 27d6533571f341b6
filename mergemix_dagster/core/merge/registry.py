"""The merge-method interface and its registry.

Notation: base weights Θ_base, expert weights Θ_k, task vectors δ_k = Θ_k − Θ_base, merge
weights α_k (a point on the simplex). A method turns one parameter tensor of the base and of
every expert into one merged tensor.

A method is split into two steps so the in-memory merger can cache the expensive, α-independent
part once and re-merge any α quickly:

- ``prepare(name, base, experts)``: everything that does not depend on α (stacked experts,
  trimmed or dropped task vectors);
- ``combine(name, base, prepared, weights)``: the α-dependent part.

``merge_tensor = combine ∘ prepare``; the streaming and in-memory paths both use these two
functions, so they give bit-identical weights.

Adding a method = adding one module in this package that defines a class with ``name``,
``prepare`` and ``combine`` and decorates it with ``@register``. Modules of this package are
discovered automatically.

Optional, for elementwise methods (merged element i depends only on element i of the base and of
the experts, e.g. ``linear``): set ``elementwise = True`` and define
``combine_block(base, experts, weights, out)``, which writes the merge of one block into ``out``
with the *same* elementwise operations as ``combine``, so a tensor merged block by block is
bit-identical to ``combine`` on the whole tensor. The streaming path then merges such methods in
small cache-resident blocks instead of materialising whole tensors. Methods that need the whole
tensor (``ties``: top-k trimming; ``dare``: a seeded mask over the whole tensor) leave
``elementwise = False``. ``nonfinite_propagates(weights)`` may return True when a NaN/inf in any
input always makes the merged element NaN/inf: the streaming path then checks finiteness on the
output block alone (1 block instead of K + 1).

Expert order: callers pass experts in sorted domain-name order (``canonical_domains``) together
with ``keys`` (the domain names), so a result never depends on mapping order. DARE keys its
random masks by ``(seed, parameter name, domain name)``, so masks do not depend on order or on
which other domains take part (by index when ``keys`` is None).
Float16/bfloat16 tensors are merged in float32 and cast back to the base dtype.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from mergemix_dagster.core.errors import ConfigError

_REGISTRY: dict[str, type] = {}


@runtime_checkable
class MergeMethod(Protocol):
    name: str

    def prepare(self, name: str, base: Tensor, experts: Sequence[Tensor], keys: Sequence[str] | None = None) -> Any: ...

    def combine(self, name: str, base: Tensor, prepared: Any, weights: Sequence[float]) -> Tensor: ...

    def merge_tensor(
        self,
        name: str,
        base: Tensor,
        experts: Sequence[Tensor],
        weights: Sequence[float],
        keys: Sequence[str] | None = None,
    ) -> Tensor: ...


class MergeMethodBase:
    """Shared ``merge_tensor``; subclasses define ``name``, ``prepare`` and ``combine``."""

    name: str = ""
    #: True when ``combine_block`` is implemented (see the module docstring)
    elementwise: bool = False

    def combine_block(self, base: Tensor, experts: Tensor, weights: Sequence[float], out: Tensor) -> None:  # pragma: no cover
        """``out`` ← the merge of one block. Only for ``elementwise`` methods.

        ``base`` and ``out``: 1-D, m elements; ``experts``: (K, m), a scratch copy of the experts'
        block that the method may overwrite; all in the computation dtype (``compute_dtype``).
        """
        raise NotImplementedError

    def nonfinite_propagates(self, weights: Sequence[float]) -> bool:
        """True if a NaN/inf in any input always gives a NaN/inf merged element at these weights."""
        return False

    def prepare(
        self, name: str, base: Tensor, experts: Sequence[Tensor], keys: Sequence[str] | None = None
    ) -> Any:  # pragma: no cover
        raise NotImplementedError

    def combine(self, name: str, base: Tensor, prepared: Any, weights: Sequence[float]) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def merge_tensor(
        self,
        name: str,
        base: Tensor,
        experts: Sequence[Tensor],
        weights: Sequence[float],
        keys: Sequence[str] | None = None,
    ) -> Tensor:
        """The merged tensor, in ``base.dtype``. ``keys`` name the experts (domains), same order."""
        if len(experts) != len(weights):
            raise ConfigError(f"{name}: {len(experts)} expert tensors but {len(weights)} weights")
        return self.combine(name, base, self.prepare(name, base, experts, keys), weights)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"


def register(cls: type) -> type:
    """Class decorator: make a merge method available to ``get_method`` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise ConfigError(f"merge method class {cls.__name__} needs a string `name`")
    existing = _REGISTRY.get(name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ConfigError(f"two merge methods named {name!r}: {existing.__qualname__} and {cls.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    """Import every module of ``core/merge/methods/`` so their ``@register`` decorators run: adding a method is
    adding a file there."""
    package = __name__.rsplit(".", 1)[0] + ".methods"
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def known_methods() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_method(name: str, **options: Any) -> MergeMethod:
    """The merge method registered as ``name``, built with ``options`` (e.g. ``density=0.2``)."""
    _discover()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(f"unknown merge method {name!r}; known methods: {', '.join(sorted(_REGISTRY))}")
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError(f"bad options for merge method {name!r}: {options} ({e})") from e


def canonical_domains(mixture_domains: Sequence[str], expert_names: Sequence[str]) -> tuple[str, ...]:
    """Sorted domain names; ``ConfigError`` unless the mixture's domains are exactly the experts'."""
    m, e = set(mixture_domains), set(expert_names)
    if m != e:
        raise ConfigError(
            f"mixture domains do not match the experts: mixture has {sorted(m)}, experts are {sorted(e)}"
            + (f"; no expert for {sorted(m - e)}" if m - e else "")
            + (f"; no weight for expert(s) {sorted(e - m)}" if e - m else "")
        )
    return tuple(sorted(e))


# ---- helpers shared by methods ----------------------------------------------------------------


def compute_dtype(t: Tensor) -> torch.dtype:
    """float32 for half-precision inputs, otherwise the tensor's own floating dtype."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def weights_tensor(weights: Sequence[float], like: Tensor) -> Tensor:
    """α as a (K, 1, ..., 1) tensor broadcastable against a stacked (K, *shape) tensor."""
    w = torch.tensor([float(a) for a in weights], dtype=like.dtype, device=like.device)
    return w.view(-1, *([1] * (like.dim() - 1)))


def chunk_elements(t: Tensor) -> int:
    """Elements per chunk when a method combines a big tensor piece by piece to bound its temporaries."""
    return (1 << 20) if t.device.type == "cpu" else (1 << 24)


def accumulate(terms: Sequence[Tensor]) -> Tensor:
    """Σ terms, added one at a time in order: ((t_0 + t_1) + t_2) + ... (a fixed, documented order)."""
    total = terms[0].clone()
    for t in terms[1:]:
        total = total + t
    return total


def expert_keys(keys: Sequence[str] | None, n: int) -> list[str]:
    return [str(k) for k in keys] if keys is not None else [str(i) for i in range(n)]


def vertex_index(weights: Sequence[float]) -> int | None:
    """Index k if α is exactly the k-th vertex (α_k = 1, others 0), else None."""
    nonzero = [i for i, a in enumerate(weights) if a != 0.0]
    if len(nonzero) == 1 and weights[nonzero[0]] == 1.0:
        return nonzero[0]
    return None
