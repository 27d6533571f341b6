"""From settings and stored evaluations to the search's inputs: objective, constraints, measured table.

Shared by the surrogate, rounds and mixture assets so all three read the same objective and the same rows.
"""


from dataclasses import dataclass

import numpy as np

from mergemix_dagster.core.search.constraints import MixtureConstraints, build_constraints
from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.objective import Objective, ScoreScale, TargetResolution, fit_score_scale, objective_values
from mergemix_dagster.core.search.resolution import (
    protect_domains,
    protected_shares,
    protection_floors,
    resolve_capabilities,
    unresolved,
)
from mergemix_dagster.core.evaluation.scores import CapabilityTable, capability_means, capability_table
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import layout
from mergemix_dagster.resources.artifacts import configured_rows, has_items
from mergemix_dagster.core.data.corpora import tokenize_documents
from mergemix_dagster.resources.artifacts import base_checkpoint, corpus_documents
from mergemix_dagster.resources.layout import round_key

SEED_KIND = "seed"
BASE_KIND = "base"


def round_kind(r: int) -> str:
    """``kind`` of the evaluation rows of DeMix round ``r`` (round 0 is the seed design)."""
    return SEED_KIND if r == 0 else f"round{r}"


def available_tokens(design: dict) -> dict[str, int]:
    return {d: int(n) for d, n in design.get("available_tokens", {}).items()}


def prior_mixture(s: Settings, tokens: dict[str, int]) -> dict[str, float]:
    """The mixture the KL penalty pulls toward: natural token shares, uniform, or the user's own."""
    prior = s.search.objective.prior
    if isinstance(prior, dict):
        unknown = sorted(set(prior) - set(s.domain_names))
        if unknown:
            raise ConfigError(f"search.objective.prior names unknown domains {unknown}")
        total = sum(prior.get(d, 0.0) for d in s.domain_names)
        return {d: prior.get(d, 0.0) / total for d in s.domain_names}
    if prior == "tokens" and tokens and sum(tokens.values()) > 0:
        total = sum(tokens[d] for d in s.domain_names)
        return {d: tokens[d] / total for d in s.domain_names}
    return {d: 1.0 / len(s.domain_names) for d in s.domain_names}


def base_scores(s: Settings, database: EvaluationDatabase, stage: str) -> dict[str, float]:
    rows = configured_rows(database.evaluations(stage), s)
    rows = rows[rows["kind"] == BASE_KIND]
    return capability_means(zip(rows["capability"], rows["value"]))


def base_noise(s: Settings, database: EvaluationDatabase, stage: str) -> dict[str, float | None]:
    """Standard error of each capability's score on the base (lm-eval's stderr of each benchmark mean,
    combined over the capability's benchmarks as for a mean); None where a benchmark reports none."""
    rows = configured_rows(database.evaluations(stage), s)
    rows = rows[rows["kind"] == BASE_KIND]
    out: dict[str, float | None] = {}
    for cap, group in rows.groupby("capability"):
        se = group["stderr"].to_numpy(dtype=float)
        out[str(cap)] = None if not len(se) or np.isnan(se).any() else float(np.sqrt((se ** 2).sum()) / len(se))
    return out


def item_matrices(rows, s: Settings) -> dict[str, list[np.ndarray] | str]:
    """capability -> its per-task (mixtures × items) matrices from the rows' ``item_values`` (one row per
    mixture; mixtures scored on every task of the capability, in one order), or why there are none."""
    out: dict[str, list[np.ndarray] | str] = {}
    for c in s.capabilities:
        tasks = [t.name for t in s.evaluation.tasks if t.capability == c]
        per_task = {t: rows[rows["task"] == t] for t in tasks}
        ids = sorted(set.intersection(*(set(g["candidate_id"]) for g in per_task.values())))
        if len(ids) < 2:
            out[c] = f"{len(ids)} mixtures scored on every task of {c}"
            continue
        matrices: list[np.ndarray] | str = []
        for t, group in per_task.items():
            by_id = dict(zip(group["candidate_id"], group["item_values"]))
            missing = sum(not has_items(by_id[i]) for i in ids)
            if missing:
                matrices = f"{t}: {missing} of {len(ids)} mixtures have none"
                break
            lengths = {len(by_id[i]) for i in ids}
            if len(lengths) > 1:
                matrices = f"{t}: item counts differ between mixtures {sorted(lengths)}"
                break
            matrices.append(np.array([by_id[i] for i in ids], dtype=float))
        out[c] = matrices
    return out


