"""The chosen mixture of a stage: the search's choice under the objective and constraints, verified for real.

The surrogates are refitted on every mixture measured (seed design and rounds), with a bootstrap ensemble for
intervals. The search's choice (``search.choice``: by default the best lower confidence bound over the ensemble) is merged and
scored with lm-eval. If the best feasible mixture already measured scores a higher objective than the verified
choice beyond paired noise (the ``search.measured_margin_quantile`` quantile of a paired bootstrap over items
> 0), that measured mixture is chosen instead and ``chosen_from`` says so; ``predicted_objective`` and
``verified_objective`` are then those of the measured mixture. A degenerate result (one domain holding
≥ 90 %) is flagged by an asset check, in ``mixture.json`` and at the end of ``mergemix run``; so is a choice
decided by noise (no capability resolved beyond paired noise: check ``capabilities_resolved``).
"""


import dagster as dg

from mergemix_dagster.steps.evidence import mixture_evidence
from mergemix_dagster.assets.partitions import PipelinePartitions
from mergemix_dagster.core.errors import MergeMixError
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.choose import (
    MarginRule,
    choice_details,
    choice_warnings,
    chosen_objectives,
    choose_verified_or_measured,
    degenerate,
    effective_domains,
    predict_at,
    round_decimals,
    search_stage,
)
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.core.training.exports import token_plan_for
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.steps.explorer import write_stage_explorer
from mergemix_dagster.steps.mixture_choice import (
    paired_items,
    publish_exports,
    store_final_surrogates,
    verify_search_choice,
)
from mergemix_dagster.steps.search_inputs import (
    available_tokens,
    base_scores,
    fit_surrogates,
    measured_table,
    round_history,
    seed_scale,
    stage_search_inputs,
    table_objective,
)
from mergemix_dagster.steps.stage_asset import stage_asset

MIXTURE_CODE_VERSION = "3"  # 3: paired resolution + protection, measured-wins margin, stored scores of the chosen mixture
DEGENERATE_CHECK = "mixture_not_degenerate"
RESOLVED_CHECK = "capabilities_resolved"


