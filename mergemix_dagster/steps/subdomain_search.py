"""The work of the sub-domain assets (``assets/hierarchy/``): the search inside one split domain, the
bottom-up consolidated expert, and the stage's mixture rewritten as coarse × fine.

The search inside a domain is the flat pipeline's code on that domain's sub-domain experts: a seed design,
in-memory merges scored with lm-eval (rows ``kind = 'subdomain'``), LightGBM per capability, the simplex
search, a verifying merge, and the best measured mixture kept when it beats the verified choice beyond paired
noise (the coarse ``chosen_mixture``'s rule, ``core/search/choose.py``).
"""


import tempfile
import time
from pathlib import Path

import dagster as dg

from mergemix_dagster.core.search.designs import seed_design
from mergemix_dagster.core.evaluation.workers import ProxyJob, ScorerSpec
from mergemix_dagster.core.training.exports import token_plan_for
from mergemix_dagster.core.search.choose import MarginRule, choose_verified_or_measured, chosen_objectives, predict_at
from mergemix_dagster.core.search.constraints import MixtureConstraints
from mergemix_dagster.core.search.hierarchy import fine_objective, hierarchical_weights, natural_shares
from mergemix_dagster.core.merge.streaming import merge_checkpoints
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.model import checkpoint_fingerprint
from mergemix_dagster.core.search.objective import Objective, fit_score_scale
from mergemix_dagster.core.progress import Progress
from mergemix_dagster.core.evaluation.scores import capability_means, capability_table
from mergemix_dagster.core.search.simplex import search_mixture
from mergemix_dagster.core.data.subdomains import leaf_name
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import layout
from mergemix_dagster.steps.search_inputs import count_domain_tokens
from mergemix_dagster.resources.layout import candidate_fingerprint
from mergemix_dagster.steps.proxy_scoring import finished_fingerprints
from mergemix_dagster.resources.artifacts import base_checkpoint, checkpoint_dir, configured_rows, read_pointer
from mergemix_dagster.steps.proxy_scoring import fingerprinted, lm_eval_results_path, proxy_scorer_spec, score_jobs, score_rows
from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
from mergemix_dagster.steps.mixture_choice import candidate_items, paired_items
from mergemix_dagster.steps.search_inputs import mixture_objective, table_objective

HIERARCHY_CODE_VERSION = "1"  # of the hierarchy assets and the consolidated experts' keys
#: of ``subdomain_mixture`` (2: a measured sub-domain mixture replaces the verified choice only beyond paired noise)
SUBDOMAIN_CHOICE_CODE_VERSION = "2"
SUBDOMAIN_KIND = "subdomain"
SUBDOMAIN_VERIFY_KIND = "subdomain_verify"


def _leaves(s: Settings, domain: str) -> list[str]:
    return [leaf_name(domain, sub.name) for sub in s.domain(domain).subdomains]


def subdomain_scorer_spec(store: CheckpointStore, stage: str, s: Settings, leaves: list[str]) -> ScorerSpec:
    """The stage's proxy scorer with one domain's sub-domain experts in place of the domain experts."""
    return proxy_scorer_spec(store, stage, s,
                             expert_dirs={leaf: subdomain_expert_dir(store, stage, leaf)[0] for leaf in leaves})


def subdomain_expert_dir(store: CheckpointStore, stage: str, leaf: str) -> tuple[Path, str]:
    return checkpoint_dir(store, layout.subdomain_expert_pointer(stage, leaf), f"sub-domain expert {leaf!r} of {stage!r}")


def fine_candidate_id(domain: str, i: int | str) -> str:
    return f"{domain}/c{i:03d}" if isinstance(i, int) else f"{domain}/{i}"


