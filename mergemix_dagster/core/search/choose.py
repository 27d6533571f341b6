"""Choose a stage's mixture: the search's choice, verified by merging it, unless a measured mixture did better
beyond paired noise.

The search ranks mixtures by what the surrogates *predict*. Its choice is merged and scored for real. The
best feasible mixture already measured (seed design or a DeMix round) replaces it only if its objective is
higher *beyond the noise of the items*: every candidate is scored on the same benchmark items, so a paired
bootstrap over items (the same resampled items for both) gives the distribution of the difference of the two
objectives, and the measured mixture wins only if its lower ``search.measured_margin_quantile`` quantile
(2.5 % by default: one-sided 97.5 %) is above 0. The best of ~60 noisy scores is biased upward (the winner's
curse); without the margin a lucky draw would replace a choice that is as good. Without per-item scores the
old rule (strictly higher) applies and the details say so. The sub-domain search inside a split domain applies
the same rule (``steps/subdomain_search.py``). Plain functions and data, so the rule can be read and tested
without Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np

from mergemix_dagster.core.errors import PairedAnalysisError
from mergemix_dagster.core.evaluation.paired import ObjectiveDifference, paired_objective_difference
from mergemix_dagster.core.evaluation.scores import CapabilityTable
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.constraints import MixtureConstraints
from mergemix_dagster.core.search.objective import (
    Objective,
    ScoreScale,
    TargetResolution,
    none_resolved,
    objective_values,
)
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


def choice_warnings(details: Mapping) -> list[str]:
    """What a team must hear before training on a chosen mixture, from ``mixture.json``'s details: no
    capability resolved (every difference between mixtures within paired noise: the choice is decided by
    noise), and a degenerate (one-hot) mixture. The terminal, the report and the UI's checks say these."""
    out = []
    resolution = details.get("resolution") or {}
    if none_resolved([r.get("reason", "") for r in resolution.values()]):
        out.append(f"no capability is resolved ({', '.join(resolution)}): every difference between the measured "
                   "mixtures is within paired noise, so this choice is decided by noise, not by measured gains; "
                   "larger benchmarks (more items) or stronger experts would resolve them")
    if details.get("degenerate"):
        out.append(f"degenerate mixture: {details['degenerate']}")
    return out


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


NO_ITEMS_MARGIN = "no per-item scores: no noise margin"
MARGIN_BOOTSTRAP = 2000  # bootstrap draws of the paired objective difference


@dataclass(frozen=True)
class ChosenMixture:
    """The mixture a stage trains on, where it came from, and what it measured."""

    mixture: Mixture
    chosen_from: str  # "search", or the measured candidate that beat the verified search choice
    scores: dict[str, float]  # measured capability scores
    objective: float  # measured objective
    measured_id: str | None = None  # candidate id when a measured mixture was chosen
    comparison: dict | None = None  # the best measured mixture against the verified choice, and the decision


@dataclass(frozen=True)
class PairedItems:
    """Per-item metric values of the verified choice and of the measured candidates (same items, same order),
    keyed by task; None where a candidate has none (a non-mean metric, or rows written before items were kept)."""

    verified: Mapping[Hashable, Sequence[float]] | None
    measured: Mapping[str, Mapping[Hashable, Sequence[float]] | None]  # candidate id -> items by task
    capability_of: Mapping[Hashable, str]  # task -> capability


@dataclass(frozen=True)
class MarginRule:
    """How a measured mixture's lead over the verified choice is judged: the stage's objective and scale, and
    the lower quantile of the paired bootstrap difference that must be above 0."""

    objective: Objective
    scale: ScoreScale
    quantile: float = 0.025
    n_boot: int = MARGIN_BOOTSTRAP
    seed: int = 0


def _objective_at(rule: MarginRule, alpha: np.ndarray, domains: Sequence[str]):
    def objective_fn(scores: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(scores.values())))
        return objective_values(scores, rule.objective, rule.scale, np.repeat(alpha[None, :], n, axis=0), domains)
    return objective_fn


def measured_margin(
    items: PairedItems | None, rule: MarginRule | None, measured_id: str, measured_alpha: np.ndarray,
    verified: Mixture,
) -> ObjectiveDifference | str:
    """The paired bootstrap difference measured − verified of the objective, or why it cannot be computed."""
    if items is None or rule is None or items.verified is None or items.measured.get(measured_id) is None:
        return NO_ITEMS_MARGIN
    a, b = items.measured[measured_id], items.verified
    if any(v is None for v in (*a.values(), *b.values())):
        return NO_ITEMS_MARGIN
    try:
        return paired_objective_difference(
            a, b, _objective_at(rule, np.asarray(measured_alpha, dtype=float), verified.domains), rule.n_boot,
            rule.seed, capability_of=items.capability_of,
            objective_fn_b=_objective_at(rule, verified.as_array(), verified.domains), quantile=rule.quantile,
        )
    except PairedAnalysisError as e:
        return f"per-item scores do not pair ({e}): no noise margin"


