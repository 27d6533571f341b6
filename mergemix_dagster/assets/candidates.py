"""Merged candidates of a stage: the seed design of mixtures α and the recipe that merges each one.

Candidates are not written as checkpoints: the evaluation asset merges each into one loaded model in
memory. What is stored is the recipe — α, the expert and base fingerprints, the merge method — which is
enough to rebuild any candidate exactly (``mergemix merge`` writes one to disk on demand).
"""


import dagster as dg

from ..core.corpora import tokenize_documents
from ..core.designs import seed_design
from ..core.mixture import Mixture
from ..partitions import SAME_STAGE, PipelinePartitions
from ..resources import CheckpointStore
from ..resources.settings import PipelineSettings
from . import layout
from .loading import base_checkpoint, corpus_documents, read_pointer
from .searching import prior_mixture

CANDIDATES_CODE_VERSION = "2"


def count_domain_tokens(store: CheckpointStore, stage: str, domains) -> dict[str, int]:
    """Tokens of each domain corpus under the stage base's tokenizer (EOS between documents included):
    the ``N_d`` of the token-availability bound and of the natural-token prior."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_checkpoint(store, stage)[0]))
    return {d: int(len(tokenize_documents(corpus_documents(store, d)[0], tokenizer))) for d in domains}


def candidate_fingerprint(recipe: dict, weights: dict[str, float]) -> str:
    """Identity of one merged model: its α and everything it is merged from."""
    return layout.content_version(
        {"base": recipe["base"], "experts": recipe["experts"], "method": recipe["method"], "alpha": weights}
    )


def build_candidate_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @dg.asset(
        partitions_def=parts.stage,
        group_name="search",
        code_version=CANDIDATES_CODE_VERSION,
        deps=[dg.AssetDep("expert_checkpoint", partition_mapping=SAME_STAGE)],
    )
    def merge_candidates(
        context: dg.AssetExecutionContext, settings: PipelineSettings, store: CheckpointStore
    ) -> dg.MaterializeResult:
        """Seed set of N mixtures (vertices, centroid, natural-token prior, midpoints, interior fill) + merge recipes."""
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
        design = seed_design(s.domain_names, s.search.n_candidates, seed=s.search.seed, priors=[prior])
        candidates = []
        for i, mixture in enumerate(design):
            weights = mixture.as_dict()
            candidates.append(
                {"candidate_id": f"c{i:03d}", "alpha": weights, "fingerprint": candidate_fingerprint(recipe, weights)}
            )
        payload = recipe | {"domains": list(s.domain_names), "available_tokens": tokens, "candidates": candidates}
        store.put_json(layout.candidates_key(stage), payload, overwrite=True)
        table = "| id | " + " | ".join(s.domain_names) + " |\n|---|" + "---|" * len(s.domain_names) + "\n"
        for c in candidates:
            table += f"| {c['candidate_id']} | " + " | ".join(f"{c['alpha'][d]:.3f}" for d in s.domain_names) + " |\n"
        return dg.MaterializeResult(
            metadata={
                "candidates": dg.MetadataValue.int(len(candidates)),
                "available_tokens": dg.MetadataValue.json(tokens),
                "prior": dg.MetadataValue.json({d: round(w, 4) for d, w in prior.as_dict().items()}),
                "merge_method": s.search.merge_method,
                "design": dg.MetadataValue.md(table),
                "uri": dg.MetadataValue.path(store.uri(layout.candidates_key(stage))),
            },
            data_version=dg.DataVersion(layout.content_version(payload)),
        )

    return [merge_candidates]