def optimize_subdomains(context, s: Settings, store: CheckpointStore, database: EvaluationDatabase,
                        domain: str, stage: str) -> dict:
    """Seed design → scores → surrogates → search → verify, inside ``domain``; writes its ``mixture.json``."""
    leaves = _leaves(s, domain)
    base = read_pointer(store, layout.base_pointer(stage), f"base of stage {stage!r}")
    experts = {leaf: read_pointer(store, layout.subdomain_expert_pointer(stage, leaf), f"expert {leaf!r}")["fingerprint"]
               for leaf in leaves}
    recipe = {"base": base["fingerprint"], "experts": experts, "method": s.search.merge_method}
    tokens = count_domain_tokens(store, stage, leaves)
    prior = natural_shares(tokens) if s.search.objective.prior != "uniform" else {x: 1 / len(leaves) for x in leaves}
    n = max(s.search.n_candidates, len(leaves) + 1)
    design = seed_design(leaves, n, seed=s.search.seed, priors=[Mixture.from_dict(prior, leaves)])
    candidates = [{"candidate_id": fine_candidate_id(domain, i), "alpha": m.as_dict(),
                   "fingerprint": candidate_fingerprint(recipe, m.as_dict())} for i, m in enumerate(design)]
    done = finished_fingerprints(database, stage, s)
    todo = [c for c in candidates if done.get(c["candidate_id"]) != c["fingerprint"]]
    context.log.info(f"{domain}: {len(candidates)} sub-domain candidates, {len(todo)} to score")
    spec = subdomain_scorer_spec(store, stage, s, leaves) if todo else None
    fingerprints = evaluation_fingerprints(s)
    by_id = {c["candidate_id"]: c for c in todo}
    progress = Progress(len(todo), f"{domain} sub-domain candidates", log=context.log.info, unit="candidate")

    def write(job: ProxyJob, scores: list, elapsed: float) -> None:
        """Rows of one scored candidate, written as it finishes (a kill loses only those in flight)."""
        c = by_id[job.candidate_id]
        database.upsert_evaluations(score_rows(stage, c["candidate_id"], SUBDOMAIN_KIND, c["alpha"],
                                               fingerprinted(scores, fingerprints), c["fingerprint"]))
        progress.advance(candidate=c["candidate_id"])

    if todo:
        jobs = [ProxyJob(c["candidate_id"], c["alpha"], str(lm_eval_results_path(s, stage, c["candidate_id"])))
                for c in todo]
        score_jobs(context, s, stage, store, spec, jobs, write, workers=s.evaluation.workers)
    current = {c["candidate_id"]: c["fingerprint"] for c in candidates}
    rows = configured_rows(database.evaluations(stage), s)
    rows = rows[rows["candidate_id"].map(current) == rows["model_fingerprint"]]
    table = capability_table(rows, leaves, s.capabilities)

    o = s.search.objective
    coarse = Objective(weights=s.search.objective_weights, directions=dict(o.directions), aggregate=o.aggregate)
    objective = fine_objective(coarse, s.domain(domain).capability, s.capabilities, prior, kl_weight=o.kl_weight)
    scale = fit_score_scale(table.scores)
    surrogates = CapabilitySurrogates.fit(leaves, table.alphas, table.scores, seed=s.search.seed,
                                          cv_folds=min(s.search.cv_folds, len(table.candidate_ids)),
                                          ensemble=s.search.ensemble)
    measured = [Mixture.from_array(leaves, a) for a in table.alphas]
    result = search_mixture(surrogates, objective, scale, n_samples=s.search.n_samples, seed=s.search.seed,
                            include=measured, top_k=s.search.top_k, choice=s.search.choice, refine=s.search.refine,
                            lcb_quantile=s.search.lcb_quantile)
    verify_id = fine_candidate_id(domain, "verify")
    verify_fp = candidate_fingerprint(recipe, result.mixture.as_dict())
    if done.get(verify_id) != verify_fp:
        spec = spec or subdomain_scorer_spec(store, stage, s, leaves)

        def write_verify(job: ProxyJob, scores: list, elapsed: float) -> None:
            database.upsert_evaluations(score_rows(stage, verify_id, SUBDOMAIN_VERIFY_KIND, job.alpha,
                                                   fingerprinted(scores, fingerprints), verify_fp))

        score_jobs(context, s, stage, store, spec, [ProxyJob(verify_id, result.mixture.as_dict())], write_verify)
    verify_rows = configured_rows(database.evaluations(stage), s)
    verify_rows = verify_rows[(verify_rows["candidate_id"] == verify_id) & (verify_rows["model_fingerprint"] == verify_fp)]
    verified = capability_means(zip(verify_rows["capability"], verify_rows["value"]))
    verified_value = mixture_objective(verified, result.mixture, objective, scale)
    chosen = choose_verified_or_measured(
        result.mixture, verified, verified_value, table, table_objective(table, objective, scale),
        MixtureConstraints.none(leaves),
        items=paired_items(s, database, stage, table.candidate_ids, candidate_items(s, verify_rows)),
        rule=MarginRule(objective, scale, quantile=s.search.measured_margin_quantile, seed=s.search.seed),
    )
    if chosen.measured_id is not None:
        context.log.warning(f"{domain}: verified sub-domain choice {verified_value:.4f} < measured "
                            f"{chosen.measured_id} {chosen.objective:.4f}: choosing the measured mixture")
    predicted_objective, _ = chosen_objectives(chosen, result.predicted_objective,
                                               predict_at(surrogates, chosen.mixture, s.search.lcb_quantile),
                                               objective, scale)
    payload = {
        "domain": domain, "stage": stage, "hierarchy": s.search.hierarchy,
        "weights": chosen.mixture.as_dict(), "chosen_from": chosen.chosen_from, "objective": objective.describe(),
        "predicted_objective": predicted_objective, "verified_objective": float(chosen.objective),
        "search_choice": result.mixture.as_dict(), "search_verified_objective": float(verified_value),
        "comparison": chosen.comparison or {}, "prior": prior, "available_tokens": tokens,
        "mixtures_measured": len(table.candidate_ids), "scored_now": len(todo),
        "cv_spearman": {q.capability: float(q.spearman) for q in surrogates.quality.values()},
    }
    store.put_json(layout.subdomain_mixture_key(stage, domain), payload, overwrite=True)
    return payload


