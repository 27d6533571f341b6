"""Figures of the search and of the validation study (matplotlib, headless). Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mergemix_dagster.core.evaluation.fidelity import rankdata


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rank_rank_plot(proxy: Sequence[float], trained: Sequence[float], labels: Sequence[str], rho: float, path: Path) -> Path:
    """Proxy rank vs trained rank of each validation mixture (1 = best); the diagonal is perfect fidelity."""
    plt = _pyplot()
    n = len(proxy)
    rp = n + 1 - rankdata(np.asarray(proxy))
    rt = n + 1 - rankdata(np.asarray(trained))
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([1, n], [1, n], color="0.7", lw=1, ls="--")
    ax.scatter(rt, rp, s=28)
    for x, y, label in zip(rt, rp, labels):
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("rank of the trained model (1 = best)")
    ax.set_ylabel("rank of the merged proxy")
    ax.set_title(f"Rank fidelity, overall score (ρ = {rho:.2f}, n = {n})", fontsize=10)
    ax.invert_xaxis()
    ax.invert_yaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def dual_capability_plot(
    alphas: Sequence[float],
    proxy: Mapping[str, Sequence[float]],
    trained: Mapping[str, Sequence[float]],
    pair: tuple[str, str],
    path: Path,
) -> Path:
    """MergeMix §4.2: capability scores along α·first + (1 − α)·second, merged (dashed) vs trained (solid)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for i, cap in enumerate(proxy):
        color = f"C{i}"
        ax.plot(alphas, trained[cap], color=color, marker="o", label=f"{cap} trained")
        ax.plot(alphas, proxy[cap], color=color, marker="x", ls="--", label=f"{cap} merged")
    ax.set_xlabel(f"α on {pair[0]} (1 − α on {pair[1]})")
    ax.set_ylabel("score")
    ax.set_title("Dual-capability study: merged proxy vs trained", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tradeoff_plot(
    scores: Mapping[str, Mapping[str, float]],
    kinds: Mapping[str, str],
    x_capability: str,
    y_capability: str,
    path: Path,
) -> Path:
    """Every scored model of a stage on two capabilities: seed candidates, DeMix round candidates, base, experts,
    the verified search choice.

    ``scores``: model label -> {capability: score}; ``kinds``: model label -> seed / round / base / expert / verify.
    Points up and to the right are better on both; the spread shows what one capability costs the other.
    """
    plt = _pyplot()
    style = {"seed": ("0.6", "o", 18), "round": ("C1", "D", 18), "base": ("black", "s", 40), "expert": ("C0", "^", 40),
             "verify": ("C3", "*", 120)}
    names = {"seed": "seed candidates", "round": "DeMix round candidates", "base": "base", "expert": "experts",
             "verify": "search choice (verified)"}
    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    for kind in ("seed", "round", "base", "expert", "verify"):
        labels = [m for m, k in kinds.items() if k == kind and x_capability in scores[m] and y_capability in scores[m]]
        if not labels:
            continue
        color, marker, size = style[kind]
        ax.scatter([scores[m][x_capability] for m in labels], [scores[m][y_capability] for m in labels],
                   c=color, marker=marker, s=size, label=names[kind], zorder=2 if kind in ("seed", "round") else 3)
        if kind == "expert":
            for m in labels:
                ax.annotate(m, (scores[m][x_capability], scores[m][y_capability]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_xlabel(f"{x_capability} score")
    ax.set_ylabel(f"{y_capability} score")
    ax.set_title(f"Trade-off: {x_capability} vs {y_capability}", fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # nothing plotted: no legend (matplotlib would warn on the terminal)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
