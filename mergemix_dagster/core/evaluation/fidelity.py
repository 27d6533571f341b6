"""Proxy fidelity: do merged proxies rank mixtures the way models trained on those mixtures do?

Plain functions on arrays; the Dagster validation assets feed them what actually ran.

Definitions (also in docs/results.md, "How fidelity is measured"):

- **overall score** of a model: the macro-average of its capability scores (each capability score is
  the mean of its benchmarks), raw, not normalized — so it does not depend on which mixtures were sampled.
- **Spearman ρ** (overall / per capability): rank correlation between the proxies' and the trained
  models' scores over the same M mixtures (average ranks for ties; NaN when either side is constant).
- **capability recovery rate** of capability c: ``mean_m proxy[m, c] / trained[m, c]`` — how much of the
  trained model's score the merged proxy reaches, 1.0 = full recovery (DeMix's notion, made precise).
  Overall recovery is the mean over capabilities.
- **gain recovery** of capability c: ``Σ_m (proxy[m,c] − base_c) / Σ_m (trained[m,c] − base_c)`` — the
  share of the trained models' *improvement over the base* the proxies reach (NaN when the trained models
  do not improve on the base at all). Raw-score recovery flatters a proxy on benchmarks near chance,
  this one does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from mergemix_dagster.core.search.designs import sample_simplex
from mergemix_dagster.core.errors import CheckpointMismatchError, ConfigError, MergeMixError
from mergemix_dagster.core.mixture import Mixture


# --------------------------------------------------------------------------------------------
# which mixtures to validate on
# --------------------------------------------------------------------------------------------


def validation_mixtures(
    domains: Sequence[str], m: int, seed: int, include: Iterable[Mixture] = (), pool: int = 4096
) -> list[Mixture]:
    """``m`` mixtures spread over the simplex: ``include`` first (e.g. the chosen one and uniform), then
    greedy max-min-distance picks from a Dirichlet(1) pool, so no two validation points crowd together."""
    domains = tuple(domains)
    if m < 2:
        raise ConfigError(f"rank fidelity needs at least 2 validation mixtures, got {m}")
    chosen: list[np.ndarray] = []
    kept: list[Mixture] = []
    for mix in include:
        arr = np.array([mix.as_dict()[d] for d in domains])
        if not any(np.allclose(arr, c, atol=1e-9) for c in chosen):
            chosen.append(arr)
            kept.append(Mixture.from_dict(mix.as_dict(), domains))
    if len(chosen) > m:
        raise ConfigError(f"{len(chosen)} mixtures must be included but only {m} validation mixtures are asked for")
    candidates = sample_simplex(len(domains), pool, seed)
    if not chosen:
        chosen.append(candidates[0])
    dist = np.min([np.linalg.norm(candidates - c, axis=1) for c in chosen], axis=0)
    while len(chosen) < m:
        i = int(np.argmax(dist))
        chosen.append(candidates[i])
        dist = np.minimum(dist, np.linalg.norm(candidates - candidates[i], axis=1))
    return kept + [Mixture.from_array(domains, _snap(c)) for c in chosen[len(kept):]]


def _snap(row: np.ndarray) -> np.ndarray:
    row = np.clip(np.round(row, 6), 0.0, None)
    return row / row.sum()


def dual_capability_mixtures(
    domains: Sequence[str], pair: tuple[str, str], alphas: Sequence[float] = tuple(np.round(np.arange(1, 10) / 10, 1))
) -> list[Mixture]:
    """MergeMix §4.2: two domains, α on the first and 1 − α on the second, every other domain 0."""
    a, b = pair
    if a == b or a not in domains or b not in domains:
        raise ConfigError(f"dual-capability pair {pair} must name two different configured domains {list(domains)}")
    out = []
    for x in alphas:
        if not 0.0 <= x <= 1.0:
            raise ConfigError(f"dual-capability α must lie in [0, 1], got {x}")
        out.append(Mixture.from_dict({d: (x if d == a else 1.0 - x if d == b else 0.0) for d in domains}, domains))
    return out


def with_general(mixture: Mixture, general_fraction: float, general: str = "general") -> Mixture:
    """The data ratio a reference run trains on when experts saw ``general_fraction`` general data:
    ``(1 − g)·λ + g·general`` — so proxy and reference see the same share of general text."""
    if general_fraction <= 0:
        return mixture
    weights = {d: (1.0 - general_fraction) * w for d, w in mixture.as_dict().items()}
    weights[general] = general_fraction
    return Mixture.from_dict(weights)


# --------------------------------------------------------------------------------------------
# rank fidelity
# --------------------------------------------------------------------------------------------


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get their average rank."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tie = x == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman ρ with average ranks for ties; NaN when either side is constant or n < 2."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise MergeMixError(f"spearman: {a.shape[0]} values against {b.shape[0]}")
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def overall_scores(scores: Mapping[str, np.ndarray]) -> np.ndarray:
    """Macro-average over capabilities, per mixture."""
    if not scores:
        raise MergeMixError("no capability scores")
    return np.mean([np.asarray(v, dtype=float) for v in scores.values()], axis=0)


@dataclass(frozen=True)
class FidelityReport:
    n: int
    overall_spearman: float
    spearman: dict[str, float]
    recovery: dict[str, float]
    gain_recovery: dict[str, float]
    proxy_overall: list[float] = field(default_factory=list)
    trained_overall: list[float] = field(default_factory=list)

    @property
    def overall_recovery(self) -> float:
        vals = [v for v in self.recovery.values() if math.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    def markdown(self) -> str:
        lines = ["| capability | Spearman ρ | recovery | gain recovery |", "|---|---|---|---|"]
        for c in self.spearman:
            lines.append(f"| {c} | {self.spearman[c]:.3f} | {self.recovery[c]:.3f} | {self.gain_recovery[c]:.3f} |")
        lines.append(f"| **overall** (n={self.n}) | **{self.overall_spearman:.3f}** | {self.overall_recovery:.3f} | |")
        return "\n".join(lines)


def _check_scores(name: str, scores: Mapping[str, np.ndarray], n: int | None) -> int:
    for cap, v in scores.items():
        v = np.asarray(v, dtype=float)
        if n is None:
            n = len(v)
        if len(v) != n:
            raise MergeMixError(f"{name} scores of {cap!r}: {len(v)} values, expected {n}")
        if not np.isfinite(v).all():
            raise MergeMixError(f"{name} scores of {cap!r} contain NaN or inf")
    return int(n or 0)


def rank_fidelity(
    proxy: Mapping[str, np.ndarray], trained: Mapping[str, np.ndarray], base: Mapping[str, float] | None = None
) -> FidelityReport:
    """Compare proxy and trained scores of the same mixtures (row m of every array is mixture m)."""
    if set(proxy) != set(trained):
        raise MergeMixError(f"proxy capabilities {sorted(proxy)} differ from trained {sorted(trained)}")
    n = _check_scores("proxy", proxy, None)
    _check_scores("trained", trained, n)
    caps = list(proxy)
    p = {c: np.asarray(proxy[c], dtype=float) for c in caps}
    t = {c: np.asarray(trained[c], dtype=float) for c in caps}
    recovery = {c: float(np.mean(p[c] / t[c])) if (t[c] > 0).all() else float("nan") for c in caps}
    gain_recovery = {}
    for c in caps:
        b = None if base is None else base.get(c)
        denom = float(np.sum(t[c] - b)) if b is not None else 0.0
        gain_recovery[c] = float(np.sum(p[c] - b) / denom) if b is not None and denom > 0 else float("nan")
    po, to = overall_scores(p), overall_scores(t)
    return FidelityReport(
        n=n,
        overall_spearman=spearman(po, to),
        spearman={c: spearman(p[c], t[c]) for c in caps},
        recovery=recovery,
        gain_recovery=gain_recovery,
        proxy_overall=[float(x) for x in po],
        trained_overall=[float(x) for x in to],
    )


# --------------------------------------------------------------------------------------------
# task-vector diagnostics (MergeMix Appendix B)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskVectorDiagnostics:
    domains: tuple[str, ...]
    cosine: np.ndarray  # (k, k) cosine similarity of the task vectors Δ_k = Θ_k − Θ_base
    relative_update: dict[str, float]  # ‖Δ_k‖ / ‖Θ_base‖

    def markdown(self) -> str:
        head = "| | " + " | ".join(self.domains) + " | ‖Δ‖/‖base‖ |"
        lines = [head, "|---" * (len(self.domains) + 2) + "|"]
        for i, d in enumerate(self.domains):
            cells = " | ".join(f"{self.cosine[i, j]:.3f}" for j in range(len(self.domains)))
            lines.append(f"| {d} | {cells} | {self.relative_update[d]:.4f} |")
        return "\n".join(lines)


def task_vector_diagnostics(
    base_state: Mapping[str, torch.Tensor], expert_states: Mapping[str, Mapping[str, torch.Tensor]]
) -> TaskVectorDiagnostics:
    """Cosine similarities of the task vectors and their size relative to the base, one tensor at a
    time in float64 (the states may be lazy safetensors mappings; nothing model-sized is built)."""
    domains = tuple(expert_states)
    if not domains:
        raise MergeMixError("no experts to diagnose")
    k = len(domains)
    gram = np.zeros((k, k))
    base_sq = 0.0
    for name in base_state:
        b = base_state[name].to(torch.float64).reshape(-1)
        base_sq += float(b @ b)
        deltas = []
        for d in domains:
            if name not in expert_states[d]:
                raise CheckpointMismatchError(f"expert {d!r} has no parameter {name!r} that the base has")
            e = expert_states[d][name]
            if tuple(e.shape) != tuple(base_state[name].shape):
                raise CheckpointMismatchError(
                    f"parameter {name!r}: expert {d!r} has shape {tuple(e.shape)}, base {tuple(base_state[name].shape)}"
                )
            deltas.append(e.to(torch.float64).reshape(-1) - b)
        stacked = torch.stack(deltas)
        gram += (stacked @ stacked.T).numpy()
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = gram / np.outer(norms, norms)
    base_norm = math.sqrt(base_sq)
    relative = {d: float(norms[i] / base_norm) if base_norm > 0 else float("nan") for i, d in enumerate(domains)}
    return TaskVectorDiagnostics(domains, cosine, relative)


# --------------------------------------------------------------------------------------------
# cost accounting (MergeMix Table 6)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchCost:
    """What a mixture search cost, from what actually ran; ``tokens_trained`` None and ``train_seconds`` NaN
    where a run has no training record (shown as "unknown", never as a recipe's planned tokens)."""

    method: str
    runs_trained: int
    tokens_trained: int | None
    train_seconds: float
    evaluations: int
    eval_seconds: float

    @property
    def total_seconds(self) -> float:
        return self.train_seconds + self.eval_seconds


def _known(value, fmt: str) -> str:
    return "unknown" if value is None or not math.isfinite(value) else format(value, fmt)


def cost_markdown(costs: Sequence[SearchCost]) -> str:
    ref = costs[0]
    lines = [
        "| search | runs trained | tokens trained | train s | evaluations | eval s | total s | tokens vs first |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in costs:
        ratio = (c.tokens_trained / ref.tokens_trained if ref.tokens_trained and c.tokens_trained is not None
                 else float("nan"))
        lines.append(
            f"| {c.method} | {c.runs_trained} | {_known(c.tokens_trained, ',')} | {_known(c.train_seconds, '.0f')} | "
            f"{c.evaluations} | {_known(c.eval_seconds, '.0f')} | {_known(c.total_seconds, '.0f')} | "
            f"{_known(ratio, '.2f')}{'×' if math.isfinite(ratio) else ''} |"
        )
    return "\n".join(lines)
