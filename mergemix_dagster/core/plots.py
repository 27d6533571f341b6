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


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def predicted_vs_actual_plot(actual: np.ndarray, predicted: np.ndarray, held_out: np.ndarray, name: str,
                             rho: float | None, path: Path) -> Path:
    """``mergemix fit``: predicted vs measured per run, held-out runs in colour, fitted runs in grey."""
    plt = _pyplot()
    held_out = np.asarray(held_out, dtype=bool)
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    lo, hi = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([lo, hi], [lo, hi], color="0.7", lw=1, ls="--")
    ax.scatter(actual[~held_out], predicted[~held_out], s=12, c="0.65", label="fitted runs (in sample)")
    if held_out.any():
        ax.scatter(actual[held_out], predicted[held_out], s=26, c="C0", label="held-out runs")
    ax.set_xlabel(f"measured {name}")
    ax.set_ylabel(f"predicted {name}")
    what = "held-out" if held_out.any() else "in-sample (no --test-fraction)"
    ax.set_title(f"{name}: {what} Spearman {'n/a' if rho is None else f'{rho:.3f}'}", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, plt, path)


def weights_plot(domains: Sequence[str], chosen: Sequence[float], prior: Sequence[float] | None,
                 caps: Sequence[float], path: Path) -> Path:
    """Chosen weight per domain beside the prior, with each domain's upper bound (cap) where it is below 1."""
    plt = _pyplot()
    k = len(domains)
    x = np.arange(k)
    fig, ax = plt.subplots(figsize=(max(4.8, 0.32 * k + 1.5), 3.8))
    width = 0.4 if prior is not None else 0.7
    ax.bar(x - (width / 2 if prior is not None else 0), chosen, width, color="C3", label="chosen")
    if prior is not None:
        ax.bar(x + width / 2, prior, width, color="0.6", label="prior")
    caps = np.asarray(caps, dtype=float)
    capped = caps < 1
    if capped.any():
        ax.scatter(x[capped], caps[capped], marker="_", s=220, c="black", zorder=4, label="cap (upper bound)")
    ax.set_xticks(x)
    ax.set_xticklabels(domains, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("weight")
    top = max(float(np.max(chosen)), float(np.max(prior)) if prior is not None else 0.0)
    shown = [top] + [float(c) for c in caps[capped] if c <= 3 * top]  # caps far above every weight: off the chart
    ax.set_ylim(0, min(1.05, 1.15 * max(shown)))
    ax.set_title("Chosen mixture vs the prior, with caps", fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, plt, path)


def fit_tradeoff_plot(x: np.ndarray, y: np.ndarray, labels: tuple[str, str], chosen: tuple[float, float],
                      path: Path, title: str) -> Path:
    """Measured runs on two axes of the objective, and the chosen mixture's prediction (star)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    ax.scatter(x, y, s=14, c="0.6", label="swarm runs (measured)")
    ax.scatter([chosen[0]], [chosen[1]], marker="*", s=160, c="C3", zorder=3, label="chosen (predicted)")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, plt, path)