def choose_verified_or_measured(
    search_choice: Mixture,
    verified_scores: dict[str, float],
    verified_objective: float,
    table: CapabilityTable,
    measured_objectives: np.ndarray,
    constraints: MixtureConstraints,
    items: PairedItems | None = None,
    rule: MarginRule | None = None,
) -> ChosenMixture:
    """The verified search choice, or the best feasible measured mixture (projected onto the constraints, which
    it satisfies up to 1e-9) when its objective is higher beyond paired noise: the ``rule.quantile`` quantile of
    the paired bootstrap difference > 0. Without per-item scores (or without a rule): when strictly higher."""
    feasible = constraints.satisfied(table.alphas, tol=1e-9)
    values = np.where(feasible, measured_objectives, -np.inf)
    best = int(np.argmax(values)) if len(values) else 0
    r = round_decimals
    if not len(values) or not np.isfinite(values[best]) or not values[best] > verified_objective:
        comparison = {"decision": "verified search choice kept: no feasible measured mixture scored higher"}
        if len(values) and np.isfinite(values[best]):
            comparison |= {"measured_candidate": table.candidate_ids[best], "measured_objective": r(values[best]),
                           "verified_objective": r(verified_objective),
                           "difference": r(values[best] - verified_objective)}
        return ChosenMixture(search_choice, "search", verified_scores, verified_objective, comparison=comparison)
    cid = table.candidate_ids[best]
    comparison = {"measured_candidate": cid, "measured_objective": r(values[best]),
                  "verified_objective": r(verified_objective), "difference": r(values[best] - verified_objective)}
    margin = measured_margin(items, rule, cid, table.alphas[best], search_choice)
    if isinstance(margin, str):
        replace = True
        comparison |= {"margin": margin,
                       "decision": "measured mixture chosen: higher objective (old rule, no noise margin)"}
    else:
        replace = margin.low > 0
        comparison |= {
            "margin": f"paired bootstrap over items, {margin.n_boot} draws: replace only if the "
                      f"{margin.quantile:g} quantile of the difference is > 0",
            "paired_difference": r(margin.difference), "interval": [r(margin.low), r(margin.high)],
            "quantile": margin.quantile, "n_items": margin.n_items, "n_dropped": margin.n_dropped,
            "decision": "measured mixture chosen: higher beyond paired noise" if replace else
                        "verified search choice kept: the measured mixture's lead is within paired noise",
        }
    if not replace:
        return ChosenMixture(search_choice, "search", verified_scores, verified_objective, comparison=comparison)
    return ChosenMixture(
        mixture=Mixture.from_array(table.domains, constraints.project(table.alphas[best][None, :])[0]),
        chosen_from=f"measured candidate {cid} (the verified search choice scored lower)",
        scores={c: float(table.scores[c][best]) for c in table.capabilities},
        objective=float(values[best]),
        measured_id=cid,
        comparison=comparison,
    )


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


def chosen_objectives(chosen: ChosenMixture, search_predicted_objective: float, prediction: Prediction,
                      objective: Objective, scale: ScoreScale) -> tuple[float, float]:
    """(predicted, verified) objective of the mixture actually chosen: for a measured mixture, the surrogates'
    prediction at it (``prediction`` from ``predict_at`` at ``chosen.mixture``) and its measured objective."""
    if chosen.measured_id is None:
        return float(search_predicted_objective), float(chosen.objective)
    scores = {c: np.array([v]) for c, v in prediction.predicted.items()}
    predicted = objective_values(scores, objective, scale, chosen.mixture.as_array()[None, :], chosen.mixture.domains)
    return float(predicted[0]), float(chosen.objective)


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
        "search_choice_predicted_objective": r(result.predicted_objective),
        "search_choice_verified_objective": r(verified_objective),
        "measured_comparison": chosen.comparison,
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
                           "p_value": None if t.p_value is None else r(t.p_value),
                           "optimized": c not in objective.excluded, "reason": t.reason}
                       for c, t in resolution.items()},
    }


__all__ = [
    "DEGENERATE_SHARE", "round_decimals", "degenerate", "effective_domains", "StageSearch", "search_stage",
    "choice_warnings", "ChosenMixture", "NO_ITEMS_MARGIN", "MARGIN_BOOTSTRAP", "PairedItems", "MarginRule", "measured_margin",
    "choose_verified_or_measured", "Prediction", "predict_at", "chosen_objectives", "choice_details",
]
