"""Settings are part of each asset's code version, so Dagster marks exactly what a settings edit affects stale.

An asset's code version is ``<code version>+<hash of the settings it reads>``: raise the expert token budget
and the experts (then everything downstream) go stale; switch an evaluation metric and only the evaluations
onward go stale; the corpora, the base and the experts stay fresh. Assets whose output did not change after a
rerun (same data version) leave their downstream fresh, so a harmless edit costs one cheap rerun.
"""

from __future__ import annotations

from typing import Callable

import dagster as dg

from mergemix_dagster.resources.layout import content_version
from mergemix_dagster.assets.groups import VALIDATION_ASSETS
from mergemix_dagster.resources.trainers import trainer_identity
from mergemix_dagster.core.settings import Settings

#: where and how many processes score: decides no score, so it is not part of any version
EVALUATION_PLACEMENT = {"workers", "device", "threads", "task_vectors", "pool"}
#: search settings only ``chosen_mixture`` reads (the margin a measured mixture needs over the verified choice):
#: left out of the other search assets' versions, so setting them does not make the rounds stale
CHOICE_ONLY = {"measured_margin_quantile"}


def evaluation_identity(s: Settings) -> dict:
    """The evaluation settings that decide scores (not where or in how many processes they are computed), and
    the evaluator's identity when it is not the embedded one (``evaluator.chunk_size`` decides no score)."""
    identity = s.evaluator.identity()
    return s.evaluation.model_dump(exclude=EVALUATION_PLACEMENT) | ({"evaluator": identity} if identity else {})


SETTINGS_READ_BY: dict[str, Callable[[Settings], object]] = {
    "general_corpus": lambda s: {"max_chars": s.model.general_max_chars, "paths": s.model.general_paths},
    "base_tokenizer": lambda s: {"base": s.model.base, "vocab": s.model.vocab_size},
    "domain_corpus": lambda s: [d.model_dump() for d in s.domains],
    "stage_base": lambda s: {"model": s.model.model_dump(exclude={"offline", "general_paths"}), "pretrain": s.pretrain.model_dump()},
    "expert_checkpoint": lambda s: s.experts.model_dump() | ({"trainer": trainer_identity(s.trainer)} if s.trainer.kind != "embedded" else {}),
    "merge_candidates": lambda s: [s.search.n_candidates, s.search.seed, s.search.merge_method,
                                   s.search.objective.prior],
    "candidate_evaluations": lambda s: evaluation_identity(s),
    "capability_surrogates": lambda s: [s.search.seed, s.search.cv_folds, s.validation.min_surrogate_cv_spearman],
    "search_rounds": lambda s: [s.search.model_dump(exclude=CHOICE_ONLY), s.target.model_dump()],
    "chosen_mixture": lambda s: [s.search.model_dump(), s.target.model_dump(), s.export.model_dump()],
    **{
        name: (lambda s: {"validation": s.validation.model_dump(), "evaluation": evaluation_identity(s)})
        for name in VALIDATION_ASSETS
    },
}


#: the sub-domain family (``assets/hierarchy``), versioned by ``with_hierarchy`` as it adds those assets
HIERARCHY_SETTINGS_READ_BY: dict[str, Callable[[Settings], object]] = {
    "subdomain_corpus": lambda s: [d.model_dump() for d in s.domains if d.subdomains],
    "subdomain_expert": lambda s: s.experts.model_dump(),
    "subdomain_mixture": lambda s: [s.search.model_dump(exclude=CHOICE_ONLY), evaluation_identity(s)],
    "hierarchical_mixture": lambda s: [s.search.model_dump(exclude=CHOICE_ONLY), s.target.model_dump(),
                                       s.export.model_dump()],
    "hierarchy_study": lambda s: {"validation": s.validation.model_dump(), "evaluation": evaluation_identity(s)},
}


def with_settings_versions(
    assets: list[dg.AssetsDefinition],
    settings: Settings,
    read_by: dict[str, Callable[[Settings], object]] = SETTINGS_READ_BY,
) -> list[dg.AssetsDefinition]:
    """Each asset named in ``read_by`` gets ``+<hash of the settings it reads>`` on its code version."""
    def versioned(spec: dg.AssetSpec) -> dg.AssetSpec:
        read = read_by.get(spec.key.to_user_string())
        if read is None:
            return spec
        return spec.replace_attributes(code_version=f"{spec.code_version}+{content_version(read(settings), 8)}")

    return [a.map_asset_specs(versioned) for a in assets]
