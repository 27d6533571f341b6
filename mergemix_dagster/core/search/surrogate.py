"""Capability surrogates: one LightGBM regressor per capability, α -> capability score, cross-validated.

Small-data settings: the seed design has ~40 points (as few as 8 in smoke runs) in K≈4 dimensions, where
LightGBM's defaults (``min_data_in_leaf=20``) would grow no tree at all and predict a constant.
Models are saved as LightGBM native text files plus a JSON manifest (no pickle).

Uncertainty: with ``ensemble=M`` each capability also gets M bootstrap regressors (rows resampled with
replacement, own seed). Their spread at a mixture is the interval shown next to every predicted score, and the
search can choose by a lower confidence bound. Bootstrap rather than quantile objectives: with ~40 rows a
quantile GBM's leaves hold a handful of points and its quantiles are mostly noise.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mergemix_dagster.core.errors import MergeMixError, SimplexError
from mergemix_dagster.core.mixture import SIMPLEX_TOLERANCE

MANIFEST = "surrogates.json"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)

DEFAULT_PARAMS: dict = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 4,
    "max_depth": 3,
    "min_data_in_leaf": 1,
    "min_data_in_bin": 1,
    "min_sum_hessian_in_leaf": 1e-6,
    "lambda_l2": 1.0,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "max_bin": 255,
    "linear_tree": False,
    "deterministic": True,
    "force_row_wise": True,
    # One thread for training: with ~40 rows there is nothing to parallelize, and OpenMP threads that
    # spin at the per-iteration barriers of 200 rounds slow a fit from 0.1 s to 10+ s on a busy machine.
    "num_threads": 1,
    "verbose": -1,
}
PREDICT_THREADS = 2  # prediction over 100k points is one parallel region: threads help there
DEFAULT_ROUNDS = 200


@dataclass(frozen=True)
class SurrogateQuality:
    """Out-of-fold quality of one capability's surrogate."""

    capability: str
    r2: float
    spearman: float
    n: int
    folds: int


def _check_X(X: np.ndarray, k: int) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    if X.ndim != 2 or X.shape[1] != k:
        raise SimplexError(f"expected mixtures with {k} weights per row, got array of shape {X.shape}")
    if not np.isfinite(X).all():
        bad = int(np.where(~np.isfinite(X).all(axis=1))[0][0])
        raise SimplexError(f"row {bad} of the mixtures is not finite: {X[bad].tolist()}")
    if (X < -SIMPLEX_TOLERANCE).any():
        bad = int(np.where((X < -SIMPLEX_TOLERANCE).any(axis=1))[0][0])
        raise SimplexError(f"row {bad} of the mixtures has a negative weight: {X[bad].tolist()}")
    sums = X.sum(axis=1)
    off = np.abs(sums - 1.0) > 1e-4
    if off.any():
        bad = int(np.where(off)[0][0])
        raise SimplexError(f"row {bad} of the mixtures sums to {sums[bad]:.6f}, not 1: {X[bad].tolist()}")
    return X


