"""The validation study of a stage (issue 4): does the merged proxy rank mixtures like real training does?

validation_design → validation_proxies, reference_models → proxy_fidelity, mixture_quality,
task_vector_diagnostics → validation_report. All partitioned by stage, run by ``validate_job``
(``mergemix validate``); none of it is on the path of ``mergemix run``, because reference runs cost
M full trainings. Definitions of every figure: ``core/validation.py`` and docs/results.md.
"""


import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from mergemix_dagster.core.evaluation.workers import ProxyJob, score_proxies
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.training.model import load_state_dict
from mergemix_dagster.core.progress import Progress
from mergemix_dagster.core.search.simplex import search_mixture
from mergemix_dagster.core.search.surrogate import CapabilitySurrogates
from mergemix_dagster.core.evaluation.fidelity import (
    SearchCost,
    cost_markdown,
    dual_capability_mixtures,
    rank_fidelity,
    spearman,
    task_vector_diagnostics as diagnose_task_vectors,
    validation_mixtures,
)
from mergemix_dagster.assets.partitions import SAME_STAGE, PipelinePartitions
from mergemix_dagster.core.plots import dual_capability_plot, rank_rank_plot
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import layout
from mergemix_dagster.resources.layout import candidate_fingerprint
from mergemix_dagster.steps.metadata import image, loss_curve, number, table
from mergemix_dagster.resources.artifacts import base_checkpoint, configured_rows, expert_checkpoint_dir, read_pointer
from mergemix_dagster.steps.proxy_scoring import fingerprinted, lm_eval_results_path, proxy_scorer_spec, score_rows
from mergemix_dagster.core.evaluation.fingerprints import evaluation_fingerprints
from mergemix_dagster.resources.pools import AssetPools
from mergemix_dagster.steps.search_inputs import (
    available_tokens,
    constraints_from,
    measured_table,
    mixture_objective,
    stage_objective,
    seed_scale,
    table_objective,
)
from mergemix_dagster.steps.reference_runs import (
    PROXY_KIND,
    REFERENCE_KIND,
    ReferenceTrainer,
    proxy_candidate_id,
    scores_by_fingerprint,
)
from mergemix_dagster.resources.layout import design_key
from mergemix_dagster.resources.layout import result_key

VALIDATION_CODE_VERSION = "1"
RANK_FIDELITY_CHECK = "rank_fidelity_above_threshold"
RANK_FIDELITY_CHECK_DESCRIPTION = (
    "The merged proxies rank the validation mixtures like the models trained on them: overall Spearman ρ "
    "≥ validation.min_spearman. ERROR when it fails: the search's ranking of mixtures is then not to be trusted."
)


def _local_dir(s: Settings, stage: str) -> Path:
    out = layout.validation_dir(s.home_path, stage)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _mixtures(design: dict, section: str) -> list[tuple[str, Mixture]]:
    return [(p["id"], Mixture.from_dict(p["alpha"], design["domains"])) for p in design[section]]


def _trainer(context, s, store, database, stage) -> ReferenceTrainer:
    return ReferenceTrainer(s, store, database, stage, log=context.log.info, context=context)


