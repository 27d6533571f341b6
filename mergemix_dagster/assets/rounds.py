"""DeMix rounds of a stage: propose around the predicted optimum, merge and score, refit, repeat.

Each round's proposals are stored (``stages/<stage>/rounds/round<r>.json``) *before* any is scored, keyed by
the inputs that produced them (the measured table, objective, constraints, round size, seed), and each
candidate's rows are written as soon as it is scored. An interrupted round therefore resumes with the same
proposals and scores only what is missing; a rerun with unchanged inputs scores nothing.
"""


import dagster as dg
import numpy as np

from mergemix_dagster.core.evaluation.workers import ProxyJob
from mergemix_dagster.core.progress import Progress
from mergemix_dagster.core.search.rounds import best_measured, propose_round
from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.steps.stage_asset import stage_asset
from mergemix_dagster.resources import layout
from mergemix_dagster.resources.layout import candidate_fingerprint
from mergemix_dagster.steps.proxy_scoring import finished_fingerprints
from mergemix_dagster.resources.pools import AssetPools
from mergemix_dagster.steps.proxy_scoring import fingerprinted, lm_eval_results_path, proxy_scorer_spec, score_jobs, score_rows
from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
from mergemix_dagster.steps.search_inputs import available_tokens, constraints_from, fit_surrogates, measured_table, stage_objective, round_kind, seed_scale, table_objective
from mergemix_dagster.resources.layout import round_key

ROUNDS_CODE_VERSION = "2"  # 2: paired resolution rule, unresolved capabilities protected


