"""The work behind ``mixture_quality``: the pre-registered comparison of the chosen mixture with its baselines.

Order, so that nothing is judged on a yardstick picked after seeing a result (docs/validation.md):

1. register the protocol (``validation.protocol`` + the settings that decide the runs) in the stage's ledger
   before any quality run trains (``register_protocol``; a changed protocol after a judged attempt is refused
   unless declared as a new attempt);
2. fix the arms: uniform, the natural token prior, the best single domain (the expert that scores best on the
   declared metric), the chosen mixture, and RegMix proper, fitted on its own trained swarm (``regmix_arm``);
3. train every arm at every protocol seed with the reference trainer (finished runs are reused);
4. judge: the declared metric per run, the chosen arm's paired margins with t-intervals, held-out vs uniform
   (``core/evaluation/judging.py``), and mark the attempt judged.
"""

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from mergemix_dagster.core.errors import ProtocolError
from mergemix_dagster.core.evaluation.judging import margins_over, metric_value, oriented, paired_margin
from mergemix_dagster.core.evaluation.protocol import mark_judged, protocol_hash, register_attempt, regmix_swarm
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.hierarchy import natural_shares
from mergemix_dagster.core.search.objective import Objective, ScoreScale, fit_score_scale
from mergemix_dagster.core.search.simplex import search_mixture
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.layout import result_key
from mergemix_dagster.resources.trainers import trainer_identity
from mergemix_dagster.steps.reference_runs import REFERENCE_KIND, ReferenceTrainer, scores_by_fingerprint
from mergemix_dagster.steps.search_inputs import (
    available_tokens,
    constraints_from,
    measured_table,
    mixture_objective,
    seed_scale,
    stage_objective,
)

SWARM_STUDY = "regmix_swarm"
LEDGER = "validation_protocol.json"


def ledger_key(stage: str) -> str:
    """The stage's ledger of validation attempts in the store."""
    return result_key(stage, LEDGER)


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def protocol_identity(s: Settings, trainer: ReferenceTrainer, chosen: Mixture) -> dict:
    """What the protocol hash covers: the protocol and every setting that decides its runs or their scores."""
    e = s.evaluation
    return {
        "protocol": s.validation.protocol.judging(),
        "chosen": chosen.as_dict(),
        "runs": {"base": trainer.base_fp, "corpora": trainer.corpora, "recipe": s.experts.model_dump(),
                 "trainer": trainer_identity(s.trainer) if s.trainer.kind != "embedded" else "embedded"},
        "benchmarks": {"tasks": [t.model_dump() for t in e.tasks], "tasks_dir": e.tasks_dir, "limit": e.limit,
                       "heldout": [t.model_dump() for t in s.validation.heldout_tasks]},
        "search": [s.search.model_dump(), s.target.model_dump()],
    }


def register_protocol(s: Settings, store: CheckpointStore, stage: str, trainer: ReferenceTrainer,
                      chosen: Mixture) -> dict:
    """Register (or resume) this protocol's attempt in the stage's ledger; the attempt, with its ``hash``.
    Raises ``ProtocolChangedError`` for a changed protocol after a judged attempt without ``new_attempt``."""
    digest = protocol_hash(protocol_identity(s, trainer, chosen))
    key = ledger_key(stage)
    ledger = store.get_json(key) if store.exists(key) else None
    ledger, attempt = register_attempt(ledger, digest, s.validation.protocol.judging(),
                                       s.validation.protocol.new_attempt, _now())
    store.put_json(key, ledger, overwrite=True)
    return attempt


@dataclass(frozen=True)
class QualityPlan:
    """The arms, the seeds, the objective of the search and the registered attempt, fixed before training."""

    attempt: dict
    arms: dict[str, Mixture]
    seeds: list[int]
    objective: Objective
    scale: ScoreScale
    trainer: ReferenceTrainer
    regmix: dict = field(default_factory=dict)  # swarm runs, mixtures, surrogate quality, prediction
    natural: dict[str, float] = field(default_factory=dict)
    best_single_domain: dict = field(default_factory=dict)


