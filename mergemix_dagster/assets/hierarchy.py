"""Sub-domains in the pipeline and the hierarchical search (MergeMix §3.5), as a separate asset family.

```
subdomain_corpus[code/repos] ─► subdomain_expert[code/repos|s0] ─► subdomain_mixture[code|s0] ─┐
                                                                    (bottom_up) ▼               │
                                   domain_corpus[code] ─► expert_checkpoint[code|s0] ─► … ─► chosen_mixture[s0]
                                                                                                 ▼
                                                                          hierarchical_mixture[s0]
```

Partition keys (docs/hierarchy.md explains the choice): a sub-domain's key is its flat mixture name
``code/repos`` in its own static ``subdomain`` dimension, crossed with ``stage`` for experts; the fine search
is keyed ``domain × stage`` over the split domains only. Every key names one thing the UI can show stale.
Flat configs define none of these assets, so their asset keys and cache keys are unchanged.
"""


import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np

from ..core.corpora import corpus_fingerprint
from ..core.designs import seed_design
from ..core.exports import token_plan_for, write_exports
from ..core.hierarchy import fine_objective, hierarchical_weights, natural_shares, prefer_measured, study_arms
from ..core.merge import InMemoryMerger
from ..core.merge.streaming import merge_checkpoints
from ..core.mixture import Mixture
from ..core.model import checkpoint_fingerprint, load_checkpoint, load_model_state, resolve_device
from ..core.objective import Objective, fit_score_scale
from ..core.progress import Progress
from ..core.scores import capability_means, capability_table
from ..core.search import search_mixture
from ..core.subdomains import leaf_name
from ..core.surrogate import CapabilitySurrogates
from ..partitions import PipelinePartitions
from ..resources import CheckpointStore, EvaluationDatabase
from ..resources.settings import PipelineSettings
from ..settings import Settings
from . import layout
from .candidates import candidate_fingerprint, count_domain_tokens
from .corpora import (
    CORPUS_CODE_VERSION,
    _corpus_metadata,
    _write_corpus,
    read_subdomain_documents,
    subdomain_source_fingerprint,
)
from .evaluations import finished_fingerprints
from .experts import EXPERT_CODE_VERSION, TRAINING_POOL, build_expert_assets, train_or_reuse_expert
from .loading import base_checkpoint, checkpoint_dir, configured_rows, read_pointer
from .metadata import number
from .proxies import ProxyScorer, build_evaluator, lm_eval_results_path, score_rows
from .references import REFERENCE_KIND, ReferenceTrainer, scores_by_fingerprint
from .searching import degenerate, effective_domains, mixture_objective, table_objective

HIERARCHY_CODE_VERSION = "1"
SUBDOMAIN_KIND = "subdomain"
SUBDOMAIN_VERIFY_KIND = "subdomain_verify"
FINE_DEGENERATE_CHECK = "subdomain_mixture_not_degenerate"

SUBDOMAIN_ASSETS = ("subdomain_corpus",)
FINE_ASSETS = ("subdomain_expert", "subdomain_mixture", "hierarchical_mixture")


@dataclass(frozen=True)
class HierarchyPartitions:
    subdomain: dg.StaticPartitionsDefinition  # leaves of every split domain: code/repos, ...
    split_domain: dg.StaticPartitionsDefinition  # domains that list sub-domains
    subdomain_stage: dg.MultiPartitionsDefinition
    split_domain_stage: dg.MultiPartitionsDefinition
    leaf_domain: dict[str, str]  # code/repos -> code


def build_hierarchy_partitions(settings: Settings, parts: PipelinePartitions) -> HierarchyPartitions:
    leaf_domain = {leaf_name(d.name, sub.name): d.name for d in settings.domains for sub in d.subdomains}
    subdomain = dg.StaticPartitionsDefinition(list(leaf_domain))
    split = dg.StaticPartitionsDefinition(list(settings.split_domains))
    return HierarchyPartitions(
        subdomain=subdomain,
        split_domain=split,
        subdomain_stage=dg.MultiPartitionsDefinition({"stage": parts.stage, "subdomain": subdomain}),
        split_domain_stage=dg.MultiPartitionsDefinition({"domain": split, "stage": parts.stage}),
        leaf_domain=leaf_domain,
    )


def subdomain_expert_partition_key(leaf: str, stage: str) -> dg.MultiPartitionKey:
    """CLI spelling ``stage|code/repos`` (dimensions in alphabetical order)."""
    return dg.MultiPartitionKey({"stage": stage, "subdomain": leaf})


