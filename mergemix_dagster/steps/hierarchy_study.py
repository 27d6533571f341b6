"""The trained comparison of MergeMix's Table 3 on a hierarchical stage: ⟨MergeMix, MergeMix⟩ (the chosen
flat mixture), ⟨MergeMix, uniform⟩ (chosen coarse weights, equal weights inside each domain) and ⟨uniform,
uniform⟩, each trained from the stage base by the validation's reference runs (``steps/reference_runs.py``)."""


import numpy as np

from mergemix_dagster.core.search.hierarchy import study_arms
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import layout
from mergemix_dagster.resources.artifacts import read_pointer
from mergemix_dagster.steps.reference_runs import REFERENCE_KIND, ReferenceTrainer, scores_by_fingerprint
from mergemix_dagster.resources.layout import study_key


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