def natural_mixture(s: Settings, tokens: dict[str, int]) -> Mixture:
    """The natural token prior: each domain's share of the tokens available (``merge_candidates``' count)."""
    missing = [d for d in s.domain_names if d not in tokens]
    if missing:
        raise ProtocolError(f"no token count for domains {missing} in merge_candidates: the 'natural' arm is the "
                            "domains' token shares; rerun merge_candidates or drop the arm")
    return Mixture.from_dict(natural_shares({d: tokens[d] for d in s.domain_names}), s.domain_names)


def best_single_domain(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str,
                       objective: Objective, scale: ScoreScale) -> tuple[Mixture, dict]:
    """The vertex of the seed design (one expert) with the best declared metric, as the search measured it;
    and every vertex's value (decided before any quality run)."""
    p = s.validation.protocol
    table = measured_table(s, store, database, stage, 0)
    directions = s.search.objective.directions
    values = {}
    for i, alpha in enumerate(table.alphas):
        if not np.isclose(alpha.max(), 1.0):
            continue
        mixture = Mixture.from_array(s.domain_names, alpha)
        scores = {c: float(table.scores[c][i]) for c in table.scores}
        obj = mixture_objective(scores, mixture, objective, scale) if p.metric == "objective" else None
        domain = s.domain_names[int(np.argmax(alpha))]
        values[domain] = metric_value(p.metric, scores, list(s.capabilities), directions, obj)
    if not values:
        raise ProtocolError("the seed design holds no single-domain mixture: no 'best_single_domain' arm")
    best = max(values, key=lambda d: values[d])
    return Mixture.vertex(s.domain_names, best), {"domain": best, "proxy_metric": values}


def regmix_arm(s: Settings, database: EvaluationDatabase, stage: str, trainer: ReferenceTrainer, chosen: Mixture,
               prior: Mixture, objective: Objective, constraints) -> tuple[Mixture, dict]:
    """RegMix proper: train its own swarm (Dirichlet around the natural prior, never the chosen mixture, not the
    validation design), fit LightGBM per capability on it alone, and search with the same objective and
    constraints as MergeMix (score scale: the swarm's own min-max, as MergeMix's is its seed design's)."""
    p = s.validation.protocol
    draws = regmix_swarm(s.domain_names, prior.as_dict(), p.regmix_runs, p.regmix_concentration, p.regmix_seed,
                         exclude=[chosen.as_dict()])
    seed = trainer.seeds(1)[0]
    mixtures = [Mixture.from_dict(m, s.domain_names) for m in draws]
    runs = [trainer.ensure(m, seed, SWARM_STUDY)[0] for m in mixtures]
    trained = scores_by_fingerprint(database, stage, REFERENCE_KIND, s)
    caps = list(s.capabilities)
    X = np.array([m.as_array() for m in mixtures])
    Y = {c: np.array([trained[r][c] for r in runs]) for c in caps}
    surrogates = CapabilitySurrogates.fit(s.domain_names, X, Y, seed=s.search.seed, cv_folds=s.search.cv_folds)
    found = search_mixture(surrogates, objective, fit_score_scale(Y), n_samples=s.search.n_samples,
                           seed=s.search.seed, constraints=constraints, choice="top_k_mean", top_k=s.search.top_k)
    info = {
        "runs": runs, "seed": seed, "mixtures": draws, "scores": [trained[r] for r in runs],
        "cv_spearman": {c: float(q.spearman) for c, q in surrogates.quality.items()},
        "predicted": found.predicted, "prior": prior.as_dict(), "concentration": p.regmix_concentration,
    }
    return found.mixture, info


def quality_plan(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str, design: dict,
                 trainer: ReferenceTrainer) -> QualityPlan:
    """Register the protocol, then fix every arm (training RegMix's swarm on the way)."""
    chosen = Mixture.from_dict(design["chosen"], s.domain_names)
    attempt = register_protocol(s, store, stage, trainer, chosen)  # before any quality run trains
    tokens = available_tokens(store.get_json(layout.candidates_key(stage)))
    objective, resolution = stage_objective(s, store, database, stage, tokens)
    constraints = constraints_from(s, tokens, resolution)
    scale = seed_scale(s, store, database, stage)
    arms_wanted = s.validation.protocol.arms
    natural = natural_mixture(s, tokens) if {"natural", "regmix"} & set(arms_wanted) else None
    single, single_info = (best_single_domain(s, store, database, stage, objective, scale)
                           if "best_single_domain" in arms_wanted else (None, {}))
    regmix, regmix_info = (regmix_arm(s, database, stage, trainer, chosen, natural, objective, constraints)
                           if "regmix" in arms_wanted else (None, {}))
    known = {"uniform": Mixture.uniform(s.domain_names), "natural": natural, "regmix": regmix,
             "best_single_domain": single, "chosen": chosen}
    arms = {a: known[a] for a in arms_wanted}
    return QualityPlan(attempt, arms, list(s.validation.protocol.seeds), objective, scale, trainer, regmix_info,
                       natural.as_dict() if natural is not None else {}, single_info)


