"""``mergemix report``: one stage's chosen mixture, trade-offs, plots, asset checks and cost, gathered from
the store, DuckDB and the instance's check records into a ``core.report.StageReport``."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd

from mergemix_dagster.core.evaluation.scores import capability_means
from mergemix_dagster.resources import EvaluationDatabase
from mergemix_dagster.resources import layout
from mergemix_dagster.steps.evidence import evidence_lines


def stage_report(s, instance: dg.DagsterInstance, stage: str):
    """Gather a stage's chosen mixture, trade-offs, plots, asset checks and cost into a ``StageReport``."""
    from mergemix_dagster.runner.checks import latest_check_results
    from mergemix_dagster.core.errors import MergeMixError
    from mergemix_dagster.core.report import StageReport
    from mergemix_dagster.core.plots import tradeoff_plot
    from mergemix_dagster.resources.artifacts import configured_rows

    database = EvaluationDatabase(path=s.database_path, store_root=s.store_uri)
    chosen = database.query(
        "SELECT domain, weight, predicted_utility, verified_utility, details FROM chosen_mixture WHERE stage = ?", [stage]
    )
    if chosen.empty:
        raise MergeMixError(f"stage {stage!r} has no chosen mixture yet: run `mergemix run --stage {stage}` first")
    details = json.loads(chosen["details"].iloc[0] or "{}")
    utility = {
        "objective": str(details.get("objective") or details.get("utility") or "(not recorded)"),
        "predicted_objective": float(chosen["predicted_utility"].iloc[0]),
        "verified_objective": float(chosen["verified_utility"].iloc[0]),
        "scale": "each capability min–max normalized over this stage's measured mixtures (0 = worst, 1 = best "
                 "seen), so an objective above 1 beats every measured mixture; not comparable across stages",
        "chosen_from": details.get("chosen_from", ""),
    }
    from mergemix_dagster.steps.validation_report import search_evaluation_counts

    every = configured_rows(database.evaluations(stage), s)
    kind_of = every["kind"].astype(str)
    evals = every[kind_of.isin(["seed", "base", "verify"]) | kind_of.str.fullmatch(r"round\d+")]
    scores, kinds = {}, {}
    for cid, group in evals.groupby("candidate_id"):
        kind = str(group["kind"].iloc[0])
        alpha = dict(group["alpha"].iloc[0])
        vertex = next((d for d, w in alpha.items() if abs(w - 1) < 1e-9), None) if kind == "seed" else None
        label = {"base": "base", "verify": "search choice (verified)"}.get(kind) or (f"expert {vertex}" if vertex else cid)
        kinds[label] = "expert" if vertex else "round" if kind.startswith("round") else kind
        scores[label] = capability_means(zip(group["capability"], group["value"]))
    caps = list(s.capabilities)
    shown = [m for m, k in kinds.items() if k not in ("seed", "round")]
    tradeoffs = pd.DataFrame([{"model": m, **{c: scores[m].get(c) for c in caps},
                               "mean": float(np.mean([scores[m][c] for c in caps if c in scores[m]]))} for m in shown])
    out = layout.reports_dir(s.home_path, stage)
    pair = [s.domain(d).capability for d in s.dual_pair if s.domain(d).capability in caps] or caps
    x_cap, y_cap = (pair + caps)[:2] if len(set(pair)) >= 2 else (caps + caps)[:2]
    images, notes = {}, []
    if len(caps) < 2:
        notes.append(f"No trade-off plot: one capability ({caps[0]}); the table above is the whole picture.")
    elif not any(x_cap in sc and y_cap in sc for sc in scores.values()):
        notes.append(f"No trade-off plot: no model has scores on both {x_cap} and {y_cap} under the current "
                     "evaluation settings (run `mergemix run` to score them).")
    else:
        plot = tradeoff_plot(scores, kinds, x_cap, y_cap, out / "tradeoff.png")
        images[f"Trade-off: {x_cap} vs {y_cap}"] = plot.read_bytes()
    for title, path in (
        ("Rank fidelity (validation)", layout.validation_dir(s.home_path, stage) / "rank_fidelity.png"),
        ("Dual-capability curve (validation)", layout.validation_dir(s.home_path, stage) / "dual_capability.png"),
        ("Chosen mixture per stage", layout.stage_comparison_plot(s.home_path)),
    ):
        if path.exists():
            images[title] = path.read_bytes()
    runs = database.training_runs(stage)
    cost = (runs.groupby("study").agg(runs=("run_id", "count"), tokens=("tokens", "sum"), seconds=("seconds", "sum"))
            .reset_index() if not runs.empty else pd.DataFrame())
    scored = models_scored(search_evaluation_counts(every))
    evidence = details.get("evidence")
    if evidence and (evidence["counts"]["reused"] or evidence["origin"] != "seed"):
        counts = evidence["counts"]
        notes.append(f"Evidence: {counts['reused']} measured mixtures reused from earlier evaluations, {counts['new']} "
                     f"scored for this design, {counts['not_used']} earlier ones not mixed into the fit "
                     "(`evidence` in mixture.json). " + " ".join(f"{line}." for line in evidence_lines(evidence)[1:]))
    notes.append(f"Scores and candidates: DuckDB tables `evaluations`, `chosen_mixture`, `training_runs` in "
                 f"{s.database_path}.")
    if layout.lm_eval_dir(s.home_path, stage).is_dir():
        notes.append(f"lm-eval's results JSON of each scored model: {layout.lm_eval_dir(s.home_path, stage)}.")
    checks = [(c.asset, c.check, c.passed, c.severity, c.description) for c in latest_check_results(instance, stage)]
    mixture = chosen[["domain", "weight"]].reset_index(drop=True)
    mixture["weight"] = [round(float(w), 4) + 0.0 for w in mixture["weight"]]  # no 5.551e-17 in a table
    from mergemix_dagster.core.search.choose import choice_warnings

    return StageReport(stage, mixture, utility, tradeoffs, checks, cost, images, notes, choice_warnings(details),
                       _task_vectors(s, stage), scored)


SCORED_LABELS = {"base": "base", "seed": "seed design", "verify": "verification of the search's choice"}


def models_scored(counts: dict[str, int]) -> pd.DataFrame:
    """One row per kind of model the search scored with lm-eval (base, seed design, each DeMix round, the
    verification, sub-domain search), in search order, and their total."""
    def order(kind: str) -> tuple[int, int]:
        if kind.startswith("round") and kind[5:].isdigit():
            return 2, int(kind[5:])
        return {"base": (0, 0), "seed": (1, 0), "verify": (3, 0)}.get(kind, (4, 0))

    rows = [{"scored": SCORED_LABELS.get(k) or (f"DeMix round {k[5:]}" if order(k)[0] == 2 else k), "models": n}
            for k, n in sorted(counts.items(), key=lambda kv: order(kv[0]))]
    return pd.DataFrame(rows + [{"scored": "total", "models": sum(counts.values())}]) if rows else pd.DataFrame()


def _task_vectors(s, stage: str) -> str:
    """The task-vector table ``merge_candidates`` stored with the stage's candidates ('' before it did)."""
    from mergemix_dagster.resources import CheckpointStore
    from mergemix_dagster.steps.task_vectors import markdown

    store = CheckpointStore(root=s.store_uri)
    key = layout.candidates_key(stage)
    payload = store.get_json(key) if store.exists(key) else {}
    return markdown(payload["task_vectors"]) if "task_vectors" in payload else ""