def build_round_assets(parts: PipelinePartitions, pools: AssetPools = AssetPools()) -> list[dg.AssetsDefinition]:
    @stage_asset(
        parts.stage,
        group_name="search",
        code_version=ROUNDS_CODE_VERSION,
        deps=["capability_surrogates"],
        kinds={"duckdb", "lightgbm"},
        pool=pools.evaluation,
    )
    def search_rounds(context: dg.AssetExecutionContext, s: Settings, stage: str,
                      store: CheckpointStore, database: EvaluationDatabase) -> dg.MaterializeResult:
        """DeMix rounds (default N/2 then N/4 candidates) around the predicted optimum; stops early when a
        round's verified optimum does not beat the best mixture measured before it."""
        design = store.get_json(layout.candidates_key(stage))
        tokens = available_tokens(design)
        objective, resolution = stage_objective(s, store, database, stage, tokens)
        constraints = constraints_from(s, tokens, resolution)
        scale = seed_scale(s, store, database, stage)
        recipe = {k: design[k] for k in ("base", "experts", "method")}
        spec = None
        fingerprints = evaluation_fingerprints(s)
        history = []
        scored_now = 0
        stopped = None
        for r, size in enumerate(s.search.round_sizes, start=1):
            table = measured_table(s, store, database, stage, r - 1)
            values = table_objective(table, objective, scale)
            best_before = best_measured(values)
            inputs = layout.content_version({
                "table": table.frame().round(6).to_dict("list"), "objective": repr(objective),
                "constraints": constraints.describe(), "size": size, "seed": s.search.seed + r,
                "choice": s.search.choice, "n_samples": s.search.n_samples,
            })
            key = round_key(stage, r)
            stored = store.get_json(key) if store.exists(key) else None
            if stored is None or stored.get("inputs") != inputs:
                surrogates = fit_surrogates(s, table)
                proposal = propose_round(
                    surrogates, objective, scale, size, table.alphas, seed=s.search.seed + r,
                    n_samples=s.search.n_samples, constraints=constraints, choice=s.search.choice,
                    top_k=s.search.top_k,
                )
                candidates = [
                    {"candidate_id": f"r{r}c{i:03d}", "alpha": m.as_dict(), "fingerprint": candidate_fingerprint(recipe, m.as_dict())}
                    for i, m in enumerate(proposal.mixtures)
                ]
                stored = {
                    "round": r, "inputs": inputs, "candidates": candidates,
                    "predicted_optimum": proposal.search.mixture.as_dict(),
                    "predicted_objective": proposal.search.predicted_objective,
                }
                store.put_json(key, stored, overwrite=True)
            done = finished_fingerprints(database, stage, s)
            todo = [c for c in stored["candidates"] if done.get(c["candidate_id"]) != c["fingerprint"]]
            context.log.info(f"round {r}: {len(stored['candidates'])} proposals, {len(todo)} to score")
            progress = Progress(len(todo), f"round {r} candidates", log=context.log.info, unit="candidate")
            by_id = {c["candidate_id"]: c for c in todo}

            def write(job: ProxyJob, scores: list, elapsed: float, r: int = r) -> None:
                """Rows of one scored proposal, written as it finishes (a kill loses only those in flight)."""
                nonlocal scored_now
                c = by_id[job.candidate_id]
                scores = fingerprinted(scores, fingerprints)
                database.upsert_evaluations(
                    score_rows(stage, c["candidate_id"], round_kind(r), c["alpha"], scores, c["fingerprint"])
                )
                scored_now += 1
                progress.advance(candidate=c["candidate_id"])

            if todo:
                if spec is None:
                    spec = proxy_scorer_spec(store, stage, s)
                jobs = [ProxyJob(c["candidate_id"], c["alpha"], str(lm_eval_results_path(s, stage, c["candidate_id"])))
                        for c in todo]
                score_jobs(context, s, stage, store, spec, jobs, write, workers=s.evaluation.workers)
            after = measured_table(s, store, database, stage, r)
            after_values = table_objective(after, objective, scale)
            # the predicted optimum was proposed first, unless a measured mixture already sat on it
            optimum = np.array([stored["predicted_optimum"][d] for d in s.domain_names])
            nearest = int(np.argmin(np.abs(after.alphas - optimum).sum(axis=1)))
            verified = float(after_values[nearest])
            row = {
                "round": r, "candidates": len(stored["candidates"]),
                "predicted_objective": round(float(stored["predicted_objective"]), 4),
                "verified_objective": round(float(verified), 4),
                "best_measured_before": round(float(best_before), 4),
                "best_measured_after": round(float(best_measured(after_values)), 4),
            }
            history.append(row)
            context.log_event(dg.AssetObservation(asset_key=context.asset_key, partition=stage,
                                                  metadata={k: v for k, v in row.items()}))
            if not verified > best_before:
                stopped = f"round {r}: verified optimum {verified:.4f} did not beat {best_before:.4f}"
                context.log.info(f"stopping early: {stopped}")
                break
        final = measured_table(s, store, database, stage, len(history))
        payload = {"stage": stage, "rounds": history, "stopped": stopped}
        store.put_json(layout.rounds_summary_key(stage), payload, overwrite=True)
        metadata = {
            "rounds": dg.MetadataValue.table(
                records=[dg.TableRecord(h) for h in history],
                schema=dg.TableSchema(columns=[
                    dg.TableColumn("round", "int"), dg.TableColumn("candidates", "int"),
                    dg.TableColumn("predicted_objective", "float"), dg.TableColumn("verified_objective", "float"),
                    dg.TableColumn("best_measured_before", "float"), dg.TableColumn("best_measured_after", "float"),
                ]),
            ) if history else dg.MetadataValue.text("no rounds configured"),
            "rounds_run": dg.MetadataValue.int(len(history)),
            "candidates_scored_now": dg.MetadataValue.int(scored_now),
            "stopped_early": dg.MetadataValue.text(stopped or "no"),
            "mixtures_measured": dg.MetadataValue.int(len(final.candidate_ids)),
            "objective": dg.MetadataValue.text(objective.describe()),
        }
        return dg.MaterializeResult(
            metadata=metadata,
            data_version=dg.DataVersion(layout.content_version(final.frame().round(6).to_dict("list"))),
        )

    return [search_rounds]


__all__ = ["build_round_assets"]