def split_domain_partition_key(domain: str, stage: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"domain": domain, "stage": stage})


def _leaves(s: Settings, domain: str) -> list[str]:
    return [leaf_name(domain, sub.name) for sub in s.domain(domain).subdomains]


def _subdomain(s: Settings, leaf: str):
    domain, _, name = leaf.partition("/")
    cfg = s.domain(domain)
    return cfg, next(sub for sub in cfg.subdomains if sub.name == name)


# ------------------------------------------------------------------------------------------- scoring
def open_subdomain_scorer(store: CheckpointStore, stage: str, s: Settings, leaves: list[str]) -> ProxyScorer:
    """The stage base and one domain's sub-domain experts, loaded once for in-memory merging."""
    device = str(resolve_device(s.experts.device))
    base_dir, _ = base_checkpoint(store, stage)
    model, tokenizer = load_checkpoint(base_dir, device=device)
    model.eval()
    states = {leaf: load_model_state(subdomain_expert_dir(store, stage, leaf)[0]) for leaf in leaves}
    merger = InMemoryMerger(model, load_model_state(base_dir), states, method=s.search.merge_method)
    return ProxyScorer(tuple(leaves), model, tokenizer, merger, build_evaluator(s))


def subdomain_expert_dir(store: CheckpointStore, stage: str, leaf: str) -> tuple[Path, str]:
    return checkpoint_dir(store, layout.subdomain_expert_pointer(stage, leaf), f"sub-domain expert {leaf!r} of {stage!r}")


def fine_candidate_id(domain: str, i: int | str) -> str:
    return f"{domain}/c{i:03d}" if isinstance(i, int) else f"{domain}/{i}"


