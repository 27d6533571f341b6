"""One self-contained markdown report of a stage: mixture, trade-offs, plots, checks, cost.

Plain data in, one string out; plots are embedded as base64 PNG data URIs so the file can be mailed or
attached to a ticket without its folder. ``mergemix report --stage S`` gathers the data and writes it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class StageReport:
    stage: str
    mixture: pd.DataFrame  # domain, weight
    utility: dict[str, float | str]  # predicted / verified utility, where the choice came from
    tradeoffs: pd.DataFrame  # one row per model (base, experts, search optimum, ...), one column per capability
    checks: list[tuple[str, str, bool, str, str]] = field(default_factory=list)  # asset, check, passed, severity, text
    cost: pd.DataFrame = field(default_factory=pd.DataFrame)  # study, runs, tokens, seconds
    images: dict[str, bytes] = field(default_factory=dict)  # title -> PNG
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the report opens with them (no capability resolved, ...)
    task_vectors: str = ""  # markdown: cosines of the experts' task vectors and ‖Δ‖/‖base‖ (merge_candidates)
    scored: pd.DataFrame = field(default_factory=pd.DataFrame)  # scored (base, seed design, DeMix round r, ...), models


def _md(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".4g") if not frame.empty else "_none recorded_"


def render_markdown(report: StageReport) -> str:
    lines = [f"# MergeMix report — stage {report.stage}", ""]
    lines += [f"> **WARNING** {w}" for w in report.warnings] + ([""] if report.warnings else [])
    lines += ["## Chosen mixture", "", _md(report.mixture), ""]
    lines += [f"- {k.replace('_', ' ')}: {v:.4g}" if isinstance(v, float) else f"- {k.replace('_', ' ')}: {v}"
              for k, v in report.utility.items()]
    lines += ["", "## Trade-offs (mean score per capability)", "", _md(report.tradeoffs), ""]
    if not report.scored.empty:
        lines += ["### Models scored", "", ("Every model the search scored with lm-eval on this stage; the table above "
                  "shows the base, the experts and the verified choice, the plot below every one of them."), "",
                  _md(report.scored), ""]
    for title, png in report.images.items():
        lines += [f"### {title}", "", f"![{title}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})", ""]
    if report.task_vectors:
        lines += ["## Task vectors (expert − base)", "",
                  ("Cosine similarity between the experts' updates and each update's size relative to the base: "
                   "merging assumes small updates that do not cancel each other."), "", report.task_vectors, ""]
    failed = [c for c in report.checks if not c[2]]
    lines += ["## Asset checks", "", f"{len(report.checks) - len(failed)} passed, {len(failed)} failed.", ""]
    if report.checks:
        checks = pd.DataFrame(report.checks, columns=["asset", "check", "passed", "severity", "description"])
        lines += [_md(checks), ""]
    lines += ["## Cost", "", _md(report.cost), ""]
    lines += [f"> {n}" for n in report.notes]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["StageReport", "render_markdown"]
