"""Merged candidates of a stage: the seed design of mixtures α and the recipe that merges each one.

Candidates are not written as checkpoints: the evaluation asset merges each into one loaded model in
memory. What is stored is the recipe — α, the expert and base fingerprints, the merge method — which is
enough to rebuild any candidate exactly (``mergemix merge`` writes one to disk on demand).
"""


import dagster as dg

from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.assets.partitions import SAME_STAGE, PipelinePartitions
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.resources import layout
from mergemix_dagster.resources.artifacts import read_pointer
from mergemix_dagster.steps.search_inputs import prior_mixture
from mergemix_dagster.steps.evidence import SEED_ORIGIN, earlier_evidence, evidence_lines, stage_design
from mergemix_dagster.steps.search_inputs import count_domain_tokens
from mergemix_dagster.steps.metadata import number
from mergemix_dagster.steps.task_vectors import as_json, markdown, stage_task_vectors

CANDIDATES_CODE_VERSION = "2"


def build_candidate_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @dg.asset(
        partitions_def=parts.stage,
        group_name="search",
        code_version=CANDIDATES_CODE_VERSION,
        deps=[dg.AssetDep("expert_checkpoint", partition_mapping=SAME_STAGE)],
    )
    def merge_candidates(
        context: dg.AssetExecutionContext, settings: PipelineSettings, store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Seed set of N mixtures (vertices, centroid, natural-token prior, midpoints, interior fill) + merge recipes,
        and the experts' task vectors (‖Δ‖/‖base‖, cosines: ``steps/task_vectors.py``). When the domains
        change, the earlier points on the new simplex are kept and only the missing ones are added
        (``steps/evidence.py``); metadata ``evidence`` says which were reused and which are new."""
        s = settings.get()
        stage = context.partition_key
        base = read_pointer(store, layout.base_pointer(stage), f"base of stage {stage!r}")
        experts = {
            d: read_pointer(store, layout.expert_pointer(stage, d), f"expert {d!r} of stage {stage!r}")["fingerprint"]
            for d in s.domain_names
        }
        recipe = {"stage": stage, "base": base["fingerprint"], "experts": experts, "method": s.search.merge_method}
        tokens = count_domain_tokens(store, stage, s.domain_names)
        prior = Mixture.from_dict(prior_mixture(s, tokens), s.domain_names)
        # earlier evaluations of this stage stay evidence where they are the same merged models (steps/evidence.py)
        key = layout.candidates_key(stage)
        previous = store.get_json(key) if store.exists(key) else None
        evidence = earlier_evidence(store, database, stage, s)
        used = set(database.evaluations(stage)["candidate_id"])
        candidates, summary = stage_design(s, recipe, previous, evidence, prior, used)
        for line in evidence_lines(summary):
            context.log.info(line)
        # How far the experts are from the regime a merge assumes (small, not too conflicting task vectors).
        vectors = as_json(stage_task_vectors(store, stage, s.domain_names))
        payload = recipe | {"domains": list(s.domain_names), "available_tokens": tokens, "candidates": candidates,
                            "task_vectors": vectors}
        if summary["origin"] != SEED_ORIGIN or summary["reused"]:  # a design as before changes nothing stored
            payload |= {"origin": summary["origin"], "evidence": summary}
        store.put_json(key, payload, overwrite=True)
        table = "| id | " + " | ".join(s.domain_names) + " |\n|---|" + "---|" * len(s.domain_names) + "\n"
        for c in candidates:
            table += f"| {c['candidate_id']} | " + " | ".join(f"{c['alpha'][d]:.3f}" for d in s.domain_names) + " |\n"
        return dg.MaterializeResult(
            metadata={
                "candidates": dg.MetadataValue.int(len(candidates)),
                "evidence_reused": dg.MetadataValue.int(len(summary["reused"])),
                "evidence_new": dg.MetadataValue.int(len(summary["new"])),
                "evidence": dg.MetadataValue.json(summary),
                "available_tokens": dg.MetadataValue.json(tokens),
                "prior": dg.MetadataValue.json({d: round(w, 4) for d, w in prior.as_dict().items()}),
                "merge_method": s.search.merge_method,
                "design": dg.MetadataValue.md(table),
                "task_vectors": dg.MetadataValue.md(markdown(vectors)),
                **{f"relative_update_{d}": number(v) for d, v in vectors["relative_update"].items()},
                "uri": dg.MetadataValue.path(store.uri(layout.candidates_key(stage))),
            },
            data_version=dg.DataVersion(layout.content_version(payload)),
        )

    return [merge_candidates]