def consolidate_domain(context, s: Settings, store: CheckpointStore, domain: str, stage: str) -> dg.MaterializeResult:
    """Bottom-up: the domain's expert is its sub-domain experts merged at the domain's chosen weights."""
    fine = read_pointer(store, layout.subdomain_mixture_key(stage, domain), f"sub-domain weights of {domain!r}")
    leaves = _leaves(s, domain)
    weights = Mixture.from_dict(fine["weights"], leaves)
    base_dir, base_fp = base_checkpoint(store, stage)
    dirs, fps = {}, {}
    for leaf in leaves:
        dirs[leaf], fps[leaf] = subdomain_expert_dir(store, stage, leaf)
    version = layout.content_version({"consolidated": weights.as_dict(), "experts": fps, "base": base_fp,
                                      "method": s.search.merge_method, "code": HIERARCHY_CODE_VERSION})
    key = layout.expert_key(stage, domain, version)
    if not store.exists(key):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            merge_checkpoints(base_dir, dirs, weights, Path(tmp) / "merged", method=s.search.merge_method)
            store.put_dir(Path(tmp) / "merged", key)
            context.log.info(f"consolidated {domain} from {weights.label(3)} in {time.perf_counter() - start:.1f}s")
    fingerprint = checkpoint_fingerprint(store.get_dir(key))
    store.put_json(layout.expert_pointer(stage, domain),
                   {"key": key, "fingerprint": fingerprint, "base": base_fp, "consolidated_from": weights.as_dict()},
                   overwrite=True)
    return dg.MaterializeResult(
        metadata={"domain": domain, "stage": stage, "consolidated_from": dg.MetadataValue.json(weights.as_dict()),
                  "uri": dg.MetadataValue.path(store.uri(key)), "fingerprint": fingerprint},
        data_version=dg.DataVersion(fingerprint[:16]),
    )


def combine_levels(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str):
    """The stage's ``mixture.json`` rewritten flat over sub-domains; the coarse payload is kept under ``coarse``."""
    current = store.get_json(layout.mixture_key(stage))
    coarse_payload = current["coarse"] if current.get("hierarchy") else current
    coarse = {d: float(w) for d, w in coarse_payload["weights"].items()}
    fine_payloads = {d: store.get_json(layout.subdomain_mixture_key(stage, d)) for d in s.split_domains}
    fine = {d: {leaf.partition("/")[2]: w for leaf, w in p["weights"].items()} for d, p in fine_payloads.items()}
    flat = hierarchical_weights(coarse, fine, s.split_domains)
    tokens = {d: n for d, n in coarse_payload.get("available_tokens", {}).items() if d not in s.split_domains}
    for p in fine_payloads.values():
        tokens |= p["available_tokens"]
    payload = {
        "stage": stage, "weights": flat, "hierarchy": s.search.hierarchy,
        "coarse_weights": coarse, "fine_weights": fine,
        "predicted_objective": coarse_payload.get("predicted_objective"),
        "verified_objective": coarse_payload.get("verified_objective"),
        "fine": {d: {k: p[k] for k in ("chosen_from", "objective", "predicted_objective", "verified_objective",
                                      "mixtures_measured")} for d, p in fine_payloads.items()},
        "available_tokens": tokens,
        "coarse": coarse_payload,
    }
    plan = token_plan_for(flat, s, tokens)
    if plan is not None:
        payload["token_plan"] = plan.to_dict()
    store.put_json(layout.mixture_key(stage), payload, overwrite=True)
    database.upsert_chosen_mixture(stage, flat, payload["predicted_objective"], payload["verified_objective"],
                                   {k: v for k, v in payload.items() if k not in ("weights", "coarse")})
    return payload, plan
