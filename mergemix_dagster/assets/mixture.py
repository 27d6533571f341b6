"""The chosen mixture of a stage: argmax of the utility under the surrogates, then verified for real.

Verification merges the predicted optimum and scores it with lm-eval. If the verified utility falls below
the best seed candidate actually measured, that candidate is chosen instead (and the metadata says so):
a demanding user wants the best *measured* mixture, never a prediction that did not hold up.
"""


import dagster as dg
import numpy as np

from ..core.mixture import Mixture
from ..core.scores import capability_means
from ..core.search import Utility, fit_score_scale, search_mixture, utility_values
from ..core.surrogate import CapabilitySurrogates
from ..partitions import PipelinePartitions
from ..resources import CheckpointStore, EvaluationDatabase
from ..resources.settings import PipelineSettings
from . import layout
from .candidates import candidate_fingerprint
from .loading import read_pointer
from .proxies import open_proxy_scorer, score_rows
from .surrogates import seed_table

MIXTURE_CODE_VERSION = "1"
VERIFY_CANDIDATE_ID = "verify"


def _utility_of(scores: dict[str, float], utility: Utility, scale) -> float:
    return float(utility_values({c: np.array([v]) for c, v in scores.items()}, utility, scale)[0])


def build_mixture_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @dg.asset(
        partitions_def=parts.stage,
        group_name="search",
        code_version=MIXTURE_CODE_VERSION,
        deps=["capability_surrogates"],
        kinds={"duckdb"},
    )
    def chosen_mixture(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Search the simplex (≥100k points) for the best predicted utility, verify by merge + eval."""
        s = settings.get()
        stage = context.partition_key
        pointer = read_pointer(store, layout.surrogates_pointer(stage), f"surrogates of stage {stage!r}")
        surrogates = CapabilitySurrogates.load(store.get_dir(pointer["key"]))
        table = seed_table(s, store, database, stage)
        scale = fit_score_scale(table.scores)
        utility = Utility(capability_weights=s.search.capability_weights)
        result = search_mixture(surrogates, utility, scale, n_samples=s.search.n_samples, seed=s.search.seed)
        context.log.info(f"predicted optimum {result.mixture.label(3)} (utility {result.predicted_utility:.3f})")

        design = store.get_json(layout.candidates_key(stage))
        scorer = open_proxy_scorer(store, stage, s)
        verified_scores = scorer.score(result.mixture)
        verified = capability_means((x.capability, x.value) for x in verified_scores)
        verified_utility = _utility_of(verified, utility, scale)
        fingerprint = candidate_fingerprint(design, result.mixture.as_dict())
        database.upsert_evaluations(
            score_rows(stage, VERIFY_CANDIDATE_ID, "verify", result.mixture.as_dict(), verified_scores, fingerprint)
        )

        seed_utilities = utility_values(table.scores, utility, scale)
        best = int(np.argmax(seed_utilities))
        chosen, chosen_from = result.mixture, "search"
        if seed_utilities[best] > verified_utility:
            chosen = Mixture.from_array(s.domain_names, table.alphas[best])
            chosen_from = f"seed candidate {table.candidate_ids[best]} (verified search optimum scored lower)"
            context.log.warning(f"verified optimum {verified_utility:.3f} < best seed {seed_utilities[best]:.3f}")
        chosen_verified = verified_utility if chosen is result.mixture else float(seed_utilities[best])

        details = {
            "chosen_from": chosen_from,
            "predicted": result.predicted,
            "verified": verified,
            "search_optimum": result.mixture.as_dict(),
            "search_optimum_verified_utility": verified_utility,
            "best_seed": table.candidate_ids[best],
            "best_seed_utility": float(seed_utilities[best]),
            "n_samples": result.n_samples,
            "utility": "macro-average" if s.search.capability_weights is None else s.search.capability_weights,
        }
        database.upsert_chosen_mixture(stage, chosen.as_dict(), result.predicted_utility, chosen_verified, details)
        payload = {"stage": stage, "weights": chosen.as_dict(), "predicted_utility": result.predicted_utility,
                   "verified_utility": chosen_verified, **details}
        uri = store.put_json(layout.mixture_key(stage), payload, overwrite=True)
        table_md = "| domain | weight |\n|---|---|\n" + "".join(
            f"| {d} | {w:.3f} |\n" for d, w in chosen.as_dict().items()
        )
        return dg.MaterializeResult(
            metadata={
                "mixture": dg.MetadataValue.md(table_md),
                "weights": dg.MetadataValue.json(chosen.as_dict()),
                "chosen_from": chosen_from,
                "predicted_utility": dg.MetadataValue.float(result.predicted_utility),
                "verified_utility": dg.MetadataValue.float(chosen_verified),
                "best_seed_utility": dg.MetadataValue.float(float(seed_utilities[best])),
                "uri": dg.MetadataValue.path(uri),
            },
            data_version=dg.DataVersion(layout.content_version(chosen.as_dict())),
        )

    return [chosen_mixture]