def train_arms(plan: QualityPlan) -> dict[tuple[str, int], str]:
    """Train (or reuse) every arm at every seed; ``(arm, seed) -> run id``."""
    return {(arm, seed): plan.trainer.ensure(mixture, seed, f"quality:{arm}")[0]
            for arm, mixture in plan.arms.items() for seed in plan.seeds}


def judge(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str, plan: QualityPlan,
          runs: dict[tuple[str, int], str]) -> dict:
    """``quality.json``: every run on the declared metric, every capability and held-out task, the chosen arm's
    paired margins on the declared metric, held-out chosen − uniform; the ledger marks the attempt judged."""
    p = s.validation.protocol
    caps = list(s.capabilities)
    directions = s.search.objective.directions
    trained = scores_by_fingerprint(database, stage, REFERENCE_KIND, s)
    heldout = {f"heldout:{t.name}": directions.get(t.capability, "maximize") for t in s.validation.heldout_tasks}
    digest = plan.attempt["hash"]
    rows = []
    for (arm, seed), run_id in runs.items():
        scores = trained[run_id]
        objective = mixture_objective({c: scores[c] for c in caps}, plan.arms[arm], plan.objective, plan.scale)
        rows.append({"arm": arm, "seed": seed, "metric": metric_value(p.metric, scores, caps, directions, objective),
                     "macro_average": metric_value("macro_average", scores, caps, directions),
                     "objective": objective, **{c: scores[c] for c in caps},
                     **{h: scores.get(h, float("nan")) for h in heldout}, "run_id": run_id, "protocol_hash": digest})

    def by_arm(column: str, direction: str = "maximize") -> dict[str, dict[int, float]]:
        return {a: {r["seed"]: oriented(r[column], direction) for r in rows if r["arm"] == a} for a in plan.arms}

    margins = margins_over(by_arm("metric"), "chosen", p.confidence)
    heldout_margins = {}
    if "uniform" in plan.arms:
        for h, direction in heldout.items():
            values = by_arm(h, direction)
            heldout_margins[h] = paired_margin([values["chosen"][x] for x in plan.seeds],
                                               [values["uniform"][x] for x in plan.seeds], p.confidence).as_dict()
    summary = []
    for arm in plan.arms:
        group = [r for r in rows if r["arm"] == arm]
        summary.append({"arm": arm, **{f"{m}_mean": float(np.mean([r[m] for r in group]))
                                      for m in ["metric", *caps, *heldout]},
                        "metric_std": float(np.std([r["metric"] for r in group], ddof=1))})
    key = ledger_key(stage)
    ledger = mark_judged(store.get_json(key), digest, _now(), runs.values())
    store.put_json(key, ledger, overwrite=True)
    attempt = next(a for a in ledger["attempts"] if a["hash"] == digest)
    return {
        "protocol": {**p.judging(), "hash": digest},
        "attempt": attempt,
        "attempts": ledger["attempts"],
        "arms": {a: m.as_dict() for a, m in plan.arms.items()},
        "runs": rows,
        "summary": summary,
        "margins": {a: m.as_dict() for a, m in margins.items()},
        "beats_every_arm": bool(all(m.beats for m in margins.values())),
        "heldout_vs_uniform": heldout_margins,
        "heldout_no_worse_than_uniform": bool(all(m["no_worse"] for m in heldout_margins.values())),
        "regmix": plan.regmix,
        "natural_prior": plan.natural,
        "best_single_domain": plan.best_single_domain,
        "objective": plan.objective.describe(),
    }


__all__ = ["SWARM_STUDY", "LEDGER", "ledger_key", "protocol_identity", "register_protocol", "QualityPlan",
           "natural_mixture", "best_single_domain", "regmix_arm", "quality_plan", "train_arms", "judge"]
