"""The work behind the validation assets (``assets/validation/``): the design's mixtures, the reference
trainer and the proxy-vs-trained rank fidelity. The mixture-quality comparison: ``steps/mixture_quality.py``.

Definitions of every figure: ``core/evaluation/fidelity.py`` and docs/results.md.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mergemix_dagster.core.evaluation.fidelity import FidelityReport, rank_fidelity, spearman
from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.plots import dual_capability_plot, rank_rank_plot
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.artifacts import configured_rows
from mergemix_dagster.resources.layout import candidate_fingerprint
from mergemix_dagster.steps.reference_runs import PROXY_KIND, REFERENCE_KIND, ReferenceTrainer, scores_by_fingerprint

VALIDATION_CODE_VERSION = "2"  # of every validation asset: raise it when what the study computes changes
# 2: mixture_quality judged under the pre-registered protocol (validation.protocol), RegMix proper on its own swarm


def validation_dir(s: Settings, stage: str) -> Path:
    """``<home>/validation/<stage>/``: the study's plots and JSON files, readable without the store."""
    out = layout.validation_dir(s.home_path, stage)
    out.mkdir(parents=True, exist_ok=True)
    return out


def design_mixtures(design: dict, section: str) -> list[tuple[str, Mixture]]:
    """``(id, mixture)`` of one section of ``validation_design``: ``fidelity`` or ``dual``."""
    return [(p["id"], Mixture.from_dict(p["alpha"], design["domains"])) for p in design[section]]


def reference_trainer(context, s: Settings, store: CheckpointStore, database: EvaluationDatabase,
                      stage: str) -> ReferenceTrainer:
    """The stage's reference trainer, logging to (and reporting progress through) the asset's context."""
    return ReferenceTrainer(s, store, database, stage, log=context.log.info, context=context)


@dataclass(frozen=True)
class FidelityStudy:
    """Proxy vs trained scores of the validation mixtures, and the two plots drawn from them."""

    report: FidelityReport
    heldout_spearman: dict[str, float]
    dual_spearman: dict[str, float]
    mixtures: pd.DataFrame  # id, tag, proxy_overall, trained_overall
    result: dict  # fidelity.json
    rank_plot: Path
    dual_plot: Path


def measure_fidelity(
    s: Settings, database: EvaluationDatabase, stage: str, design: dict, trainer: ReferenceTrainer
) -> FidelityStudy:
    """Pair each validation mixture's proxy scores with its reference run's, rank them against each other
    (overall, per capability, held out, along the dual-capability line) and draw the plots."""
    seed = trainer.seeds(1)[0]
    proxies = scores_by_fingerprint(database, stage, PROXY_KIND, s)
    trained = scores_by_fingerprint(database, stage, REFERENCE_KIND, s)
    caps = list(s.capabilities)

    def paired(study: str):
        ids, p_rows, t_rows = [], [], []
        for pid, mixture in design_mixtures(design, study):
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

    _, d_p, d_t = paired("dual")
    xs = [p["x"] for p in design["dual"]]
    dual_rho = {c: spearman([r[c] for r in d_p], [r[c] for r in d_t]) for c in caps}
    out = validation_dir(s, stage)
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
    return FidelityStudy(report, heldout_rho, dual_rho, rows, result, rank_plot, dual_plot)


__all__ = [
    "VALIDATION_CODE_VERSION", "validation_dir", "design_mixtures", "reference_trainer", "FidelityStudy",
    "measure_fidelity",
]