def _weights_table(rows: list[dict]) -> dg.MetadataValue:
    columns = list(rows[0]) if rows else []
    return dg.MetadataValue.table(
        [dg.TableRecord({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string" if c in ("name", "domain", "subdomain") else "float")
                                       for c in columns]),
    )


# ------------------------------------------------------------------------------------------- assets
def build_hierarchy_assets(settings: Settings, parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    hp = build_hierarchy_partitions(settings, parts)
    same_subdomain = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="subdomain")
    same_stage = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="stage")
    subdomains_of_domain = dg.MultiPartitionMapping({
        "subdomain": dg.DimensionPartitionMapping("domain", dg.StaticPartitionMapping(hp.leaf_domain)),
        "stage": dg.DimensionPartitionMapping("stage", dg.IdentityPartitionMapping()),
    })

    @dg.asset(partitions_def=hp.subdomain, group_name="corpora", code_version=CORPUS_CODE_VERSION, kinds={"python"})
    def subdomain_corpus(
        context: dg.AssetExecutionContext, settings: PipelineSettings, store: CheckpointStore
    ) -> dg.MaterializeResult:
        """One sub-domain's documents (``code/repos``), validated, capped, stored by content hash."""
        s = settings.get()
        leaf = context.partition_key
        cfg, sub = _subdomain(s, leaf)
        docs, source = read_subdomain_documents(cfg, sub, store, seed=s.search.seed)
        fingerprint = corpus_fingerprint(docs)
        uri = _write_corpus(store, docs, layout.corpus_key(leaf, fingerprint))
        store.put_json(layout.corpus_pointer(leaf),
                       {"key": layout.corpus_key(leaf, fingerprint), "fingerprint": fingerprint, "source": source},
                       overwrite=True)
        return dg.MaterializeResult(
            metadata=_corpus_metadata(docs, fingerprint, uri, source)
            | {"source_fingerprint": dg.MetadataValue.text(subdomain_source_fingerprint(cfg, sub))},
            data_version=dg.DataVersion(fingerprint[:16]),
        )

    assets = [subdomain_corpus]
    if settings.search.hierarchy == "none":
        return assets

    @dg.asset(
        partitions_def=hp.subdomain_stage,
        group_name="experts",
        code_version=EXPERT_CODE_VERSION,
        deps=[dg.AssetDep("subdomain_corpus", partition_mapping=same_subdomain),
              dg.AssetDep("stage_base", partition_mapping=same_stage)],
        kinds={"pytorch"},
        pool=TRAINING_POOL,
    )
    def subdomain_expert(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """One expert per sub-domain: the stage base trained on that sub-domain alone, with the expert recipe."""
        keys = context.partition_key.keys_by_dimension
        return train_or_reuse_expert(context, settings.get(), store, database, keys["subdomain"], keys["stage"],
                                     key_of=layout.subdomain_expert_key, pointer_of=layout.subdomain_expert_pointer)

    @dg.asset(
        partitions_def=hp.split_domain_stage,
        group_name="hierarchy",
        code_version=HIERARCHY_CODE_VERSION,
        deps=[dg.AssetDep("subdomain_expert", partition_mapping=subdomains_of_domain)],
        kinds={"duckdb", "lightgbm"},
        check_specs=[dg.AssetCheckSpec(
            FINE_DEGENERATE_CHECK, asset="subdomain_mixture",
            description="The weights inside the domain are a mix a team would train on: no sub-domain holds 90 % "
            "or more (a one-capability objective over near-linear scores tends to a single sub-domain).",
        )],
    )
    def subdomain_mixture(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """The weights inside one domain: its own seed design of merges of its sub-domain experts, scored with
        lm-eval, one LightGBM per capability, the simplex search, and a verifying merge."""
        s = settings.get()
        keys = context.partition_key.keys_by_dimension
        domain, stage = keys["domain"], keys["stage"]
        payload = optimize_subdomains(context, s, store, database, domain, stage)
        rows = [{"subdomain": leaf, "weight": w, "natural": payload["prior"][leaf]}
                for leaf, w in payload["weights"].items()]
        why = degenerate(payload["weights"])
        check = dg.AssetCheckResult(
            check_name=FINE_DEGENERATE_CHECK, passed=why is None, severity=dg.AssetCheckSeverity.WARN,
            description=why or f"{effective_domains(payload['weights']):.2f} effective sub-domains (exp entropy)",
        )
        return dg.MaterializeResult(
            check_results=[check],
            metadata={
                "weights": _weights_table(rows),
                "objective": payload["objective"],
                "chosen_from": payload["chosen_from"],
                "predicted_objective": number(payload["predicted_objective"]),
                "verified_objective": number(payload["verified_objective"]),
                "candidates": dg.MetadataValue.int(payload["mixtures_measured"]),
                "candidates_scored_now": dg.MetadataValue.int(payload["scored_now"]),
                "available_tokens": dg.MetadataValue.json(payload["available_tokens"]),
                "uri": dg.MetadataValue.path(store.uri(layout.subdomain_mixture_key(stage, domain))),
            },
            data_version=dg.DataVersion(layout.content_version(payload["weights"])),
        )

    @dg.asset(
        partitions_def=parts.stage,
        group_name="hierarchy",
        code_version=HIERARCHY_CODE_VERSION,
        deps=["chosen_mixture", dg.AssetDep("subdomain_mixture", partition_mapping=same_stage)],
        kinds={"duckdb"},
    )
    def hierarchical_mixture(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Coarse × fine weights, flat over sub-domains, in ``mixture.json`` (with both levels) and the exports."""
        s = settings.get()
        stage = context.partition_key
        payload, plan = combine_levels(s, store, database, stage)
        exports = write_exports(payload, plan, s, s.home_path / "exports" / stage)
        for path in exports.values():
            store.put_file(path, f"stages/{stage}/exports/{path.name}", overwrite=True)
        rows = []
        for name, w in payload["weights"].items():
            domain, _, sub = name.partition("/")
            rows.append({"name": name, "coarse": payload["coarse_weights"][domain],
                         "fine": payload["fine_weights"][domain][sub] if sub else 1.0, "weight": w})
        return dg.MaterializeResult(
            metadata={
                "mixture": _weights_table(rows),
                "hierarchy": s.search.hierarchy,
                "coarse_weights": dg.MetadataValue.json({d: round(w, 4) for d, w in payload["coarse_weights"].items()}),
                "uri": dg.MetadataValue.path(store.uri(layout.mixture_key(stage))),
                "exports": dg.MetadataValue.json({fmt: str(p) for fmt, p in exports.items()}),
                **({"token_plan": dg.MetadataValue.md(plan.to_markdown())} if plan is not None else {}),
            },
            data_version=dg.DataVersion(layout.content_version(payload["weights"])),
        )

    @dg.asset(
        partitions_def=parts.stage,
        group_name="hierarchy",
        code_version=HIERARCHY_CODE_VERSION,
        deps=["hierarchical_mixture"],
        kinds={"pytorch", "duckdb"},
        pool=TRAINING_POOL,
    )
    def hierarchy_study(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Trained comparison of the paper's Table 3: ⟨MergeMix, MergeMix⟩ vs ⟨MergeMix, uniform⟩ vs
        ⟨uniform, uniform⟩, each trained from the stage base (validation reference runs, quality_seeds seeds)."""
        s = settings.get()
        stage = context.partition_key
        study = run_hierarchy_study(s, store, database, stage, log=context.log.info, context=context)
        return dg.MaterializeResult(
            metadata={
                "arms": dg.MetadataValue.md(study["markdown"]),
                "seeds": dg.MetadataValue.int(len(study["seeds"])),
                "uri": dg.MetadataValue.path(store.uri(study_key(stage))),
            },
            data_version=dg.DataVersion(layout.content_version(study["scores"])),
        )

    return assets + [subdomain_expert, subdomain_mixture, hierarchical_mixture, hierarchy_study]


def study_key(stage: str) -> str:
    return f"stages/{stage}/hierarchy_study.json"


def run_hierarchy_study(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str,
                        log=print, context=None) -> dict:
    """Train and score each arm at each seed (finished runs are reused), then tabulate per arm."""
    mixture = store.get_json(layout.mixture_key(stage))
    subs = {d: [sub.name for sub in s.domain(d).subdomains] for d in s.split_domains}
    arms = study_arms(mixture["coarse_weights"], mixture["fine_weights"], subs)
    trainer = LeafReferenceTrainer(s, store, database, stage, log=log, context=context)
    seeds = trainer.seeds(s.validation.quality_seeds)
    runs = {arm: {seed: trainer.ensure(Mixture.from_dict(w), seed, "hierarchy_study")[0] for seed in seeds}
            for arm, w in arms.items()}
    scored = scores_by_fingerprint(database, stage, REFERENCE_KIND, s)
    scores = {arm: {str(seed): scored.get(run_id, {}) for seed, run_id in by_seed.items()}
              for arm, by_seed in runs.items()}
    caps = list(s.capabilities)
    lines = ["| arm | seed | " + " | ".join(caps) + " | macro | held-out |", "|---" * (len(caps) + 4) + "|"]
    for arm, by_seed in scores.items():
        for seed, sc in by_seed.items():
            macro = float(np.mean([sc[c] for c in caps if c in sc])) if sc else float("nan")
            heldout = [v for k, v in sc.items() if k.startswith("heldout:")]
            lines.append(f"| {arm} | {seed} | " + " | ".join(f"{sc.get(c, float('nan')):.4f}" for c in caps)
                         + f" | {macro:.4f} | {np.mean(heldout) if heldout else float('nan'):.4f} |")
    payload = {"stage": stage, "arms": arms, "seeds": seeds, "runs": runs, "scores": scores,
               "markdown": "\n".join(lines)}
    store.put_json(study_key(stage), payload, overwrite=True)
    return payload


class LeafReferenceTrainer(ReferenceTrainer):
    """The validation's reference runs over flat names: sub-domains of split domains, whole other domains."""

    def __post_init__(self) -> None:
        self.base_fp = read_pointer(self.store, layout.base_pointer(self.stage), "the stage base")["fingerprint"]
        names = [leaf for d in self.s.domains for leaf in d.leaves()]
        names += ["general"] if self.s.experts.general_fraction > 0 else []
        self.corpora = {n: read_pointer(self.store, layout.corpus_pointer(n), f"corpus {n!r}")["fingerprint"]
                        for n in names}


# ------------------------------------------------------------------------------------------- the work
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
    scorer = open_subdomain_scorer(store, stage, s, leaves) if todo else None
    progress = Progress(len(todo), f"{domain} sub-domain candidates", log=context.log.info, unit="candidate")
    for c in todo:
        scores = scorer.score(Mixture.from_dict(c["alpha"], leaves),
                              results_path=lm_eval_results_path(s, stage, c["candidate_id"]))
        database.upsert_evaluations(score_rows(stage, c["candidate_id"], SUBDOMAIN_KIND, c["alpha"], scores,
                                               c["fingerprint"]))
        progress.advance(candidate=c["candidate_id"])
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
        scorer = scorer or open_subdomain_scorer(store, stage, s, leaves)
        database.upsert_evaluations(score_rows(stage, verify_id, SUBDOMAIN_VERIFY_KIND, result.mixture.as_dict(),
                                               scorer.score(result.mixture), verify_fp))
    verify_rows = configured_rows(database.evaluations(stage), s)
    verify_rows = verify_rows[(verify_rows["candidate_id"] == verify_id) & (verify_rows["model_fingerprint"] == verify_fp)]
    verified = capability_means(zip(verify_rows["capability"], verify_rows["value"]))
    verified_value = mixture_objective(verified, result.mixture, objective, scale)
    chosen, chosen_from, chosen_value = prefer_measured(
        result.mixture, verified_value, table.alphas, table_objective(table, objective, scale), table.candidate_ids
    )
    payload = {
        "domain": domain, "stage": stage, "hierarchy": s.search.hierarchy,
        "weights": chosen.as_dict(), "chosen_from": chosen_from, "objective": objective.describe(),
        "predicted_objective": float(result.predicted_objective), "verified_objective": float(chosen_value),
        "search_choice": result.mixture.as_dict(), "prior": prior, "available_tokens": tokens,
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


# ------------------------------------------------------------------------------------------- wiring
HIERARCHY_JOB_ASSETS = {
    "subdomain_corpora_job": ("subdomain_corpus", "One sub-domain corpus."),
    "subdomain_experts_job": ("subdomain_expert", "One sub-domain expert (sub-domain × stage)."),
    "subdomain_mixture_job": ("subdomain_mixture", "The weights inside one split domain (domain × stage)."),
    "hierarchy_job": ("hierarchical_mixture", "Coarse × fine weights, flat over sub-domains, of one stage."),
    "hierarchy_study_job": ("hierarchy_study", "Trained ⟨MergeMix, MergeMix⟩ vs ⟨MergeMix, uniform⟩ vs ⟨uniform, uniform⟩."),
}


def with_hierarchy(
    assets: list[dg.AssetsDefinition], jobs: list, parts: PipelinePartitions, settings: Settings
) -> tuple[list[dg.AssetsDefinition], list]:
    """The pipeline's assets and jobs plus the sub-domain family; unchanged for a config without sub-domains.

    Bottom-up, a split domain's ``expert_checkpoint`` is the consolidated merge, so it depends on that
    domain's ``subdomain_mixture``.
    """
    if not settings.split_domains:
        return assets, jobs
    new = build_hierarchy_assets(settings, parts)
    if settings.search.hierarchy == "bottom_up":
        same_split_domain = dg.MultiPartitionMapping({
            "domain": dg.DimensionPartitionMapping(
                "domain", dg.StaticPartitionMapping({d: d for d in settings.split_domains})),
            "stage": dg.DimensionPartitionMapping("stage", dg.IdentityPartitionMapping()),
        })
        consolidated = dg.AssetDep("subdomain_mixture", partition_mapping=same_split_domain)
        assets = [a for a in assets if dg.AssetKey("expert_checkpoint") not in a.keys]
        assets += build_expert_assets(parts, consolidated=consolidated)
    names = {a.key.to_user_string() for a in new}
    new_jobs = [dg.define_asset_job(job, selection=[asset], description=text)
                for job, (asset, text) in HIERARCHY_JOB_ASSETS.items() if asset in names]
    return [*assets, *_versioned(new, settings)], [*jobs, *new_jobs]


SETTINGS_READ_BY = {
    "subdomain_corpus": lambda s: [d.model_dump() for d in s.domains if d.subdomains],
    "subdomain_expert": lambda s: s.experts.model_dump(),
    "subdomain_mixture": lambda s: [s.search.model_dump(), s.evaluation.model_dump()],
    "hierarchical_mixture": lambda s: [s.search.model_dump(), s.target.model_dump(), s.export.model_dump()],
    "hierarchy_study": lambda s: {"validation": s.validation.model_dump(), "evaluation": s.evaluation.model_dump()},
}


def _versioned(assets: list[dg.AssetsDefinition], settings: Settings) -> list[dg.AssetsDefinition]:
    """Settings an asset reads are part of its code version (as ``versions.with_settings_versions`` does)."""
    def versioned(spec: dg.AssetSpec) -> dg.AssetSpec:
        read = SETTINGS_READ_BY.get(spec.key.to_user_string())
        if read is None:
            return spec
        return spec.replace_attributes(code_version=f"{spec.code_version}+{layout.content_version(read(settings), 8)}")

    return [a.map_asset_specs(versioned) for a in assets]