def build_validation_assets(parts: PipelinePartitions, pools: AssetPools = AssetPools()) -> list[dg.AssetsDefinition]:
    common = dict(partitions_def=parts.stage, group_name="validation", code_version=VALIDATION_CODE_VERSION)

    @dg.asset(**common, deps=["chosen_mixture"])
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

    @dg.asset(**common, deps=["validation_design"], kinds={"duckdb"}, pool=pools.evaluation)
    def validation_proxies(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Merge every validation mixture in memory and score it on the search and held-out benchmarks."""
        s = settings.get()
        stage = context.partition_key
        design = store.get_json(design_key(stage))
        done = set(scores_by_fingerprint(database, stage, PROXY_KIND, s))
        points = _mixtures(design, "fidelity") + _mixtures(design, "dual")
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
                score_proxies(proxy_scorer_spec(store, stage, s, heldout=True), jobs, write,
                              workers=min(s.evaluation.workers, len(jobs)))
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

    @dg.asset(**common, deps=["validation_design"], kinds={"pytorch", "duckdb"}, pool=pools.training)
    def reference_models(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Train one model per validation mixture on the actual data mixture (expert recipe, same budget)
        and score it; finished runs are reused, an interrupted study resumes."""
        s = settings.get()
        stage = context.partition_key
        design = store.get_json(design_key(stage))
        trainer = _trainer(context, s, store, database, stage)
        seed = trainer.seeds(1)[0]
        ids, trained_now, curves = [], 0, {}
        runs = [(study, pid, mixture) for study in ("fidelity", "dual") for pid, mixture in _mixtures(design, study)]
        with Progress(len(runs), "reference runs", log=context.log.info, unit="run") as progress:
            for study, pid, mixture in runs:
                run_id, worked = trainer.ensure(mixture, seed, study)
                ids.append(run_id)
                trained_now += worked
                if (losses := trainer.losses(run_id)) is not None:
                    curves[f"{study} {pid}"] = losses
                progress.advance(mixture=pid, trained_now=trained_now)
        return dg.MaterializeResult(
            metadata={
                "reference_runs": dg.MetadataValue.int(len(ids)),
                "trained_or_scored_now": dg.MetadataValue.int(trained_now),
                "tokens_per_run": dg.MetadataValue.int(s.experts.tokens),
                **({"loss_curves": loss_curve(curves, f"reference runs of {stage}: training loss")} if curves else {}),
            },
            data_version=dg.DataVersion(layout.content_version(ids)),
        )

    @dg.asset(
        **common,
        deps=["validation_proxies", "reference_models"],
        kinds={"duckdb"},
        check_specs=[
            dg.AssetCheckSpec(RANK_FIDELITY_CHECK, asset="proxy_fidelity", description=RANK_FIDELITY_CHECK_DESCRIPTION)
        ],
    )
    def proxy_fidelity(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ):
        """Spearman ρ (overall and per capability), capability recovery, rank-rank plot and the
        dual-capability curve; the check fails (ERROR) when overall ρ is below ``validation.min_spearman``."""
        s = settings.get()
        stage = context.partition_key
        design = store.get_json(design_key(stage))
        trainer = _trainer(context, s, store, database, stage)
        seed = trainer.seeds(1)[0]
        proxies = scores_by_fingerprint(database, stage, PROXY_KIND, s)
        trained = scores_by_fingerprint(database, stage, REFERENCE_KIND, s)
        caps = list(s.capabilities)

        def paired(study: str):
            ids, p_rows, t_rows = [], [], []
            for pid, mixture in _mixtures(design, study):
                p_rows.append(proxies[candidate_fingerprint(design["recipe"], mixture.as_dict())])
                t_rows.append(trained[trainer.run_id(mixture, seed)])
                ids.append(pid)
            return ids, p_rows, t_rows

        ids, p_rows, t_rows = paired("fidelity")
        base_rows = configured_rows(database.evaluations(stage), s)
        base_rows = base_rows[base_rows["kind"] == "base"]
        base = base_rows.groupby("capability")["value"].mean().to_dict()
        report = rank_fidelity(
            {c: np.array([r[c] for r in p_rows]) for c in caps},
            {c: np.array([r[c] for r in t_rows]) for c in caps},
            base,
        )
        heldout = [k for k in t_rows[0] if k.startswith("heldout:")]
        heldout_rho = {k: spearman([r[k] for r in p_rows], [r[k] for r in t_rows]) for k in heldout}

        d_ids, d_p, d_t = paired("dual")
        xs = [p["x"] for p in design["dual"]]
        dual_rho = {c: spearman([r[c] for r in d_p], [r[c] for r in d_t]) for c in caps}
        out = _local_dir(s, stage)
        labels = [p["tag"] or p["id"] for p in design["fidelity"]]
        rank_plot = rank_rank_plot(report.proxy_overall, report.trained_overall, labels, report.overall_spearman,
                                   out / "rank_fidelity.png")
        pair = tuple(design["dual_pair"])
        shown = [c for c in caps if c in {s.domain(pair[0]).capability, s.domain(pair[1]).capability}] or caps
        dual_plot = dual_capability_plot(
            xs, {c: [r[c] for r in d_p] for c in shown}, {c: [r[c] for r in d_t] for c in shown}, pair,
            out / "dual_capability.png",
        )
        rows = pd.DataFrame(
            [{"id": i, "tag": p["tag"], "proxy_overall": po, "trained_overall": to}
             for i, p, po, to in zip(ids, design["fidelity"], report.proxy_overall, report.trained_overall)]
        )
        result = {
            "n": report.n,
            "overall_spearman": report.overall_spearman,
            "spearman": report.spearman,
            "recovery": report.recovery,
            "overall_recovery": report.overall_recovery,
            "gain_recovery": report.gain_recovery,
            "heldout_spearman": heldout_rho,
            "dual_pair": list(pair),
            "dual_spearman": dual_rho,
            "dual_curve": {"x": xs, "proxy": d_p, "trained": d_t},
            "mixtures": rows.to_dict("records"),
            "proxy_scores": p_rows,
            "trained_scores": t_rows,
        }
        store.put_json(result_key(stage, "fidelity.json"), result, overwrite=True)
        (out / "fidelity.json").write_text(json.dumps(result, indent=2, default=float))
        threshold = s.validation.min_spearman
        rho = report.overall_spearman
        passed = bool(np.isfinite(rho) and rho >= threshold)
        yield dg.MaterializeResult(
            metadata={
                "overall_spearman": number(rho),
                "overall_recovery": number(report.overall_recovery),
                "rank_fidelity_plot": image(rank_plot, "rank fidelity"),
                "dual_capability_plot": image(dual_plot, "dual capability"),
                "fidelity": dg.MetadataValue.md(report.markdown()),
                "mixtures": table(rows),
                "by_capability": table(pd.DataFrame(
                    [{"capability": c, "spearman": report.spearman[c], "recovery": report.recovery[c],
                      "dual_spearman": dual_rho.get(c, float("nan"))} for c in caps]
                    + [{"capability": k, "spearman": v} for k, v in heldout_rho.items()]
                )),
                "rank_plot_path": dg.MetadataValue.path(str(rank_plot)),
                "dual_plot_path": dg.MetadataValue.path(str(dual_plot)),
            },
            data_version=dg.DataVersion(layout.content_version(result)),
        )
        yield dg.AssetCheckResult(
            check_name=RANK_FIDELITY_CHECK,
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"overall Spearman ρ {rho:.3f} vs threshold {threshold:.2f} over {report.n} mixtures",
            metadata={"overall_spearman": number(rho), "threshold": number(threshold)},
        )

    @dg.asset(**common, deps=["reference_models"], kinds={"pytorch", "lightgbm"}, pool=pools.training)
    def mixture_quality(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Train the chosen mixture and three baselines — uniform, a RegMix-style choice (LightGBM on the
        reference runs, same objective and constraints) and the best single-domain mixture (the vertex whose
        expert scores the best objective) — with the same budget over ``validation.quality_seeds`` seeds, and
        compare them on the search objective and the held-out benchmarks, with the seed noise beside."""
        s = settings.get()
        stage = context.partition_key
        design = store.get_json(design_key(stage))
        candidates = store.get_json(layout.candidates_key(stage))
        tokens = available_tokens(candidates)
        objective, _ = stage_objective(s, store, database, stage, tokens)
        constraints = constraints_from(s, tokens)
        scale = seed_scale(s, store, database, stage)
        trainer = _trainer(context, s, store, database, stage)
        seeds = trainer.seeds(s.validation.quality_seeds)
        caps = list(s.capabilities)
        trained = scores_by_fingerprint(database, stage, REFERENCE_KIND, s)
        fidelity = _mixtures(design, "fidelity")
        X = np.array([m.as_array() for _, m in fidelity])
        Y = {c: np.array([trained[trainer.run_id(m, seeds[0])][c] for _, m in fidelity]) for c in caps}
        regmix_surrogates = CapabilitySurrogates.fit(s.domain_names, X, Y, seed=s.search.seed, cv_folds=0)
        regmix = search_mixture(regmix_surrogates, objective, scale, n_samples=s.search.n_samples,
                                seed=s.search.seed, constraints=constraints, choice="top_k_mean",
                                top_k=s.search.top_k).mixture
        seeds_table = measured_table(s, store, database, stage, 0)
        vertex_values = table_objective(seeds_table, objective, scale)
        vertices = [i for i, a in enumerate(seeds_table.alphas) if np.isclose(a.max(), 1.0)]
        best_vertex = max(vertices, key=lambda i: vertex_values[i])
        arms = {
            "uniform": Mixture.uniform(s.domain_names),
            "regmix": regmix,
            "best_single_domain": Mixture.from_array(s.domain_names, seeds_table.alphas[best_vertex]),
            "chosen": Mixture.from_dict(design["chosen"], s.domain_names),
        }
        runs = [(arm, seed, trainer.ensure(mixture, seed, f"quality:{arm}")[0])
                for arm, mixture in arms.items() for seed in seeds]
        trained = scores_by_fingerprint(database, stage, REFERENCE_KIND, s)
        rows = []
        for arm, seed, run_id in runs:
            scores = trained[run_id]
            value = mixture_objective({c: scores[c] for c in caps}, arms[arm], objective, scale)
            rows.append({"arm": arm, "seed": seed, "objective": value,
                         "overall": float(np.mean([scores[c] for c in caps])), **scores})
        frame = pd.DataFrame(rows)
        result = quality_summary(frame, arms)
        store.put_json(result_key(stage, "quality.json"), result, overwrite=True)
        (_local_dir(s, stage) / "quality.json").write_text(json.dumps(result, indent=2))
        arm_table = pd.DataFrame([{"arm": a, **m.as_dict()} for a, m in arms.items()])
        return dg.MaterializeResult(
            metadata={
                "arms": table(arm_table),
                "scores": table(pd.DataFrame(result["summary"])),
                "objective": objective.describe(),
                "chosen_minus": dg.MetadataValue.json(
                    {a: {"mean": round(v["mean"], 4), "per_seed": [round(x, 4) for x in v["per_seed"]],
                         "paired_noise": round(v["paired_noise"], 4)}
                     for a, v in result["chosen_minus"].items()}),
                "seed_noise": number(float(result["seed_noise"])),
                "chosen_beats_every_baseline": dg.MetadataValue.bool(result["chosen_beats_every_baseline"]),
                "chosen_beats_every_baseline_paired": dg.MetadataValue.bool(
                    result["chosen_beats_every_baseline_paired"]),
            },
            data_version=dg.DataVersion(layout.content_version(result)),
        )

    @dg.asset(**common, deps=[dg.AssetDep("expert_checkpoint", partition_mapping=SAME_STAGE)])
    def task_vector_diagnostics(
        context: dg.AssetExecutionContext, settings: PipelineSettings, store: CheckpointStore
    ) -> dg.MaterializeResult:
        """MergeMix Appendix B: cosine similarity of the task vectors (expert − base) and ‖Δ‖/‖base‖."""
        s = settings.get()
        stage = context.partition_key
        base_dir, _ = base_checkpoint(store, stage)
        experts = {d: load_state_dict(expert_checkpoint_dir(store, stage, d)[0]) for d in s.domain_names}
        diag = diagnose_task_vectors(load_state_dict(base_dir), experts)
        result = {
            "domains": list(diag.domains),
            "cosine": diag.cosine.tolist(),
            "relative_update": diag.relative_update,
        }
        store.put_json(result_key(stage, "task_vectors.json"), result, overwrite=True)
        return dg.MaterializeResult(
            metadata={
                "task_vectors": dg.MetadataValue.md(diag.markdown()),
                "cosine": table(pd.DataFrame(
                    {"domain": list(diag.domains), **{d: diag.cosine[:, i] for i, d in enumerate(diag.domains)},
                     "relative_update": [diag.relative_update[d] for d in diag.domains]}
                )),
                **{f"relative_update_{d}": number(v) for d, v in diag.relative_update.items()},
            },
            data_version=dg.DataVersion(layout.content_version(result)),
        )

    @dg.asset(**common, deps=["proxy_fidelity", "mixture_quality", "task_vector_diagnostics"], kinds={"duckdb"})
    def validation_report(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """One markdown report of the study, with the cost of the MergeMix search vs the training-based
        search computed from the runs recorded in ``training_runs`` (MergeMix Table 6)."""
        s = settings.get()
        stage = context.partition_key
        fidelity = store.get_json(result_key(stage, "fidelity.json"))
        quality = store.get_json(result_key(stage, "quality.json"))
        vectors = store.get_json(result_key(stage, "task_vectors.json"))
        costs = search_costs(s, store, database, stage)
        text = report_markdown(s, stage, fidelity, quality, vectors, costs)
        path = _local_dir(s, stage) / "report.md"
        path.write_text(text)
        uri = store.put_file(path, result_key(stage, "report.md"), overwrite=True)
        return dg.MaterializeResult(
            metadata={
                "report": dg.MetadataValue.md(text),
                "cost": dg.MetadataValue.md(cost_markdown(costs)),
                "path": dg.MetadataValue.path(str(path)),
                "uri": dg.MetadataValue.path(uri),
            }
        )

    return [validation_design, validation_proxies, reference_models, proxy_fidelity, mixture_quality,
            task_vector_diagnostics, validation_report]


def search_costs(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str) -> list[SearchCost]:
    """MergeMix search (K experts + seed/verify evaluations) vs the training-based search the validation
    ran (one reference run + evaluation per fidelity mixture), from recorded runs."""
    runs = database.training_runs(stage)
    experts = []
    for d in s.domain_names:
        key = read_pointer(store, layout.expert_pointer(stage, d), f"expert {d!r}")["key"]
        hit = runs[(runs["study"] == "expert") & (runs["checkpoint_uri"] == store.uri(key))]
        experts.append((int(hit["tokens"].iloc[0]), float(hit["seconds"].iloc[0])) if not hit.empty
                       else (s.experts.tokens, float("nan")))
    evals = database.evaluations(stage)
    n_search_evals = evals[evals["kind"].isin(["seed", "verify", "base"])]["candidate_id"].nunique()
    timing_key = result_key(stage, "proxy_eval_timing.json")
    per_eval = store.get_json(timing_key)["seconds_per_evaluation"] if store.exists(timing_key) else float("nan")
    refs = runs[runs["study"] == "fidelity"]
    n_refs = len(refs)
    return [
        SearchCost("MergeMix (K experts, merged proxies)", len(experts), sum(t for t, _ in experts),
                   sum(x for _, x in experts), n_search_evals, n_search_evals * per_eval),
        SearchCost(f"training-based ({n_refs} reference runs)", n_refs, int(refs["tokens"].sum()),
                   float(refs["seconds"].sum()), n_refs, n_refs * per_eval),
    ]


def report_markdown(s: Settings, stage: str, fidelity: dict, quality: dict, vectors: dict, costs) -> str:
    caps = list(s.capabilities)
    lines = [f"# Validation of stage {stage}", ""]
    lines += [f"Overall Spearman ρ (proxy vs trained, n = {fidelity['n']}): **{fidelity['overall_spearman']:.3f}** "
              f"(threshold {s.validation.min_spearman:.2f}); capability recovery {fidelity['overall_recovery']:.3f}.", ""]
    lines += ["| capability | ρ | recovery | gain recovery | dual-capability ρ |", "|---|---|---|---|---|"]
    for c in caps:
        lines.append(f"| {c} | {fidelity['spearman'][c]:.3f} | {fidelity['recovery'][c]:.3f} | "
                     f"{_fmt(fidelity['gain_recovery'][c])} | {_fmt(fidelity['dual_spearman'][c])} |")
    for k, v in fidelity["heldout_spearman"].items():
        lines.append(f"| {k} (held out) | {_fmt(v)} | | | |")
    lines += ["", "Mixtures (overall = macro-average of capability scores):", "",
              pd.DataFrame(fidelity["mixtures"]).to_markdown(index=False, floatfmt=".3f"), ""]
    runs = pd.DataFrame(quality["runs"])
    lines += ["## Mixture quality (trained with the expert recipe)", "",
              pd.DataFrame([{"arm": a, **w} for a, w in quality["arms"].items()]).to_markdown(index=False, floatfmt=".3f"),
              "", runs.to_markdown(index=False, floatfmt=".3f"), "",
              "Chosen minus each baseline on the search objective (seed noise: largest per-arm std "
              f"{quality.get('seed_noise', float('nan')):.4f}):", "",
              *[f"- vs {arm}: {v['mean']:+.4f} (per seed: {', '.join(f'{x:+.4f}' for x in v['per_seed'])}; "
                f"paired noise, the std of those: {v.get('paired_noise', float('nan')):.4f})"
                for arm, v in quality.get("chosen_minus", {}).items()],
              *[f"- held out {h}, chosen − uniform: {v['mean']:+.4f} (noise {v['noise']:.4f})"
                for h, v in quality.get("heldout_chosen_minus_uniform", {}).items()], ""]
    lines += ["## Cost of the search", "", cost_markdown(costs), ""]
    domains = vectors["domains"]
    lines += ["## Task vectors", "", "| | " + " | ".join(domains) + " | ‖Δ‖/‖base‖ |", "|---" * (len(domains) + 2) + "|"]
    for i, d in enumerate(domains):
        lines.append(f"| {d} | " + " | ".join(f"{x:.3f}" for x in vectors["cosine"][i]) +
                     f" | {vectors['relative_update'][d]:.4f} |")
    return "\n".join(lines) + "\n"


def quality_summary(frame: pd.DataFrame, arms: dict[str, Mixture]) -> dict:
    """Per-arm mean and seed standard deviation of the objective and every score; the chosen arm's margin
    over each baseline (mean and per seed); the seed noise (largest per-arm std of the objective)."""
    metrics = [c for c in frame.columns if c not in ("arm", "seed")]
    summary = []
    for arm, group in frame.groupby("arm", sort=False):
        row = {"arm": arm}
        for m in metrics:
            row[f"{m}_mean"] = float(group[m].mean())
            row[f"{m}_std"] = float(group[m].std(ddof=1)) if len(group) > 1 else float("nan")
        summary.append(row)
    by_seed = frame.pivot(index="seed", columns="arm", values="objective")
    stds = [r["objective_std"] for r in summary if np.isfinite(r["objective_std"])]
    noise = float(max(stds)) if stds else float("nan")
    chosen_minus = {}
    for arm in arms:
        if arm == "chosen":
            continue
        diff = (by_seed["chosen"] - by_seed[arm])
        # the arms share seeds, so the noise of their difference is the spread of the per-seed differences
        paired = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
        chosen_minus[arm] = {"mean": float(diff.mean()), "per_seed": [float(x) for x in diff],
                             "paired_noise": paired, "beyond_seed_noise": bool(diff.mean() > noise),
                             "beyond_paired_noise": bool(diff.mean() > paired)}
    heldout = [c for c in frame.columns if c.startswith("heldout:")]
    heldout_minus_uniform = {}
    for h in heldout:
        hs = frame.pivot(index="seed", columns="arm", values=h)
        d = hs["chosen"] - hs["uniform"]
        heldout_minus_uniform[h] = {"mean": float(d.mean()), "per_seed": [float(x) for x in d],
                                    "noise": float(max(frame.groupby("arm")[h].std(ddof=1).fillna(0)))}
    return {
        "arms": {a: m.as_dict() for a, m in arms.items()},
        "runs": frame.to_dict("records"),
        "summary": summary,
        "chosen_minus": chosen_minus,
        "seed_noise": noise,
        "chosen_beats_every_baseline": bool(all(v["mean"] > noise for v in chosen_minus.values())),
        "chosen_beats_every_baseline_paired": bool(all(v["beyond_paired_noise"] for v in chosen_minus.values())),
        "heldout_chosen_minus_uniform": heldout_minus_uniform,
        # kept for earlier reports
        "chosen_minus_uniform": chosen_minus.get("uniform", {}).get("mean", float("nan")),
        "chosen_minus_uniform_per_seed": chosen_minus.get("uniform", {}).get("per_seed", []),
        "regmix_minus_uniform": float(frame[frame.arm == "regmix"]["objective"].mean()
                                      - frame[frame.arm == "uniform"]["objective"].mean()),
    }


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"
