"""The validation study's report: what the MergeMix search cost next to RegMix proper's swarm, the
pre-registered protocol and its hash, the judged mixture quality, and one markdown page of the whole study
(``validation_report``)."""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mergemix_dagster.core.evaluation.fidelity import SearchCost, cost_markdown
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.artifacts import read_pointer
from mergemix_dagster.resources.layout import result_key
from mergemix_dagster.steps import task_vectors
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


def _names_key(uri: str, key: str) -> bool:
    """Whether a recorded checkpoint URI is the store key ``key`` under any store root."""
    return uri == key or uri.endswith("/" + key)


def search_costs(s: Settings, store: CheckpointStore, database: EvaluationDatabase, stage: str,
                 swarm_runs: Sequence[str] = ()) -> list[SearchCost]:
    """MergeMix search (K experts + every search evaluation: base, seed design, DeMix rounds, verification) vs
    RegMix proper (its swarm of trained runs ``swarm_runs``, one evaluation each), from recorded runs. A run
    without a training record makes the tokens and seconds "unknown", never the recipe's planned value."""
    runs = database.training_runs(stage)
    experts = []
    for d in s.domain_names:
        key = read_pointer(store, layout.expert_pointer(stage, d), f"expert {d!r}")["key"]
        # matched on the store key, not the whole URI: a home moved or copied keeps its records' old absolute paths
        hit = runs[(runs["study"] == "expert") & runs["checkpoint_uri"].map(lambda uri: _names_key(uri, key))] \
            if not runs.empty else runs
        experts.append((int(hit["tokens"].iloc[0]), float(hit["seconds"].iloc[0])) if not hit.empty
                       else (None, float("nan")))
    tokens = None if any(t is None for t, _ in experts) else sum(t for t, _ in experts)
    search = search_evaluations(database.evaluations(stage))
    n_search_evals = int(search[["kind", "candidate_id"]].drop_duplicates().shape[0])
    timing_key = result_key(stage, "proxy_eval_timing.json")
    per_eval = store.get_json(timing_key)["seconds_per_evaluation"] if store.exists(timing_key) else float("nan")
    recorded = runs.set_index("run_id") if not runs.empty else None
    swarm = [(int(recorded.at[r, "tokens"]), float(recorded.at[r, "seconds"]))
             if recorded is not None and r in recorded.index else (None, float("nan")) for r in swarm_runs]
    swarm_tokens = None if any(t is None for t, _ in swarm) else sum(t for t, _ in swarm)
    return [
        SearchCost("MergeMix (K experts, merged proxies)", len(experts), tokens,
                   sum(x for _, x in experts), n_search_evals, n_search_evals * per_eval),
        SearchCost(f"RegMix proper ({len(swarm)} swarm runs)", len(swarm), swarm_tokens,
                   float(sum(x for _, x in swarm)), len(swarm), len(swarm) * per_eval),
    ]


def protocol_markdown(quality: dict) -> list[str]:
    """The report's header: the pre-registered protocol, its hash and the ledger of attempts on this stage."""
    p, attempt = quality["protocol"], quality["attempt"]
    lines = [f"Protocol hash: **`{p['hash']}`** — attempt {attempt['number']} ({attempt['reason']}), registered "
             f"{attempt['registered_at']}, judged {attempt['judged_at']}.", "",
             "## Protocol (declared in `validation.protocol` before any quality run trained)", "",
             f"- metric: **{p['metric']}** (higher is better; a minimized capability enters negated)",
             f"- seeds: {', '.join(str(x) for x in p['seeds'])}",
             f"- arms: {', '.join(p['arms'])}",
             f"- confidence: {p['confidence']} (two-sided paired t-interval over seeds; the chosen mixture *beats* an "
             "arm when the lower bound > 0, *loses* when the upper bound < 0; held out: *no worse than uniform* "
             "when the upper bound of chosen − uniform ≥ 0)",
             f"- RegMix swarm: {p['regmix_runs']} runs, Dirichlet({p['regmix_concentration']} · natural prior), "
             f"seed {p['regmix_seed']}"]
    earlier = [a for a in quality.get("attempts", []) if a["hash"] != p["hash"]]
    if earlier:
        lines += ["", "Other attempts on this stage (kept as they were):", ""]
        lines += [f"- attempt {a['number']} `{a['hash']}` ({a['reason']}): metric {a['protocol']['metric']}, seeds "
                  f"{a['protocol']['seeds']}, registered {a['registered_at']}, judged {a.get('judged_at') or 'never'}"
                  for a in earlier]
    return lines + [""]


