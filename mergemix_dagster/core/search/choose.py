"""Choose a stage's mixture: the search's choice, verified by merging it, unless a measured mixture did better.

The search ranks mixtures by what the surrogates *predict*. Its choice is merged and scored for real; if a
mixture already measured (seed design or a DeMix round) scored a higher objective and satisfies the
constraints, that one is chosen instead: a team wants the best *measured* mixture, never a prediction that
did not hold up. The sub-domain search applies the same rule in ``core/search/hierarchy.prefer_measured``.
Plain functions and data, so the rule can be read and tested without Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mergemix_dagster.core.evaluation.scores import CapabilityTable
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.constraints import MixtureConstraints
from mergemix_dagster.core.search.objective import Objective, ScoreScale, TargetResolution
from mergemix_dagster.core.search.simplex import SearchResult, search_mixture
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates
from mergemix_dagster.core.settings import SearchSettings

DEGENERATE_SHARE = 0.9  # one domain holding this much of a mixture makes it a single-domain run


def round_decimals(x: float, digits: int = 4) -> float:
    """``x`` as a plain float rounded to ``digits`` decimals, as mixture.json and the UI show it."""
    return float(round(float(x), digits))


def degenerate(weights: dict[str, float], threshold: float = DEGENERATE_SHARE) -> str | None:
    """Why a mixture is one a team would not train on (one domain holds ≥ ``threshold``), or None."""
    top = max(weights, key=weights.get)
    if weights[top] >= threshold:
        return f"{top} holds {weights[top]:.0%} of the mixture: effectively a single-domain run"
    return None


def effective_domains(weights: dict[str, float]) -> float:
    """exp(entropy): 1 for a one-hot mixture, K for uniform."""
    w = np.array([v for v in weights.values() if v > 0])
    return float(np.exp(-(w * np.log(w)).sum()))


@dataclass(frozen=True)
class StageSearch:
    """The search over the simplex, and (when constraints bind) where it would go without them."""

    result: SearchResult
    unconstrained: SearchResult | None


def search_stage(
    surrogates: CapabilitySurrogates,
    objective: Objective,
    scale: ScoreScale,
    constraints: MixtureConstraints,
    measured: list[Mixture],
    search: SearchSettings,
) -> StageSearch:
    """Search with the stage's settings; the measured mixtures are candidates too."""
    options = dict(n_samples=search.n_samples, seed=search.seed, top_k=search.top_k, choice=search.choice,
                   refine=search.refine, lcb_quantile=search.lcb_quantile)
    result = search_mixture(surrogates, objective, scale, constraints=constraints, include=measured, **options)
    unconstrained = (
        search_mixture(surrogates, objective, scale, constraints=None, **options) if constraints.active else None
    )
    return StageSearch(result, unconstrained)


@dataclass(frozen=True)
class ChosenMixture:
    """The mixture a stage trains on, where it came from, and what it measured."""

    mixture: Mixture
    chosen_from: str  # "search", or the measured candidate that beat the verified search choice
    scores: dict[str, float]  # measured capability scores
    objective: float  # measured objective
    measured_id: str | None = None  # candidate id when a measured mixture was chosen


def choose_verified_or_measured(
    search_choice: Mixture,
    verified_scores: dict[str, float],
    verified_objective: float,
    table: CapabilityTable,
    measured_objectives: np.ndarray,
    constraints: MixtureConstraints,
) -> ChosenMixture:
    """The verified search choice, or the best feasible measured mixture when it scored strictly higher
    (projected onto the constraints, which it satisfies up to 1e-9)."""
    feasible = constraints.satisfied(table.alphas, tol=1e-9)
    values = np.where(feasible, measured_objectives, -np.inf)
    best = int(np.argmax(values))
    if np.isfinite(values[best]) and values[best] > verified_objective:
        return ChosenMixture(
            mixture=Mixture.from_array(table.domains, constraints.project(table.alphas[best][None, :])[0]),
            chosen_from=f"measured candidate {table.candidate_ids[best]} (the verified search choice scored lower)",
            scores={c: float(table.scores[c][best]) for c in table.capabilities},
            objective=float(values[best]),
            measured_id=table.candidate_ids[best],
        )
    return ChosenMixture(search_choice, "search", verified_scores, verified_objective)


@dataclass(frozen=True)
class Prediction:
    """The surrogates at one mixture: point predictions and (with an ensemble) intervals per capability."""

    predicted: dict[str, float]
    intervals: dict[str, list[float]]


def predict_at(surrogates: CapabilitySurrogates, mixture: Mixture, quantile: float) -> Prediction:
    x = mixture.as_array()[None, :]
    predicted = {c: float(v[0]) for c, v in surrogates.predict(x).items()}
    intervals = ({c: [float(v[0, 0]), float(v[0, 1])] for c, v in surrogates.intervals(x, quantile).items()}
                 if surrogates.n_members >= 2 else {})
    return Prediction(predicted, intervals)


def _weights(mixture: Mixture) -> dict[str, float]:
    return {d: round_decimals(w, 6) for d, w in mixture.as_dict().items()}


def choice_details(
    *,
    chosen: ChosenMixture,
    search: StageSearch,
    verified_objective: float,
    prediction: Prediction,
    objective: Objective,
    resolution: dict[str, TargetResolution],
    constraints: MixtureConstraints,
    base: dict[str, float],
    choice: str,
    tokens: dict[str, int],
    rounds: list[dict],
    mixtures_measured: int,
) -> dict:
    """What ``mixture.json`` and the ``chosen_mixture`` table record beside the weights: why this mixture,
    what was predicted and measured, the alternatives the search saw, and what the constraints cost."""
    r = round_decimals
    result, unconstrained = search.result, search.unconstrained
    weights = chosen.mixture.as_dict()
    return {
        "chosen_from": chosen.chosen_from,
        "objective": objective.describe(),
        "choice": choice,
        "predicted": {c: r(v) for c, v in prediction.predicted.items()},
        "predicted_interval": {c: [r(a), r(b)] for c, (a, b) in prediction.intervals.items()},
        "measured": {c: r(v) for c, v in chosen.scores.items()},
        "base": {c: r(v) for c, v in base.items()},
        "search_choice": _weights(result.mixture),
        "search_choice_verified_objective": r(verified_objective),
        "argmax": _weights(result.argmax),
        "argmax_predicted_objective": r(result.argmax_objective),
        "top_k_mean": _weights(result.top_k_mean),
        "top_k_mean_predicted_objective": r(result.top_k_mean_objective),
        "constraints": constraints.describe(),
        "constraint_reasons": constraints.reasons,
        "unconstrained_optimum": None if unconstrained is None else _weights(unconstrained.mixture),
        "unconstrained_predicted_objective": None if unconstrained is None else r(unconstrained.predicted_objective),
        "available_tokens": tokens,
        "rounds": rounds,
        "mixtures_measured": mixtures_measured,
        "n_samples": result.n_samples,
        "effective_domains": r(effective_domains(weights), 3),
        "degenerate": degenerate(weights),
        "not_optimized": dict(objective.excluded),
        "resolution": {c: {"spread": r(t.spread), "noise": None if t.noise is None else r(t.noise),
                           "optimized": c not in objective.excluded, "reason": t.reason}
                       for c, t in resolution.items()},
    }


__all__ = [
    "DEGENERATE_SHARE", "round_decimals", "degenerate", "effective_domains", "StageSearch", "search_stage",
    "ChosenMixture", "choose_verified_or_measured", "Prediction", "predict_at", "choice_details",
]
