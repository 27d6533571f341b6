"""The chosen mixture of a stage: the search's choice under the objective and constraints, verified for real.

The surrogates are refitted on every mixture measured (seed design and rounds), with a bootstrap ensemble for
intervals. The search's choice (``search.choice``: the robust mean of the top-k by default) is merged and
scored with lm-eval. If a mixture already measured scores a higher objective than the verified choice and
satisfies the constraints, that measured mixture is chosen instead and ``chosen_from`` says so: a team wants
the best *measured* mixture, never a prediction that did not hold up. A degenerate result (one domain holding
≥ 90 %) is flagged by an asset check, in ``mixture.json`` and at the end of ``mergemix run``.
"""


import tempfile
from pathlib import Path

import dagster as dg
import numpy as np

from mergemix_dagster.core.training.exports import token_plan_for, write_exports
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.evaluation.scores import capability_means
from mergemix_dagster.core.search.simplex import search_mixture
from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
from mergemix_dagster.resources.settings import PipelineSettings
from mergemix_dagster.resources import layout
from mergemix_dagster.resources.layout import candidate_fingerprint
from mergemix_dagster.steps.proxy_scoring import open_proxy_scorer, score_rows
from mergemix_dagster.assets.rounds import round_history
from mergemix_dagster.steps.search_inputs import (
    available_tokens,
    base_scores,
    constraints_from,
    degenerate,
    effective_domains,
    fit_surrogates,
    measured_table,
    mixture_objective,
    stage_objective,
    seed_scale,
    table_objective,
)

MIXTURE_CODE_VERSION = "2"
VERIFY_CANDIDATE_ID = "verify"
DEGENERATE_CHECK = "mixture_not_degenerate"


def _r(x: float, digits: int = 4) -> float:
    return float(round(float(x), digits))


def publish_exports(payload: dict, plan, s, store: CheckpointStore, stage: str) -> dict:
    """The trainer exports of a stage's mixture, written under ``<home>/exports/<stage>/`` and into the store."""
    exports = write_exports(payload, plan, s, layout.exports_dir(s.home_path, stage))
    for path in exports.values():
        store.put_file(path, layout.export_key(stage, path.name), overwrite=True)
    return exports


