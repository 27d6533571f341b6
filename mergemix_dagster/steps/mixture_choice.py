"""The store- and database-side work of choosing a stage's mixture (the rule itself: ``core/search/choose.py``).

Keeping the refitted surrogates, merging and scoring the search's choice, reading the per-item scores that judge
a measured mixture against it (paired noise), and writing the trainer exports;
``publish_exports`` is shared by ``chosen_mixture`` and ``hierarchical_mixture``.
"""

import tempfile
from pathlib import Path

from mergemix_dagster.core.evaluation.scores import CapabilityTable, capability_means
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.choose import PairedItems
from mergemix_dagster.core.search.objective import Objective, ScoreScale
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.core.training.exports import write_exports
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.artifacts import configured_rows, has_items, items_by_benchmark
from mergemix_dagster.resources.layout import candidate_fingerprint
from mergemix_dagster.steps.proxy_scoring import score_one, score_rows
from mergemix_dagster.steps.search_inputs import mixture_objective

VERIFY_CANDIDATE_ID = "verify"


def store_final_surrogates(
    s: Settings, store: CheckpointStore, stage: str, table: CapabilityTable, surrogates: CapabilitySurrogates
) -> str:
    """Keep the surrogates refitted on every measured mixture, keyed by what they were fitted on."""
    key = final_surrogates_key_of(s, stage, table)
    if not store.exists(key):
        with tempfile.TemporaryDirectory() as tmp:
            surrogates.save(Path(tmp))
            store.put_dir(Path(tmp), key)
    return key


def final_surrogates_key_of(s: Settings, stage: str, table: CapabilityTable) -> str:
    """Where ``store_final_surrogates`` keeps the surrogates fitted on ``table`` (the explorer reads them back)."""
    version = layout.content_version({"table": table.frame().round(6).to_dict("list"), "seed": s.search.seed,
                                      "ensemble": s.search.ensemble})
    return layout.final_surrogates_key(stage, version)


def verify_search_choice(
    context,
    s: Settings,
    store: CheckpointStore,
    database: EvaluationDatabase,
    stage: str,
    recipe: dict,
    mixture: Mixture,
    objective: Objective,
    scale: ScoreScale,
) -> tuple[dict[str, float], float, dict | None]:
    """Merge the search's choice, score it with lm-eval (rows kept as candidate ``verify``): its capability
    scores and objective, measured rather than predicted, and its per-item values by (task, metric) (None when
    a configured benchmark has none). Scored by the configured evaluator (``evaluator.kind``), like the seed
    candidates; ``context``: the step's, for evaluators run through Dagster Pipes."""
    scores = score_one(context, s, stage, store, mixture, VERIFY_CANDIDATE_ID)
    verified = capability_means((x.capability, x.value) for x in scores)
    verified_objective = mixture_objective(verified, mixture, objective, scale)
    database.upsert_evaluations(score_rows(
        stage, VERIFY_CANDIDATE_ID, "verify", mixture.as_dict(), scores, candidate_fingerprint(recipe, mixture.as_dict()),
    ))
    return verified, verified_objective, _complete(s, {(x.task, x.metric): x.items for x in scores})


def candidate_items(s: Settings, rows) -> dict | None:
    """One candidate's per-item values by (task, metric) from its DuckDB rows already passed through
    ``configured_rows``, or None unless every configured benchmark has them: the verified side of ``paired_items``
    when the verification was scored elsewhere."""
    return _complete(s, items_by_benchmark(rows))


def _task_capabilities(s: Settings) -> dict[tuple[str, str], str]:
    return {(t.name, t.metric): t.capability for t in s.evaluation.tasks}


def _complete(s: Settings, items: dict) -> dict | None:
    """``items`` restricted to the configured (task, metric) pairs, or None unless every one has items."""
    wanted = _task_capabilities(s)
    kept = {k: v for k, v in items.items() if k in wanted}
    if set(kept) != set(wanted) or not all(has_items(v) for v in kept.values()):
        return None
    return kept


def paired_items(
    s: Settings, database: EvaluationDatabase, stage: str, candidate_ids, verified_items: dict | None
) -> PairedItems:
    """The per-item values (DuckDB ``evaluations.item_values``) of the measured candidates, beside the verified
    choice's: what the paired noise margin of ``choose_verified_or_measured`` compares. A candidate whose rows
    lack items for some configured benchmark gets None (the choice then falls back to the rule without a
    margin, and says so)."""
    rows = configured_rows(database.evaluations(stage), s)
    rows = rows[rows["candidate_id"].isin(list(candidate_ids))]
    measured: dict[str, dict | None] = {cid: None for cid in candidate_ids}
    for cid, group in rows.groupby("candidate_id"):
        measured[str(cid)] = _complete(s, items_by_benchmark(group))
    return PairedItems(verified_items, measured, _task_capabilities(s))


def publish_exports(payload: dict, plan, s, store: CheckpointStore, stage: str) -> dict:
    """The trainer exports of a stage's mixture, written under ``<home>/exports/<stage>/`` and into the store."""
    exports = write_exports(payload, plan, s, layout.exports_dir(s.home_path, stage))
    for path in exports.values():
        store.put_file(path, layout.export_key(stage, path.name), overwrite=True)
    return exports


__all__ = ["VERIFY_CANDIDATE_ID", "store_final_surrogates", "final_surrogates_key_of", "verify_search_choice", "candidate_items", "paired_items", "publish_exports"]
