"""The validation study's report: what the MergeMix search cost next to a training-based search, the
mixture-quality summary over seeds, and one markdown page of the whole study (``validation_report``)."""

import numpy as np
import pandas as pd

from mergemix_dagster.core.evaluation.fidelity import SearchCost, cost_markdown
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.artifacts import read_pointer
from mergemix_dagster.resources.layout import result_key
from mergemix_dagster.steps.subdomain_search import SUBDOMAIN_KIND, SUBDOMAIN_VERIFY_KIND


SEARCH_KINDS = ("base", "seed", "verify", SUBDOMAIN_KIND, SUBDOMAIN_VERIFY_KIND)  # plus round1, round2, …


def search_evaluations(evals: pd.DataFrame) -> pd.DataFrame:
    """The evaluation rows of the MergeMix search: base, seed design, every DeMix round, the verification of the
    search's choice and the sub-domain search (validation and carry-over rows are not part of it)."""
    kinds = evals["kind"].astype(str)
    return evals[kinds.isin(SEARCH_KINDS) | kinds.str.fullmatch(r"round\d+")]


def search_evaluation_counts(evals: pd.DataFrame) -> dict[str, int]:
    """Models scored per kind in the search (``search_evaluations``), e.g. ``{"seed": 40, "round1": 20, …}``."""
    rows = search_evaluations(evals)
    return {str(k): int(n) for k, n in rows.groupby("kind")["candidate_id"].nunique().items()}


def search_costs(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str) -> list[SearchCost]:
    """MergeMix search (K experts + every search evaluation: base, seed design, DeMix rounds, verification) vs
    the training-based search the validation ran (one reference run + evaluation per fidelity mixture), from
    recorded runs. An expert without a training record makes the tokens and seconds "unknown"."""
    runs = database.training_runs(stage)
    experts = []
    for d in s.domain_names:
        key = read_pointer(store, layout.expert_pointer(stage, d), f"expert {d!r}")["key"]
        hit = runs[(runs["study"] == "expert") & (runs["checkpoint_uri"] == store.uri(key))] if not runs.empty \
            else runs
        experts.append((int(hit["tokens"].iloc[0]), float(hit["seconds"].iloc[0])) if not hit.empty
                       else (None, float("nan")))
    tokens = None if any(t is None for t, _ in experts) else sum(t for t, _ in experts)
    search = search_evaluations(database.evaluations(stage))
    n_search_evals = int(search[["kind", "candidate_id"]].drop_duplicates().shape[0])
    timing_key = result_key(stage, "proxy_eval_timing.json")
    per_eval = store.get_json(timing_key)["seconds_per_evaluation"] if store.exists(timing_key) else float("nan")
    refs = runs[runs["study"] == "fidelity"] if not runs.empty else runs
    n_refs = len(refs)
    return [
        SearchCost("MergeMix (K experts, merged proxies)", len(experts), tokens,
                   sum(x for _, x in experts), n_search_evals, n_search_evals * per_eval),
        SearchCost(f"training-based ({n_refs} reference runs)", n_refs, int(refs["tokens"].sum()) if n_refs else 0,
                   float(refs["seconds"].sum()) if n_refs else 0.0, n_refs, n_refs * per_eval),
    ]


def report_markdown(s: Settings, stage: str, fidelity: dict, quality: dict, vectors: dict, costs) -> str:
    """The study as one markdown page: fidelity by capability, mixture quality, cost, task vectors."""
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
    """A figure to 3 decimals, or n/a where none could be computed (None or not finite)."""
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


__all__ = ["SEARCH_KINDS", "search_evaluations", "search_evaluation_counts", "search_costs", "report_markdown", "quality_summary"]
