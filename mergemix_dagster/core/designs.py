"""Seed designs on the probability simplex: vertices, pairwise midpoints, centroid, priors, Dirichlet fill."""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np

from .errors import ConfigError, SimplexError
from .mixture import Mixture

_DEDUP_DECIMALS = 9


def sample_simplex(k: int, n: int, seed: int, concentration: float = 1.0) -> np.ndarray:
    """``(n, k)`` Dirichlet(concentration) samples; every row is non-negative and sums to 1.

    ``concentration=1`` is uniform on the simplex; smaller values favour corners and edges.
    """
    if k < 1:
        raise ConfigError(f"simplex dimension must be >= 1, got {k}")
    if n < 0:
        raise ConfigError(f"number of samples must be >= 0, got {n}")
    if not (concentration > 0 and np.isfinite(concentration)):
        raise ConfigError(f"Dirichlet concentration must be a positive finite number, got {concentration}")
    rng = np.random.default_rng(seed)
    x = rng.dirichlet(np.full(k, float(concentration)), size=n) if n else np.zeros((0, k))
    x = np.clip(x, 0.0, None)
    sums = x.sum(axis=1, keepdims=True)
    # Tiny concentrations can underflow to all-zero rows: put those on a random vertex.
    bad = ~(sums[:, 0] > 0)
    if bad.any():
        x[bad] = np.eye(k)[rng.integers(0, k, size=int(bad.sum()))]
        sums = x.sum(axis=1, keepdims=True)
    return x / sums


def structured_points(k: int) -> np.ndarray:
    """Vertices, pairwise midpoints and the centroid, in that order (deduplicated for small k)."""
    rows = [np.eye(k)[i] for i in range(k)]
    for i, j in combinations(range(k), 2):
        p = np.zeros(k)
        p[i] = p[j] = 0.5
        rows.append(p)
    rows.append(np.full(k, 1.0 / k))
    return _dedup(np.array(rows))


def coarse_grid(k: int, resolution: int) -> np.ndarray:
    """Every simplex point whose coordinates are multiples of ``1/resolution``.

    ``C(resolution + k - 1, k - 1)`` rows (stars and bars), e.g. k=4, resolution=10 gives 286 points.
    """
    if k < 1:
        raise ConfigError(f"simplex dimension must be >= 1, got {k}")
    if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool) or resolution < 1:
        raise ConfigError(f"grid resolution must be an integer >= 1, got {resolution!r}")
    rows = []
    for bars in combinations(range(resolution + k - 1), k - 1):
        edges = (-1, *bars, resolution + k - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(k)])
    return np.asarray(rows, dtype=float) / resolution


def _dedup(points: np.ndarray) -> np.ndarray:
    seen: set[tuple[float, ...]] = set()
    keep = []
    for i, p in enumerate(points):
        key = tuple(np.round(p, _DEDUP_DECIMALS) + 0.0)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return points[keep]


def seed_design(
    domains: Sequence[str], n: int, seed: int = 0, priors: Sequence[Mixture] = ()
) -> list[Mixture]:
    """The MergeMix seed set of ``n`` mixtures over ``domains``.

    Priority order: vertices (one expert each), pairwise midpoints, the centroid (uniform mixture),
    the user's ``priors``, then Dirichlet(1) samples until ``n`` distinct points are reached.
    If ``n`` is smaller than the structured points, the first ``n`` in that order are kept.
    Deterministic for a given ``seed``; duplicates are removed.
    """
    domains = tuple(domains)
    if not domains:
        raise ConfigError("seed_design needs at least one domain")
    if len(set(domains)) != len(domains):
        raise ConfigError(f"duplicate domain names: {domains}")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"seed design size n must be an integer >= 1, got {n!r}")
    k = len(domains)
    rows = [structured_points(k)]
    for prior in priors:
        if not isinstance(prior, Mixture):
            prior = Mixture.from_dict(prior, domains)
        if set(prior.domains) != set(domains):
            raise SimplexError(f"prior mixture domains {prior.domains} differ from design domains {domains}")
        rows.append(np.array([[prior.as_dict()[d] for d in domains]]))
    points = _dedup(np.vstack(rows))
    rng_seed = seed
    attempt = 0
    while len(points) < n:
        need = n - len(points)
        extra = sample_simplex(k, need, seed=np.random.SeedSequence([int(rng_seed) & 0xFFFFFFFF, attempt]).generate_state(1)[0])
        points = _dedup(np.vstack([points, extra]))
        attempt += 1
        if k == 1 or attempt > 100:  # k == 1: only one point exists on the simplex
            break
    points = points[:n]
    return [Mixture.from_array(domains, p) for p in points]