def build_mixture_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @dg.asset(
        partitions_def=parts.stage,
        group_name="search",
        code_version=MIXTURE_CODE_VERSION,
        deps=["search_rounds"],
        kinds={"duckdb"},
        check_specs=[dg.AssetCheckSpec(
            DEGENERATE_CHECK, asset="chosen_mixture",
            description="The chosen mixture is one a team would train on: no domain holds 90 % or more.",
        )],
    )
    def chosen_mixture(
        context: dg.AssetExecutionContext,
        settings: PipelineSettings,
        store: CheckpointStore,
        database: EvaluationDatabase,
    ) -> dg.MaterializeResult:
        """Search the simplex under the objective and constraints, verify the choice by merge + lm-eval."""
        s = settings.get()
        stage = context.partition_key
        design = store.get_json(layout.candidates_key(stage))
        tokens = available_tokens(design)
        base = base_scores(s, database, stage)
        objective, resolution = stage_objective(s, store, database, stage, tokens)
        constraints = constraints_from(s, tokens)
        scale = seed_scale(s, store, database, stage)
        rounds = round_history(store, stage)
        table = measured_table(s, store, database, stage, len(rounds))
        surrogates = fit_surrogates(s, table)
        version = layout.content_version({"table": table.frame().round(6).to_dict("list"), "seed": s.search.seed,
                                          "ensemble": s.search.ensemble})
        key = layout.final_surrogates_key(stage, version)
        if not store.exists(key):
            with tempfile.TemporaryDirectory() as tmp:
                surrogates.save(Path(tmp))
                store.put_dir(Path(tmp), key)
        search = dict(n_samples=s.search.n_samples, seed=s.search.seed, top_k=s.search.top_k, choice=s.search.choice,
                      refine=s.search.refine, lcb_quantile=s.search.lcb_quantile)
        measured = [Mixture.from_array(s.domain_names, a) for a in table.alphas]
        result = search_mixture(surrogates, objective, scale, constraints=constraints, include=measured, **search)
        unconstrained = (
            search_mixture(surrogates, objective, scale, constraints=None, **search) if constraints.active else None
        )
        context.log.info(f"search choice ({s.search.choice}) {result.mixture.label(3)}, predicted objective "
                         f"{result.predicted_objective:.4f}")

        scorer = open_proxy_scorer(store, stage, s)
        verified_scores = scorer.score(result.mixture)
        verified = capability_means((x.capability, x.value) for x in verified_scores)
        verified_objective = mixture_objective(verified, result.mixture, objective, scale)
        recipe = {k: design[k] for k in ("base", "experts", "method")}
        database.upsert_evaluations(score_rows(
            stage, VERIFY_CANDIDATE_ID, "verify", result.mixture.as_dict(), verified_scores,
            candidate_fingerprint(recipe, result.mixture.as_dict()),
        ))

        values = table_objective(table, objective, scale)
        feasible = constraints.satisfied(table.alphas, tol=1e-9)
        values = np.where(feasible, values, -np.inf)
        best = int(np.argmax(values))
        chosen, chosen_from, chosen_scores, chosen_objective = result.mixture, "search", verified, verified_objective
        if np.isfinite(values[best]) and values[best] > verified_objective:
            chosen = Mixture.from_array(s.domain_names, constraints.project(table.alphas[best][None, :])[0])
            chosen_from = f"measured candidate {table.candidate_ids[best]} (the verified search choice scored lower)"
            chosen_scores = {c: float(table.scores[c][best]) for c in table.capabilities}
            chosen_objective = float(values[best])
            context.log.warning(f"verified choice {verified_objective:.4f} < measured {table.candidate_ids[best]} "
                                f"{values[best]:.4f}: choosing the measured mixture")
        weights = chosen.as_dict()
        x = chosen.as_array()[None, :]
        predicted = {c: float(v[0]) for c, v in surrogates.predict(x).items()}
        intervals = ({c: [float(v[0, 0]), float(v[0, 1])] for c, v in surrogates.intervals(x, s.search.lcb_quantile).items()}
                     if surrogates.n_members >= 2 else {})
        why_degenerate = degenerate(weights)
        details = {
            "chosen_from": chosen_from,
            "objective": objective.describe(),
            "choice": s.search.choice,
            "predicted": {c: _r(v) for c, v in predicted.items()},
            "predicted_interval": {c: [_r(a), _r(b)] for c, (a, b) in intervals.items()},
            "measured": {c: _r(v) for c, v in chosen_scores.items()},
            "base": {c: _r(v) for c, v in base.items()},
            "search_choice": {d: _r(w, 6) for d, w in result.mixture.as_dict().items()},
            "search_choice_verified_objective": _r(verified_objective),
            "argmax": {d: _r(w, 6) for d, w in result.argmax.as_dict().items()},
            "argmax_predicted_objective": _r(result.argmax_objective),
            "top_k_mean": {d: _r(w, 6) for d, w in result.top_k_mean.as_dict().items()},
            "top_k_mean_predicted_objective": _r(result.top_k_mean_objective),
            "constraints": constraints.describe(),
            "constraint_reasons": constraints.reasons,
            "unconstrained_optimum": None if unconstrained is None else
                {d: _r(w, 6) for d, w in unconstrained.mixture.as_dict().items()},
            "unconstrained_predicted_objective": None if unconstrained is None else _r(unconstrained.predicted_objective),
            "available_tokens": tokens,
            "rounds": rounds,
            "mixtures_measured": len(table.candidate_ids),
            "n_samples": result.n_samples,
            "effective_domains": _r(effective_domains(weights), 3),
            "degenerate": why_degenerate,
            "not_optimized": dict(objective.excluded),
            "resolution": {c: {"spread": _r(r.spread), "noise": None if r.noise is None else _r(r.noise),
                               "optimized": c not in objective.excluded, "reason": r.reason}
                           for c, r in resolution.items()},
        }
        database.upsert_chosen_mixture(stage, weights, result.predicted_objective, chosen_objective, details)
        payload = {"stage": stage, "weights": weights, "predicted_objective": result.predicted_objective,
                   "verified_objective": chosen_objective, **details}
        plan = token_plan_for(weights, s, tokens)
        if plan is not None:
            payload["token_plan"] = plan.to_dict()
        uri = store.put_json(layout.mixture_key(stage), payload, overwrite=True)
        exports = publish_exports(payload, plan, s, store, stage)
        caps = list(table.capabilities)
        rows = [dg.TableRecord({"domain": d, "weight": _r(w), "lower": _r(lo), "upper": _r(hi)})
                for d, w, lo, hi in zip(s.domain_names, chosen.weights, constraints.lower, constraints.upper)]
        cap_rows = [dg.TableRecord({
            "capability": c, "base": _r(base.get(c, float("nan"))), "measured": _r(chosen_scores[c]),
            "predicted": _r(predicted[c]),
            "interval_low": _r(intervals[c][0]) if c in intervals else None,
            "interval_high": _r(intervals[c][1]) if c in intervals else None,
            "optimized": c not in objective.excluded,
            "spread": _r(resolution[c].spread) if c in resolution else None,
            "noise": _r(resolution[c].noise) if c in resolution and resolution[c].noise is not None else None,
        }) for c in caps]
        check = dg.AssetCheckResult(
            check_name=DEGENERATE_CHECK,
            passed=why_degenerate is None,
            severity=dg.AssetCheckSeverity.WARN,
            description=why_degenerate or f"{effective_domains(weights):.2f} effective domains (exp entropy)",
            metadata={"max_weight": _r(max(weights.values())), "effective_domains": _r(effective_domains(weights))},
        )
        if why_degenerate:
            context.log.warning(f"degenerate mixture: {why_degenerate}")
        for c, reason in objective.excluded.items():
            context.log.warning(f"capability {c} is not optimized: {reason}")
        return dg.MaterializeResult(
            metadata={
                "mixture": dg.MetadataValue.table(rows, schema=dg.TableSchema(columns=[
                    dg.TableColumn("domain", "string"), dg.TableColumn("weight", "float"),
                    dg.TableColumn("lower", "float"), dg.TableColumn("upper", "float")])),
                "capabilities": dg.MetadataValue.table(cap_rows, schema=dg.TableSchema(columns=[
                    dg.TableColumn("capability", "string"), dg.TableColumn("base", "float"),
                    dg.TableColumn("measured", "float"), dg.TableColumn("predicted", "float"),
                    dg.TableColumn("interval_low", "float"), dg.TableColumn("interval_high", "float"),
                    dg.TableColumn("optimized", "bool"), dg.TableColumn("spread", "float"),
                    dg.TableColumn("noise", "float")])),
                "weights": dg.MetadataValue.json({d: _r(w) for d, w in weights.items()}),
                "objective": objective.describe(),
                "not_optimized": dg.MetadataValue.json(dict(objective.excluded)),
                "chosen_from": chosen_from,
                "predicted_objective": dg.MetadataValue.float(_r(result.predicted_objective)),
                "verified_objective": dg.MetadataValue.float(_r(chosen_objective)),
                "effective_domains": dg.MetadataValue.float(_r(effective_domains(weights), 3)),
                "unconstrained_optimum": dg.MetadataValue.json(details["unconstrained_optimum"] or {}),
                "uri": dg.MetadataValue.path(uri),
                "exports": dg.MetadataValue.json({fmt: str(p) for fmt, p in exports.items()}),
                **({"token_plan": dg.MetadataValue.md(plan.to_markdown())} if plan is not None else {}),
            },
            data_version=dg.DataVersion(layout.content_version(weights)),
            check_results=[check],
        )

    return [chosen_mixture]
