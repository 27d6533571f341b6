"""The token plan: how many tokens and epochs each domain gets when the target run trains on a mixture.

A domain with weight ``α_d`` in a run of ``T`` tokens is trained on ``α_d·T`` tokens; with ``N_d`` tokens
available that is ``α_d·T / N_d`` passes over its data. Past a few passes repeated data stops helping (and
starts to hurt), so a domain planned beyond ``max_epochs`` is flagged and warned about. Names are flat
mixture names: a domain (``math``) or a sub-domain (``code/repos``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from tabulate import tabulate

from mergemix_dagster.core.errors import OverRepetitionWarning, TokenPlanError
from mergemix_dagster.core.mixture import Mixture

EPOCH_TOLERANCE = 1e-9


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Integers proportional to ``weights`` that sum to ``total`` exactly (largest remainder)."""
    scale = math.fsum(weights)
    if total < 0 or scale <= 0:
        raise ValueError(f"cannot apportion {total} over weights {list(weights)}")
    quotas = [total * w / scale for w in weights]
    parts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (parts[i] - quotas[i], i))
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


@dataclass(frozen=True)
class Allocation:
    """One name's share of the target run."""

    name: str
    weight: float
    tokens: int
    available_tokens: int
    epochs: float
    available_documents: int | None = None

    @property
    def mean_document_tokens(self) -> float | None:
        if not self.available_documents:
            return None
        return self.available_tokens / self.available_documents


@dataclass(frozen=True)
class TokenPlan:
    """Tokens and epochs per name for a target run of ``target_tokens`` capped at ``max_epochs`` passes."""

    target_tokens: int
    max_epochs: float
    allocations: tuple[Allocation, ...]

    @property
    def weights(self) -> dict[str, float]:
        return {a.name: a.weight for a in self.allocations}

    @property
    def over_repeated(self) -> tuple[str, ...]:
        """Names whose planned epochs exceed ``max_epochs``."""
        return tuple(a.name for a in self.allocations if a.epochs > self.max_epochs + EPOCH_TOLERANCE)

    def allocation(self, name: str) -> Allocation:
        for a in self.allocations:
            if a.name == name:
                return a
        raise TokenPlanError(f"no allocation for {name!r}; planned: {[a.name for a in self.allocations]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_tokens": self.target_tokens,
            "max_epochs": self.max_epochs,
            "over_repeated": list(self.over_repeated),
            "allocations": [asdict(a) for a in self.allocations],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TokenPlan":
        return cls(
            target_tokens=int(data["target_tokens"]),
            max_epochs=float(data["max_epochs"]),
            allocations=tuple(Allocation(**a) for a in data["allocations"]),
        )

    def to_markdown(self) -> str:
        """A table for the Dagster UI and reports; over-repeated rows are marked."""
        rows = [
            [
                a.name,
                f"{a.weight:.4f}",
                human_tokens(a.tokens),
                human_tokens(a.available_tokens),
                f"{a.epochs:.2f}" + (" ⚠" if a.name in self.over_repeated else ""),
            ]
            for a in self.allocations
        ]
        headers = ["name", "weight", "tokens", "available", "epochs"]
        table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
        head = f"Target run: {human_tokens(self.target_tokens)} tokens, at most {self.max_epochs:g} epochs per domain."
        if self.over_repeated:
            head += f" Over the cap: {', '.join(self.over_repeated)}."
        return f"{head}\n\n{table}\n"


def human_tokens(n: int) -> str:
    """``1234567`` -> ``1.23M``: token counts a reader takes in at a glance."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def plan_tokens(
    weights: Mapping[str, float],
    target_tokens: int,
    available_tokens: Mapping[str, int],
    max_epochs: float,
    available_documents: Mapping[str, int] | None = None,
) -> TokenPlan:
    """Split ``target_tokens`` by ``weights`` (exact integer tokens) and count the epochs of each name.

    ``available_tokens`` (and, optionally, ``available_documents``, which lets the Hugging Face export turn
    token shares into per-document probabilities) must cover every weighted name. Emits an
    ``OverRepetitionWarning`` naming every name planned beyond ``max_epochs``.
    """
    mixture = Mixture.from_dict(weights)
    if target_tokens is None or target_tokens <= 0:
        raise TokenPlanError(f"target tokens must be a positive integer (settings target.tokens), got {target_tokens}")
    if max_epochs <= 0:
        raise TokenPlanError(f"max_epochs must be positive, got {max_epochs}")
    missing = [d for d in mixture.domains if d not in available_tokens]
    if missing:
        raise TokenPlanError(f"no available token count for {missing}; counted: {sorted(available_tokens)}")
    clipped = [max(w, 0.0) for w in mixture.weights]
    tokens = apportion(int(target_tokens), clipped)
    allocations = []
    for name, weight, planned in zip(mixture.domains, clipped, tokens):
        available = int(available_tokens[name])
        if available <= 0:
            raise TokenPlanError(f"{name!r} has {available} available tokens; count its corpus first")
        documents = None if available_documents is None else available_documents.get(name)
        allocations.append(Allocation(name, weight, planned, available, planned / available, documents))
    plan = TokenPlan(int(target_tokens), float(max_epochs), tuple(allocations))
    if plan.over_repeated:
        detail = ", ".join(f"{n} {plan.allocation(n).epochs:.2f}" for n in plan.over_repeated)
        warnings.warn(
            OverRepetitionWarning(f"epochs above the cap of {max_epochs:g}: {detail}"), stacklevel=2
        )
    return plan
