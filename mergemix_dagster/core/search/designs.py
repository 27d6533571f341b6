"""Seed designs on the probability simplex: vertices, pairwise midpoints, centroid, priors, Dirichlet fill."""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np

from mergemix_dagster.core.errors import ConfigError, SimplexError
from mergemix_dagster.core.mixture import Mixture

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


def farthest_first(pool: np.ndarray, chosen: np.ndarray, m: int) -> np.ndarray:
    """Greedy max-min selection of ``m`` rows of ``pool``: each pick is the point farthest from all before it."""
    if m <= 0 or pool.shape[0] == 0:
        return pool[:0]
    d = np.min(np.linalg.norm(pool[:, None, :] - chosen[None, :, :], axis=2), axis=1) if len(chosen) else np.full(len(pool), np.inf)
    picks = []
    for _ in range(min(m, pool.shape[0])):
        i = int(np.argmax(d))
        picks.append(i)
        d = np.minimum(d, np.linalg.norm(pool - pool[i], axis=1))
        d[i] = -1.0
    return pool[picks]


def seed_design(
    domains: Sequence[str], n: int, seed: int = 0, priors: Sequence[Mixture] = ()
) -> list[Mixture]:
    """The MergeMix seed set of ``n`` mixtures over ``domains``, with interior points at any K.

    In order: the K vertices (one expert each), the centroid (uniform), the user's ``priors``, then the rest
    split between pairwise midpoints (at most half of the rest, chosen at random when there are more) and
    *interior* mixtures (every weight > 0) picked farthest-first from Dirichlet samples — so a large K does
    not spend the whole budget on vertices and edges (K = 17, N = 40 used to have no interior point).
    Needs ``n >= K + 1``; deterministic for a given ``seed``; duplicates removed.
    """
    domains = tuple(domains)
    if not domains:
        raise ConfigError("seed_design needs at least one domain")
    if len(set(domains)) != len(domains):
        raise ConfigError(f"duplicate domain names: {domains}")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"seed design size n must be an integer >= 1, got {n!r}")
    k = len(domains)
    if k > 1 and n < k + 1:
        raise ConfigError(
            f"a seed design over {k} domains needs at least {k + 1} candidates (the {k} experts and one "
            f"mixture), got n_candidates={n}"
        )
    rows = [np.eye(k), np.full((1, k), 1.0 / k)]
    for prior in priors:
        if not isinstance(prior, Mixture):
            prior = Mixture.from_dict(prior, domains)
        if set(prior.domains) != set(domains):
            raise SimplexError(f"prior mixture domains {prior.domains} differ from design domains {domains}")
        rows.append(np.array([[prior.as_dict()[d] for d in domains]]))
    points = _dedup(np.vstack(rows))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, k, n]))
    rest = n - len(points)
    if rest > 0 and k > 1:
        pairs = list(combinations(range(k), 2))
        n_mid = min(len(pairs), rest // 2)
        picked = [pairs[i] for i in sorted(rng.choice(len(pairs), size=n_mid, replace=False))]
        mids = np.zeros((n_mid, k))
        for r, (i, j) in enumerate(picked):
            mids[r, i] = mids[r, j] = 0.5
        points = _dedup(np.vstack([points, mids]))
        need = n - len(points)
        pool = rng.dirichlet(np.full(k, 1.5), size=max(200, 50 * need))
        points = _dedup(np.vstack([points, farthest_first(pool, points, need)]))
    return [Mixture.from_array(domains, p) for p in points[:n]]


def extend_design(
    domains: Sequence[str], measured: np.ndarray, new_domains: Sequence[str], n: int, seed: int = 0,
    priors: Sequence[Mixture] = (),
) -> np.ndarray:
    """The points a seed design over ``domains`` still needs when ``measured`` (``(m, K)`` rows, columns in
    ``domains`` order; earlier mixtures, a new domain at 0) are kept: only the missing ones, in order.

    1. every vertex not measured (each new domain's expert), the centroid and the ``priors``;
    2. the midpoints of each new domain with every other domain (at most ``max(len(new_domains), n // 2)``,
       a seeded choice when there are more);
    3. interior mixtures (every weight > 0) picked farthest-first from Dirichlet samples, away from every
       point so far: when a domain is new, at least ``len(new_domains) + 1`` and enough that the added points
       number ``ceil(n · len(new_domains) / K)`` (the new domains' share of a fresh design); and enough to
       reach ``n`` points.

    Points already in ``measured`` (to 1e-9) are not returned. Deterministic for a given ``seed``; with no
    new domain and ``n`` points measured, nothing is added (a removed domain leaves its face's points).
    """
    domains = tuple(domains)
    k = len(domains)
    unknown = sorted(set(new_domains) - set(domains))
    if unknown:
        raise ConfigError(f"new domains {unknown} are not among the design's domains {domains}")
    measured = np.asarray(measured, dtype=float).reshape(-1, k)
    if len(measured) and (np.abs(measured.sum(axis=1) - 1) > 1e-6).any():
        raise SimplexError("measured mixtures must lie on the simplex of the design's domains")
    index = {d: i for i, d in enumerate(domains)}
    new = [index[d] for d in domains if d in set(new_domains)]
    rows = [np.eye(k), np.full((1, k), 1.0 / k)]
    for prior in priors:
        if not isinstance(prior, Mixture):
            prior = Mixture.from_dict(prior, domains)
        rows.append(np.array([[prior.as_dict()[d] for d in domains]]))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, k, n, *new]))
    pairs = sorted({tuple(sorted((i, j))) for i in new for j in range(k) if j != i})
    cap = max(len(new), n // 2)
    if len(pairs) > cap:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), size=cap, replace=False))]
    for i, j in pairs:
        p = np.zeros((1, k))
        p[0, i] = p[0, j] = 0.5
        rows.append(p)
    have = _dedup(np.vstack([measured, *rows])) if len(measured) else _dedup(np.vstack(rows))
    if k > 1:
        # a new domain's share of the budget, as in a fresh design (n/K points each), and at least one more
        # interior point than there are new domains
        share = int(np.ceil(n * len(new) / k)) - (len(have) - len(measured)) if new else 0
        need = max(len(new) + 1 if new else 0, share, n - len(have))
        pool = rng.dirichlet(np.full(k, 1.5), size=max(200, 50 * need))
        have = _dedup(np.vstack([have, farthest_first(pool, have, need)]))
    return _not_in(have, measured)


def _not_in(points: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Rows of ``points`` that are not rows of ``measured`` (to ``_DEDUP_DECIMALS``)."""
    seen = {tuple(np.round(p, _DEDUP_DECIMALS) + 0.0) for p in measured}
    return points[[tuple(np.round(p, _DEDUP_DECIMALS) + 0.0) not in seen for p in points]].reshape(-1, points.shape[1])
