"""From benchmark rows to capability scores: the (α, y) table the surrogates learn from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from mergemix_dagster.core.errors import MergeMixError


@dataclass(frozen=True)
class CapabilityTable:
    """One row per candidate: its α (columns ``domains``) and its score per capability."""

    candidate_ids: tuple[str, ...]
    domains: tuple[str, ...]
    capabilities: tuple[str, ...]
    alphas: np.ndarray  # (n, k)
    scores: dict[str, np.ndarray]  # capability -> (n,)

    def frame(self) -> pd.DataFrame:
        out = pd.DataFrame(self.alphas, columns=list(self.domains))
        out.insert(0, "candidate_id", list(self.candidate_ids))
        for cap in self.capabilities:
            out[cap] = self.scores[cap]
        return out


def capability_means(rows: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Average of benchmark values per capability: ``[(capability, value), ...] -> {capability: mean}``."""
    sums: dict[str, list[float]] = {}
    for capability, value in rows:
        sums.setdefault(capability, []).append(float(value))
    return {cap: float(np.mean(vals)) for cap, vals in sums.items()}


def capability_table(evaluations: pd.DataFrame, domains: Sequence[str], capabilities: Sequence[str]) -> CapabilityTable:
    """Pivot long ``evaluations`` rows (candidate_id, alpha, capability, value) into a capability table.

    Each candidate must have a score for every capability, else the table would silently drop it.
    """
    if evaluations.empty:
        raise MergeMixError("no evaluation rows to build a capability table from")
    per_cap = evaluations.groupby(["candidate_id", "capability"])["value"].mean().unstack("capability")
    missing = [c for c in capabilities if c not in per_cap.columns]
    if missing:
        raise MergeMixError(f"no evaluations for capabilities {missing}; have {list(per_cap.columns)}")
    incomplete = per_cap[list(capabilities)].isna().any(axis=1)
    if incomplete.any():
        raise MergeMixError(f"candidates missing some capability scores: {list(per_cap.index[incomplete])}")
    alpha_by_id = evaluations.drop_duplicates("candidate_id").set_index("candidate_id")["alpha"]
    ids = tuple(sorted(per_cap.index))
    alphas = np.array([[float(dict(alpha_by_id[i])[d]) for d in domains] for i in ids])
    scores = {cap: per_cap.loc[list(ids), cap].to_numpy(dtype=float) for cap in capabilities}
    return CapabilityTable(ids, tuple(domains), tuple(capabilities), alphas, scores)