def quality_markdown(s: Settings, quality: dict) -> list[str]:
    """Arms, arms × capabilities × seeds, the chosen arm's margins with intervals, held out vs uniform."""
    caps = list(s.capabilities)
    runs = pd.DataFrame(quality["runs"])
    heldout = [c for c in runs.columns if c.startswith("heldout:")]
    metric = quality["protocol"]["metric"]
    conf = f"{100 * quality['protocol']['confidence']:.0f} %"
    lines = ["## Mixture quality (trained with the expert recipe at every protocol seed)", "",
             pd.DataFrame([{"arm": a, **w} for a, w in quality["arms"].items()]).to_markdown(index=False, floatfmt=".3f"),
             "", f"Every run (metric = {metric}):", "",
             runs[["arm", "seed", "metric", *caps, *heldout]].to_markdown(index=False, floatfmt=".4f"), "",
             f"Chosen minus each arm on **{metric}**, paired by seed ({conf} t-interval):", "",
             "| vs | margin | interval | per seed | verdict |", "|---|---|---|---|---|"]
    for arm, m in quality["margins"].items():
        lines.append(f"| {arm} | {m['mean']:+.4f} | [{m['low']:+.4f}, {m['high']:+.4f}] | "
                     f"{', '.join(f'{x:+.4f}' for x in m['per_seed'])} | {m['verdict']} |")
    verdict = "beats every arm beyond noise" if quality["beats_every_arm"] else "does not beat every arm beyond noise"
    lines += ["", f"The chosen mixture **{verdict}** on the declared metric.", ""]
    if quality["heldout_vs_uniform"]:
        lines += [f"Held out, chosen minus uniform ({conf} t-interval):", "",
                  "| task | margin | interval | no worse beyond noise |", "|---|---|---|---|"]
        lines += [f"| {h} | {m['mean']:+.4f} | [{m['low']:+.4f}, {m['high']:+.4f}] | {'yes' if m['no_worse'] else 'no'} |"
                  for h, m in quality["heldout_vs_uniform"].items()]
        lines.append("")
    regmix = quality.get("regmix") or {}
    if regmix:
        lines += [f"RegMix proper: LightGBM fitted on its own {len(regmix['runs'])} trained runs (seed "
                  f"{regmix['seed']}) only; out-of-fold Spearman ρ "
                  + ", ".join(f"{c} {_fmt(v)}" for c, v in regmix["cv_spearman"].items()) + ".", ""]
    single = quality.get("best_single_domain") or {}
    if single:
        lines += [f"Best single domain: {single['domain']} (its expert's {metric} in the seed design: "
                  + ", ".join(f"{d} {v:.4f}" for d, v in single["proxy_metric"].items()) + ").", ""]
    return lines


def report_markdown(s: Settings, stage: str, fidelity: dict, quality: dict, vectors: dict, costs) -> str:
    """The study as one markdown page: the protocol and its hash, mixture quality, fidelity, cost, task vectors."""
    caps = list(s.capabilities)
    lines = [f"# Validation of stage {stage}", "", *protocol_markdown(quality), *quality_markdown(s, quality)]
    lines += ["## Proxy fidelity", "",
              f"Overall Spearman ρ (proxy vs trained, n = {fidelity['n']}): **{fidelity['overall_spearman']:.3f}** "
              f"(threshold {s.validation.min_spearman:.2f}); capability recovery {fidelity['overall_recovery']:.3f}.", ""]
    lines += ["| capability | ρ | recovery | gain recovery | dual-capability ρ |", "|---|---|---|---|---|"]
    for c in caps:
        lines.append(f"| {c} | {fidelity['spearman'][c]:.3f} | {fidelity['recovery'][c]:.3f} | "
                     f"{_fmt(fidelity['gain_recovery'][c])} | {_fmt(fidelity['dual_spearman'][c])} |")
    for k, v in fidelity["heldout_spearman"].items():
        lines.append(f"| {k} (held out) | {_fmt(v)} | | | |")
    lines += ["", "Mixtures (overall = macro-average of capability scores):", "",
              pd.DataFrame(fidelity["mixtures"]).to_markdown(index=False, floatfmt=".3f"), ""]
    lines += ["## Cost of the search", "", cost_markdown(costs), ""]
    lines += ["## Task vectors", "", task_vectors.markdown(vectors)]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    """A figure to 3 decimals, or n/a where none could be computed (None or not finite)."""
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


__all__ = ["SEARCH_KINDS", "search_evaluations", "search_evaluation_counts", "search_costs", "protocol_markdown",
           "quality_markdown", "report_markdown"]