def target_resolution(
    s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str
) -> dict[str, TargetResolution]:
    """Which capabilities the seed design (and the base) move beyond their paired noise
    (``core/search/resolution.py``: a within-item permutation test, p < ``max_resolution_p``; capabilities
    without per-item scores fall back to the unpaired spread vs the base's stderr)."""
    o = s.search.objective
    seed = measured_table(s, store, database, stage, 0)
    base = base_scores(s, database, stage)
    scores = {c: np.append(seed.scores[c], base[c]) if c in base else seed.scores[c] for c in seed.scores}
    rows = current_rows(s, store, database, stage, 0, with_base=True)
    if "item_values" not in rows.columns:
        rows = rows.assign(item_values=[None] * len(rows))
    return resolve_capabilities(
        item_matrices(rows, s), scores, base_noise(s, database, stage),
        max_p=o.max_resolution_p, min_spread_in_noise=o.min_spread_in_noise, seed=s.search.seed,
    )


@dataclass(frozen=True)
class StageSearchInputs:
    """What the search of a stage runs under: the objective, the constraints, each capability's resolution,
    and ``protections``: capability -> how an unresolved capability is protected (empty when none is)."""

    objective: Objective
    constraints: MixtureConstraints
    resolution: dict[str, TargetResolution]
    protections: dict[str, str]


def stage_objective(
    s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str, tokens: dict[str, int]
) -> tuple[Objective, dict[str, TargetResolution]]:
    """The objective every search asset of ``stage`` uses: settings + base floors + noise exclusions + the
    protection floors of unresolved capabilities (their domains' bounds: ``constraints_from(..., resolution)``)."""
    resolution = target_resolution(s, store, database, stage)
    return objective_from(s, base_scores(s, database, stage), tokens, resolution), resolution


def stage_search_inputs(
    s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str, tokens: dict[str, int]
) -> StageSearchInputs:
    """``stage_objective`` plus the constraints with the unresolved capabilities' domains protected, and what
    protection applied to each (for ``mixture.json`` and the run summary)."""
    resolution = target_resolution(s, store, database, stage)
    base = base_scores(s, database, stage)
    return StageSearchInputs(
        objective_from(s, base, tokens, resolution), constraints_from(s, tokens, resolution), resolution,
        protections_from(s, base, tokens, resolution),
    )


def objective_from(
    s: Settings,
    base: dict[str, float],
    tokens: dict[str, int],
    resolution: dict[str, TargetResolution] | None = None,
) -> Objective:
    o = s.search.objective
    caps = set(s.capabilities)
    for name, table in (("weights", s.search.objective_weights or {}), ("directions", o.directions), ("floors", o.floors)):
        unknown = sorted(set(table) - caps)
        if unknown:
            raise ConfigError(f"search.objective.{name} names unknown capabilities {unknown}; have {sorted(caps)}")
    floors = dict(o.floors)
    if o.no_capability_below_base:
        missing = sorted(caps - set(base))
        if missing:
            raise ConfigError(f"no base score for capabilities {missing}: cannot floor them at the base")
        for c in caps:
            floors[c] = max(floors.get(c, -np.inf), base[c]) if o.directions.get(c, "maximize") == "maximize" \
                else min(floors.get(c, np.inf), base[c])
    if o.protect_unresolved and resolution:
        floors, _ = protection_floors(resolution, base, o.directions, floors)
    return Objective(
        weights=s.search.objective_weights,
        directions=dict(o.directions),
        aggregate=o.aggregate,
        floors=floors,
        prior=prior_mixture(s, tokens) if o.kl_weight > 0 else None,
        kl_weight=o.kl_weight,
        excluded={c: r.reason for c, r in (resolution or {}).items() if not r.resolved},
    )


def constraints_from(
    s: Settings, tokens: dict[str, int], resolution: dict[str, TargetResolution] | None = None
) -> MixtureConstraints:
    """The settings' bounds; with ``resolution`` (and ``protect_unresolved``) every domain of an unresolved
    capability also keeps at least its prior share (``core/search/resolution.protect_domains``)."""
    constraints = settings_constraints(s, tokens)
    if not (s.search.objective.protect_unresolved and unresolved(resolution)):
        return constraints
    return protect_domains(constraints, *_shares(s, tokens, resolution))[0]


