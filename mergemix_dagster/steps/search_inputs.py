"""From settings and stored evaluations to the search's inputs: objective, constraints, measured table.

Shared by the surrogate, rounds and mixture assets so all three read the same objective and the same rows.
"""


import numpy as np

from mergemix_dagster.core.search.constraints import MixtureConstraints, build_constraints
from mergemix_dagster.core.errors import ConfigError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.objective import Objective, ScoreScale, TargetResolution, fit_score_scale, objective_values, resolve_targets
from mergemix_dagster.core.evaluation.scores import CapabilityTable, capability_means, capability_table
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import layout
from mergemix_dagster.resources.artifacts import configured_rows
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


def target_resolution(
    s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str
) -> dict[str, TargetResolution]:
    """How far the seed design (and the base) move each capability, against the base's noise."""
    seed = measured_table(s, store, database, stage, 0)
    base = base_scores(s, database, stage)
    scores = {c: np.append(seed.scores[c], base[c]) if c in base else seed.scores[c] for c in seed.scores}
    return resolve_targets(scores, base_noise(s, database, stage), s.search.objective.min_spread_in_noise)


def stage_objective(
    s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str, tokens: dict[str, int]
) -> tuple[Objective, dict[str, TargetResolution]]:
    """The objective every search asset of ``stage`` uses: settings + base floors + noise exclusions."""
    resolution = target_resolution(s, store, database, stage)
    return objective_from(s, base_scores(s, database, stage), tokens, resolution), resolution


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
    return Objective(
        weights=s.search.objective_weights,
        directions=dict(o.directions),
        aggregate=o.aggregate,
        floors=floors,
        prior=prior_mixture(s, tokens) if o.kl_weight > 0 else None,
        kl_weight=o.kl_weight,
        excluded={c: r.reason for c, r in (resolution or {}).items() if not r.resolved},
    )


def constraints_from(s: Settings, tokens: dict[str, int]) -> MixtureConstraints:
    return build_constraints(
        s.domain_names,
        min_weight=s.search.min_weight,
        max_weight=s.search.max_weight,
        pinned=s.search.pinned,
        available_tokens=tokens if s.target.tokens else None,
        target_tokens=s.target.tokens,
        max_epochs=s.target.max_epochs,
    )


def measured_table(
    s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str, through_round: int
) -> CapabilityTable:
    """Capability table of every current candidate measured in rounds ``0..through_round`` (stale rows ignored)."""
    current: dict[str, str] = {}
    design = store.get_json(layout.candidates_key(stage))
    current |= {c["candidate_id"]: c["fingerprint"] for c in design["candidates"]}
    for r in range(1, through_round + 1):
        key = round_key(stage, r)
        if store.exists(key):
            current |= {c["candidate_id"]: c["fingerprint"] for c in store.get_json(key)["candidates"]}
    kinds = {round_kind(r) for r in range(through_round + 1)}
    rows = configured_rows(database.evaluations(stage), s)
    rows = rows[rows["kind"].isin(kinds) & (rows["candidate_id"].map(current) == rows["model_fingerprint"])]
    return capability_table(rows, s.domain_names, s.capabilities)


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