def _rankdata(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot <= 0:
        return float("nan")
    return 1.0 - float(np.sum((y - p) ** 2)) / ss_tot


def _spearman(y: np.ndarray, p: np.ndarray) -> float:
    if len(y) < 2 or np.ptp(y) == 0 or np.ptp(p) == 0:
        return float("nan")
    ry, rp = _rankdata(y), _rankdata(p)
    c = np.corrcoef(ry, rp)[0, 1]
    return float(c) if np.isfinite(c) else float("nan")


def _fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = np.arange(n) % folds
    rng.shuffle(ids)
    return ids


class CapabilitySurrogates:
    """One regressor f_m: α -> y_m per capability m, with out-of-fold quality."""

    def __init__(
        self,
        domains: Sequence[str],
        capabilities: Sequence[str],
        boosters: Mapping[str, object],
        quality: Mapping[str, SurrogateQuality],
        params: Mapping | None = None,
        constants: Mapping[str, float] | None = None,
        members: Mapping[str, list] | None = None,
    ) -> None:
        self.domains: tuple[str, ...] = tuple(domains)
        self.capabilities: tuple[str, ...] = tuple(capabilities)
        self._boosters = dict(boosters)
        self.quality: dict[str, SurrogateQuality] = dict(quality)
        self.params: dict = dict(params or {})
        self._constants: dict[str, float] = dict(constants or {})
        self._members: dict[str, list] = {c: list(v) for c, v in (members or {}).items()}

    @property
    def n_members(self) -> int:
        """Bootstrap regressors per capability (0 without an ensemble)."""
        return min((len(v) for v in self._members.values()), default=0) if self._members else 0

    def models(self, capability: str) -> tuple[object, list]:
        """One capability's main regressor (a LightGBM booster, or a float for a constant) and its ensemble
        members as ``predict_members`` uses them: what ``core/explore/trees.py`` exports for the explorer page."""
        main = self._constants[capability] if capability in self._constants else self._boosters[capability]
        return main, list(self._members.get(capability, []))[: self.n_members]

    # ------------------------------------------------------------------ fit
    @staticmethod
    def _train(X: np.ndarray, y: np.ndarray, params: dict, rounds: int):
        import lightgbm as lgb

        ds = lgb.Dataset(X, label=y, params={"verbose": -1, "min_data_in_bin": params.get("min_data_in_bin", 1)},
                         free_raw_data=False)
        return lgb.train(params, ds, num_boost_round=rounds)

    @classmethod
    def fit(
        cls,
        domains: Sequence[str],
        X: np.ndarray,
        targets: Mapping[str, np.ndarray],
        seed: int = 0,
        cv_folds: int = 5,
        params: Mapping | None = None,
        ensemble: int = 0,
    ) -> "CapabilitySurrogates":
        """Fit one LightGBM regressor per capability in ``targets`` on mixtures ``X`` (n, len(domains)).

        ``params`` override the small-data defaults; ``num_boost_round`` may be given there too.
        Quality: out-of-fold R² and Spearman ρ with ``min(cv_folds, n)`` folds (NaN when undefined).
        ``ensemble``: number of bootstrap regressors per capability for intervals (0: none).
        """
        domains = tuple(domains)
        X = _check_X(X, len(domains))
        n = X.shape[0]
        if n < 2:
            raise MergeMixError(f"need at least 2 evaluated mixtures to fit surrogates, got {n}")
        if not targets:
            raise MergeMixError("no capability targets to fit surrogates on")
        merged = dict(DEFAULT_PARAMS)
        merged.update(dict(params or {}))
        rounds = int(merged.pop("num_boost_round", DEFAULT_ROUNDS))
        merged["seed"] = int(seed)
        # With tiny N a leaf may never need more than half of the data, else no split is possible.
        merged["min_data_in_leaf"] = int(max(1, min(merged["min_data_in_leaf"], n // 2)))
        ys: dict[str, np.ndarray] = {}
        for cap, y in targets.items():
            y = np.asarray(y, dtype=float).ravel()
            if y.shape[0] != n:
                raise MergeMixError(f"capability {cap!r}: {y.shape[0]} scores for {n} mixtures")
            if not np.isfinite(y).all():
                bad = np.where(~np.isfinite(y))[0].tolist()
                raise MergeMixError(f"capability {cap!r} has non-finite (NaN/inf) scores at rows {bad}")
            ys[str(cap)] = y
        folds = int(max(2, min(cv_folds, n))) if cv_folds and cv_folds >= 2 else 0
        boosters, quality, constants, members = {}, {}, {}, {}
        rng = np.random.default_rng(seed)
        bootstrap = [rng.integers(0, n, size=n) for _ in range(int(ensemble))]
        for cap, y in ys.items():
            if bootstrap:
                members[cap] = []
                for m, rows in enumerate(bootstrap):
                    if np.ptp(y[rows]) == 0:
                        members[cap].append(float(y[rows][0]))
                    else:
                        members[cap].append(cls._train(X[rows], y[rows], {**merged, "seed": int(seed) + 1 + m}, rounds))
            if np.ptp(y) == 0:
                # Nothing to learn: a constant. LightGBM would also predict it, but say so explicitly.
                constants[cap] = float(y[0])
            else:
                boosters[cap] = cls._train(X, y, merged, rounds)
            if folds:
                oof = np.empty(n)
                ids = _fold_ids(n, folds, seed)
                for f in range(folds):
                    test = ids == f
                    train = ~test
                    if np.ptp(y[train]) == 0:
                        oof[test] = y[train][0]
                    else:
                        oof[test] = cls._train(X[train], y[train], merged, rounds).predict(X[test])
                quality[cap] = SurrogateQuality(cap, _r2(y, oof), _spearman(y, oof), n, folds)
            else:
                quality[cap] = SurrogateQuality(cap, float("nan"), float("nan"), n, 0)
        merged["num_boost_round"] = rounds
        return cls(domains, tuple(ys), boosters, quality, merged, constants, members)

    # -------------------------------------------------------------- predict
    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """``{capability: (n,) predictions}`` for mixtures ``X`` of shape (n, len(domains))."""
        X = _check_X(X, len(self.domains))
        out = {}
        for cap in self.capabilities:
            if cap in self._constants:
                out[cap] = np.full(X.shape[0], self._constants[cap])
            else:
                out[cap] = np.asarray(self._boosters[cap].predict(X, num_threads=PREDICT_THREADS),
                                      dtype=float)
        return out

    def predict_members(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """``{capability: (members, n)}``: the bootstrap ensemble's spread around the main prediction.

        Bootstrap regressors on ~40 rows can all sit above or below the full-data fit; what they measure well
        is the *spread*, so each member is shifted by the ensemble mean onto the main prediction.
        """
        if not self.n_members:
            raise MergeMixError("these surrogates were fitted without an ensemble (ensemble=0)")
        X = _check_X(X, len(self.domains))
        out = {}
        for cap in self.capabilities:
            rows = []
            for m in self._members[cap][: self.n_members]:
                if isinstance(m, float):
                    rows.append(np.full(X.shape[0], m))
                else:
                    rows.append(np.asarray(m.predict(X, num_threads=PREDICT_THREADS), dtype=float))
            spread = np.vstack(rows)
            # centred on the main regressor's prediction, so every interval contains the reported estimate
            out[cap] = spread - spread.mean(axis=0, keepdims=True) + self.predict(X)[cap][None, :]
        return out

    def intervals(self, X: np.ndarray, quantile: float = 0.1) -> dict[str, np.ndarray]:
        """``{capability: (n, 2)}`` lower and upper ensemble quantiles at each mixture."""
        return {
            c: np.stack([np.quantile(v, quantile, axis=0), np.quantile(v, 1 - quantile, axis=0)], axis=1)
            for c, v in self.predict_members(X).items()
        }

    # ----------------------------------------------------------- save / load
    def save(self, directory: Path) -> None:
        """Write ``<capability index>.txt`` LightGBM models and ``surrogates.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        models = {}
        for i, cap in enumerate(self.capabilities):
            if cap in self._constants:
                continue
            name = f"model_{i:03d}.txt"
            self._boosters[cap].save_model(str(directory / name))
            models[cap] = name
        members: dict[str, list] = {}
        for i, cap in enumerate(self.capabilities):
            entries = []
            for j, m in enumerate(self._members.get(cap, [])):
                if isinstance(m, float):
                    entries.append(m)
                else:
                    name = f"model_{i:03d}_m{j:02d}.txt"
                    m.save_model(str(directory / name))
                    entries.append(name)
            if entries:
                members[cap] = entries

        def _num(v: float):
            return None if not math.isfinite(v) else v

        manifest = {
            "format": FORMAT_VERSION,
            "domains": list(self.domains),
            "capabilities": list(self.capabilities),
            "models": models,
            "members": members,
            "constants": self._constants,
            "params": self.params,
            "quality": {c: {**asdict(q), "r2": _num(q.r2), "spearman": _num(q.spearman)} for c, q in self.quality.items()},
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> "CapabilitySurrogates":
        import lightgbm as lgb

        directory = Path(directory)
        path = directory / MANIFEST
        if not path.exists():
            raise MergeMixError(f"no surrogate manifest {path}")
        m = json.loads(path.read_text())
        if m.get("format") not in READABLE_FORMATS:
            raise MergeMixError(f"unsupported surrogate format {m.get('format')!r} in {path}")
        boosters = {cap: lgb.Booster(model_file=str(directory / name)) for cap, name in m["models"].items()}
        quality = {
            c: SurrogateQuality(
                capability=q["capability"],
                r2=float("nan") if q["r2"] is None else float(q["r2"]),
                spearman=float("nan") if q["spearman"] is None else float(q["spearman"]),
                n=int(q["n"]),
                folds=int(q["folds"]),
            )
            for c, q in m["quality"].items()
        }
        members = {
            cap: [float(e) if isinstance(e, (int, float)) else lgb.Booster(model_file=str(directory / e)) for e in entries]
            for cap, entries in m.get("members", {}).items()
        }
        return cls(m["domains"], m["capabilities"], boosters, quality, m.get("params"), m.get("constants"), members)

    def __repr__(self) -> str:
        q = ", ".join(f"{c}: R²={v.r2:.2f} ρ={v.spearman:.2f}" for c, v in self.quality.items())
        return f"CapabilitySurrogates(domains={self.domains}, {q})"