def build_mixture_assets(parts: PipelinePartitions) -> list[dg.AssetsDefinition]:
    @stage_asset(
        parts.stage,
        group_name="search",
        code_version=MIXTURE_CODE_VERSION,
        deps=["search_rounds"],
        kinds={"duckdb"},
        check_specs=[dg.AssetCheckSpec(
            DEGENERATE_CHECK, asset="chosen_mixture",
            description="The chosen mixture is one a team would train on: no domain holds 90 % or more.",
        ), dg.AssetCheckSpec(
            RESOLVED_CHECK, asset="chosen_mixture",
            description="At least one capability moves beyond paired noise across the measured mixtures; when "
                        "none does, the choice is decided by noise.",
        )],
    )
    def chosen_mixture(context: dg.AssetExecutionContext, s: Settings, stage: str,
                       store: CheckpointStore, database: EvaluationDatabase) -> dg.MaterializeResult:
        """Search the simplex under the objective and constraints, verify the choice by merge + lm-eval."""
        design = store.get_json(layout.candidates_key(stage))
        tokens = available_tokens(design)
        base = base_scores(s, database, stage)
        inputs = stage_search_inputs(s, store, database, stage, tokens)
        objective, resolution, constraints = inputs.objective, inputs.resolution, inputs.constraints
        for c, protection in inputs.protections.items():
            context.log.warning(f"capability {c} is protected: {protection}")
        scale = seed_scale(s, store, database, stage)
        rounds = round_history(store, stage)
        table = measured_table(s, store, database, stage, len(rounds))
        surrogates = fit_surrogates(s, table)
        store_final_surrogates(s, store, stage, table, surrogates)
        measured = [Mixture.from_array(s.domain_names, a) for a in table.alphas]
        search = search_stage(surrogates, objective, scale, constraints, measured, s.search)
        result = search.result
        context.log.info(f"search choice ({s.search.choice}) {result.mixture.label(3)}, predicted objective "
                         f"{result.predicted_objective:.4f}")

        recipe = {k: design[k] for k in ("base", "experts", "method")}
        verified, verified_objective, verified_items = verify_search_choice(
            context, s, store, database, stage, recipe, result.mixture, objective, scale)
        chosen = choose_verified_or_measured(
            result.mixture, verified, verified_objective, table, table_objective(table, objective, scale), constraints,
            items=paired_items(s, database, stage, table.candidate_ids, verified_items),
            rule=MarginRule(objective, scale, quantile=s.search.measured_margin_quantile, seed=s.search.seed),
        )
        comparison = chosen.comparison or {}
        if chosen.measured_id is not None:
            context.log.warning(f"verified choice {verified_objective:.4f} < measured {chosen.measured_id} "
                                f"{chosen.objective:.4f}: choosing the measured mixture ({comparison.get('margin')})")
        elif "measured_candidate" in comparison:
            context.log.info(f"{comparison['decision']} (measured {comparison['measured_candidate']} "
                             f"{comparison['difference']:+.4f}, interval {comparison.get('interval')})")
        weights = chosen.mixture.as_dict()
        prediction = predict_at(surrogates, chosen.mixture, s.search.lcb_quantile)
        predicted_objective, verified_objective_chosen = chosen_objectives(
            chosen, result.predicted_objective, prediction, objective, scale)
        predicted, intervals = prediction.predicted, prediction.intervals
        why_degenerate = degenerate(weights)
        details = choice_details(
            chosen=chosen, search=search, verified_objective=verified_objective, prediction=prediction,
            objective=objective, resolution=resolution, constraints=constraints, base=base, choice=s.search.choice,
            tokens=tokens, rounds=rounds, mixtures_measured=len(table.candidate_ids),
        )
        details["protections"] = dict(inputs.protections)
        details["evidence"] = mixture_evidence(design, table.candidate_ids)
        database.upsert_chosen_mixture(stage, weights, predicted_objective, verified_objective_chosen, details)
        payload = {"stage": stage, "weights": weights, "predicted_objective": predicted_objective,
                   "verified_objective": verified_objective_chosen, **details}
        plan = token_plan_for(weights, s, tokens)
        if plan is not None:
            payload["token_plan"] = plan.to_dict()
        uri = store.put_json(layout.mixture_key(stage), payload, overwrite=True)
        exports = publish_exports(payload, plan, s, store, stage)
        r = round_decimals
        rows = [dg.TableRecord({"domain": d, "weight": r(w), "lower": r(lo), "upper": r(hi)})
                for d, w, lo, hi in zip(s.domain_names, chosen.mixture.weights, constraints.lower, constraints.upper)]
        cap_rows = [dg.TableRecord({
            "capability": c, "base": r(base.get(c, float("nan"))), "measured": r(chosen.scores[c]),
            "predicted": r(predicted[c]),
            "interval_low": r(intervals[c][0]) if c in intervals else None,
            "interval_high": r(intervals[c][1]) if c in intervals else None,
            "optimized": c not in objective.excluded,
            "spread": r(resolution[c].spread) if c in resolution else None,
            "noise": r(resolution[c].noise) if c in resolution and resolution[c].noise is not None else None,
            "p_value": r(resolution[c].p_value) if c in resolution and resolution[c].p_value is not None else None,
            "protection": inputs.protections.get(c),
        }) for c in table.capabilities]
        check = dg.AssetCheckResult(
            check_name=DEGENERATE_CHECK,
            passed=why_degenerate is None,
            severity=dg.AssetCheckSeverity.WARN,
            description=why_degenerate or f"{effective_domains(weights):.2f} effective domains (exp entropy)",
            metadata={"max_weight": r(max(weights.values())), "effective_domains": r(effective_domains(weights))},
        )
        noise_decided = [w for w in choice_warnings(details) if w.startswith("no capability is resolved")]
        resolved = [c for c, t in resolution.items() if t.resolved]
        resolved_check = dg.AssetCheckResult(
            check_name=RESOLVED_CHECK,
            passed=not noise_decided,
            severity=dg.AssetCheckSeverity.WARN,
            description=noise_decided[0] if noise_decided else
            f"{len(resolved)} of {len(resolution)} capabilities resolved beyond paired noise",
        )
        try:  # the explorer page (mergemix explore --stage writes the same): a link on this asset's page
            explorer = {"explorer": dg.MetadataValue.path(str(write_stage_explorer(
                s, store, database, stage, surrogates=surrogates, table=table, payload=payload)))}
        except MergeMixError as exc:  # a page it cannot draw exactly is not written; the choice stands
            context.log.warning(f"no explorer page: {exc}")
            explorer = {}
        for warning in [*noise_decided, *([f"degenerate mixture: {why_degenerate}"] if why_degenerate else [])]:
            context.log.warning(warning)
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
                    dg.TableColumn("noise", "float"), dg.TableColumn("p_value", "float"),
                    dg.TableColumn("protection", "string")])),
                "weights": dg.MetadataValue.json({d: r(w) for d, w in weights.items()}),
                "objective": objective.describe(),
                "not_optimized": dg.MetadataValue.json(dict(objective.excluded)),
                "chosen_from": chosen.chosen_from,
                "predicted_objective": dg.MetadataValue.float(r(predicted_objective)),
                "verified_objective": dg.MetadataValue.float(r(verified_objective_chosen)),
                "measured_comparison": dg.MetadataValue.json(comparison),
                "evidence": dg.MetadataValue.json(details["evidence"]["counts"]),
                "effective_domains": dg.MetadataValue.float(r(effective_domains(weights), 3)),
                "unconstrained_optimum": dg.MetadataValue.json(details["unconstrained_optimum"] or {}),
                "uri": dg.MetadataValue.path(uri),
                "exports": dg.MetadataValue.json({fmt: str(p) for fmt, p in exports.items()}),
                **({"token_plan": dg.MetadataValue.md(plan.to_markdown())} if plan is not None else {}),
                **explorer,
            },
            data_version=dg.DataVersion(layout.content_version(weights)),
            check_results=[check, resolved_check],
        )

    return [chosen_mixture]