def settings_constraints(s: Settings, tokens: dict[str, int]) -> MixtureConstraints:
    """The bounds the settings set: min/max/pinned weights and token availability."""
    return build_constraints(
        s.domain_names,
        min_weight=s.search.min_weight,
        max_weight=s.search.max_weight,
        pinned=s.search.pinned,
        available_tokens=tokens if s.target.tokens else None,
        target_tokens=s.target.tokens,
        max_epochs=s.target.max_epochs,
    )


def _shares(s: Settings, tokens: dict[str, int], resolution) -> tuple[dict[str, float], dict[str, str | None]]:
    capability_of = {d.name: d.capability for d in s.domains}
    return protected_shares(resolution, capability_of, prior_mixture(s, tokens)), capability_of


def protections_from(
    s: Settings, base: dict[str, float], tokens: dict[str, int], resolution: dict[str, TargetResolution]
) -> dict[str, str]:
    """capability -> one line: how an unresolved capability is protected (score floor, domains' minimum weights)."""
    o = s.search.objective
    caps = unresolved(resolution)
    if not caps:
        return {}
    if not o.protect_unresolved:
        return {c: "not protected (search.objective.protect_unresolved: false)" for c in caps}
    _, floor_texts = protection_floors(resolution, base, o.directions, o.floors)
    shares, capability_of = _shares(s, tokens, resolution)
    _, domain_texts = protect_domains(settings_constraints(s, tokens), shares, capability_of)
    out = {}
    for c in caps:
        domains = [text for d, text in domain_texts.items() if capability_of.get(d) == c]
        out[c] = "; ".join([floor_texts.get(c, "no floor")] + (["domains " + ", ".join(domains)] if domains
                                                                else ["no domain names it as its capability"]))
    return out


def current_rows(
    s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str, through_round: int,
    with_base: bool = False,
):
    """Evaluation rows of every current candidate measured in rounds ``0..through_round`` (stale rows ignored),
    with the base's rows when ``with_base``."""
    current: dict[str, str] = {}
    design = store.get_json(layout.candidates_key(stage))
    current |= {c["candidate_id"]: c["fingerprint"] for c in design["candidates"]}
    for r in range(1, through_round + 1):
        key = round_key(stage, r)
        if store.exists(key):
            current |= {c["candidate_id"]: c["fingerprint"] for c in store.get_json(key)["candidates"]}
    kinds = {round_kind(r) for r in range(through_round + 1)}
    rows = configured_rows(database.evaluations(stage), s)
    keep = rows["kind"].isin(kinds) & (rows["candidate_id"].map(current) == rows["model_fingerprint"])
    return rows[keep | (rows["kind"] == BASE_KIND)] if with_base else rows[keep]


def measured_table(
    s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str, through_round: int
) -> CapabilityTable:
    """Capability table of every current candidate measured in rounds ``0..through_round`` (stale rows ignored)."""
    return capability_table(current_rows(s, store, database, stage, through_round), s.domain_names, s.capabilities)


def seed_scale(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str) -> ScoreScale:
    """Score scale of the seed design: fixed across rounds so objectives of different rounds compare."""
    return fit_score_scale(measured_table(s, store, database, stage, 0).scores)


def table_objective(table: CapabilityTable, objective: Objective, scale: ScoreScale) -> np.ndarray:
    return objective_values(table.scores, objective, scale, table.alphas, table.domains)


def mixture_objective(scores: dict[str, float], mixture: Mixture, objective: Objective, scale: ScoreScale) -> float:
    return float(objective_values({c: np.array([v]) for c, v in scores.items()}, objective, scale,
                                  mixture.as_array()[None, :], mixture.domains)[0])


def fit_surrogates(s: Settings, table: CapabilityTable, ensemble: int | None = None) -> CapabilitySurrogates:
    return CapabilitySurrogates.fit(
        s.domain_names, table.alphas, table.scores, seed=s.search.seed, cv_folds=s.search.cv_folds,
        ensemble=s.search.ensemble if ensemble is None else ensemble,
    )


def round_history(store: CheckpointStore, stage: str) -> list[dict]:
    """The rounds ``search_rounds`` ran (one row each), or none before it has run."""
    key = layout.rounds_summary_key(stage)
    return store.get_json(key)["rounds"] if store.exists(key) else []


def count_domain_tokens(store: CheckpointStore, stage: str, domains) -> dict[str, int]:
    """Tokens of each domain corpus under the stage base's tokenizer (EOS between documents included):
    the ``N_d`` of the token-availability bound and of the natural-token prior."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_checkpoint(store, stage)[0]))
    return {d: int(len(tokenize_documents(corpus_documents(store, d)[0], tokenizer))) for d in domains}
