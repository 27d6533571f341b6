"""The validation design of a stage and the merged proxies of its mixtures."""

import dagster as dg
import numpy as np
import pandas as pd

from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.core.evaluation.fidelity import dual_capability_mixtures, validation_mixtures
from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
from mergemix_dagster.core.evaluation.workers import ProxyJob
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.progress import Progress
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.layout import candidate_fingerprint, design_key, result_key
from mergemix_dagster.resources.pools import AssetPools
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.steps.metadata import number, table
from mergemix_dagster.steps.proxy_scoring import fingerprinted, lm_eval_results_path, proxy_scorer_spec, score_jobs, score_rows
from mergemix_dagster.steps.reference_runs import PROXY_KIND, proxy_candidate_id, scores_by_fingerprint
from mergemix_dagster.steps.stage_asset import stage_asset
from mergemix_dagster.steps.validation_study import VALIDATION_CODE_VERSION, design_mixtures


def build_design_assets(parts: PipelinePartitions, pools: AssetPools) -> list[dg.AssetsDefinition]:
    @dg.asset(partitions_def=parts.stage, group_name="validation", code_version=VALIDATION_CODE_VERSION,
              deps=["chosen_mixture"])
    def validation_design(
        context: dg.AssetExecutionContext, settings: PipelineSettings, store: CheckpointStore
    ) -> dg.MaterializeResult:
        """The M fidelity mixtures (spread over the simplex, incl. the chosen one and uniform) and the
        dual-capability line, with the merge recipe their proxies are built from."""
        s = settings.get()
        stage = context.partition_key
        recipe = store.get_json(layout.candidates_key(stage))
        chosen_payload = store.get_json(layout.mixture_key(stage))
        # with a hierarchy, mixture.json's weights are over sub-domains; the proxies mix the coarse domains
        chosen = Mixture.from_dict(chosen_payload.get("coarse_weights") or chosen_payload["weights"], s.domain_names)
        uniform = Mixture.uniform(s.domain_names)
        fidelity = validation_mixtures(s.domain_names, s.validation.n_mixtures, s.validation.seed, [chosen, uniform])
        tags = {0: "chosen", 1: "uniform"} if chosen != uniform else {0: "chosen+uniform"}
        pair = s.dual_pair
        dual = dual_capability_mixtures(s.domain_names, pair, s.validation.dual_alphas)
        payload = {
            "stage": stage,
            "domains": list(s.domain_names),
            "recipe": {k: recipe[k] for k in ("base", "experts", "method")},
            "chosen": chosen.as_dict(),
            "fidelity": [
                {"id": f"m{i:02d}", "alpha": m.as_dict(), "tag": tags.get(i, "")} for i, m in enumerate(fidelity)
            ],
            "dual_pair": list(pair),
            "dual": [{"id": f"d{a:.2f}", "alpha": m.as_dict(), "x": a} for a, m in zip(s.validation.dual_alphas, dual)],
        }
        uri = store.put_json(design_key(stage), payload, overwrite=True)
        mixtures_frame = pd.DataFrame([{"id": p["id"], "tag": p["tag"], **p["alpha"]} for p in payload["fidelity"]])
        return dg.MaterializeResult(
            metadata={"mixtures": table(mixtures_frame), "uri": dg.MetadataValue.path(uri)},
            data_version=dg.DataVersion(layout.content_version(payload)),
        )

    @stage_asset(parts.stage, group_name="validation", code_version=VALIDATION_CODE_VERSION,
                 deps=["validation_design"], kinds={"duckdb"}, pool=pools.evaluation)
    def validation_proxies(context: dg.AssetExecutionContext, s: Settings, stage: str,
                           store: CheckpointStore, database: EvaluationDatabase) -> dg.MaterializeResult:
        """Merge every validation mixture in memory and score it on the search and held-out benchmarks."""
        design = store.get_json(design_key(stage))
        done = set(scores_by_fingerprint(database, stage, PROXY_KIND, s))
        points = design_mixtures(design, "fidelity") + design_mixtures(design, "dual")
        todo = [(pid, m) for pid, m in points
                if candidate_fingerprint(design["recipe"], m.as_dict()) not in done]
        seconds: list[float] = []
        fingerprints = evaluation_fingerprints(s, heldout=True)
        by_id = {}
        jobs = []
        for pid, mixture in todo:
            fp = candidate_fingerprint(design["recipe"], mixture.as_dict())
            by_id[proxy_candidate_id(fp)] = (pid, mixture, fp)
            jobs.append(ProxyJob(proxy_candidate_id(fp), mixture.as_dict(),
                                 str(lm_eval_results_path(s, stage, proxy_candidate_id(fp)))))
        with Progress(len(todo), "validation proxies", log=context.log.info, unit="proxy") as progress:

            def write(job: ProxyJob, scores: list, elapsed: float) -> None:
                """Rows of one scored proxy, written as it finishes (a kill loses only those in flight)."""
                pid, mixture, fp = by_id[job.candidate_id]
                scores = fingerprinted(scores, fingerprints)
                seconds.append(elapsed)
                database.upsert_evaluations(
                    score_rows(stage, job.candidate_id, PROXY_KIND, mixture.as_dict(), scores, fp)
                )
                done.add(fp)
                progress.advance(mixture=pid)

            if jobs:
                score_jobs(context, s, stage, store, proxy_scorer_spec(store, stage, s, heldout=True), jobs, write,
                           workers=s.evaluation.workers)
        timing = {"seconds_per_evaluation": float(np.mean(seconds)) if seconds else None, "n": len(seconds)}
        if seconds:
            store.put_json(result_key(stage, "proxy_eval_timing.json"), timing, overwrite=True)
        return dg.MaterializeResult(
            metadata={
                "proxies": dg.MetadataValue.int(len(points)),
                "scored_now": dg.MetadataValue.int(len(seconds)),
                "seconds_per_evaluation": number(timing["seconds_per_evaluation"] or 0.0),
            },
            data_version=dg.DataVersion(layout.content_version(sorted(done))),
        )

    return [validation_design, validation_proxies]
