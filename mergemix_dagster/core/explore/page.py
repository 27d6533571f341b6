"""One self-contained, offline HTML page to explore a mixture: a slider per domain, every capability's predicted
score with its interval, the measured mixtures as points, the chosen mixture and baselines marked.

The page holds its data (the surrogates as JSON trees, ``trees.py``), its script (``explorer_model.js``: the
arithmetic; ``explorer_ui.js``: the page) and its style inline: no CDN, no network, one file to share.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mergemix_dagster.core.explore.trees import ExplorerError, export_surrogates

HERE = Path(__file__).parent
SIMPLEX_SLACK = 1e-9

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222}
h1{font-size:20px;margin:0 0 4px} .sub{color:#555;margin:0 0 12px}
.wrap{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}
.panel{border:1px solid #ddd;border-radius:6px;padding:10px 14px}
.srow{display:grid;grid-template-columns:150px 220px 64px 110px;gap:8px;align-items:center}
.dname,.cname{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.wv{font-variant-numeric:tabular-nums;text-align:right} .bounds{color:#777;font-size:12px}
table{border-collapse:collapse} td,th{padding:2px 8px;text-align:left}
td.pred,td.iv{font-variant-numeric:tabular-nums;white-space:nowrap} .dir{color:#777;font-size:12px}
.meas{fill:#9aa;opacity:.8;cursor:pointer} .ref{stroke:#000;stroke-width:1.5;stroke-dasharray:3 2}
.cur{fill:#1f6fd1} .ivbar{stroke:#1f6fd1;stroke-width:3;opacity:.55}
.mk.m0{fill:#d62728} .mk.m1{fill:#ff9f1c} .mk.m2{fill:#2ca02c} .mk.m3{fill:#9467bd}
button.marker{margin:4px 6px 0 0;border:0;border-radius:4px;padding:4px 8px;color:#fff;cursor:pointer}
button.m0{background:#d62728} button.m1{background:#ff9f1c} button.m2{background:#2ca02c} button.m3{background:#9467bd}
.frame{fill:none;stroke:#ccc} .axis{font-size:12px;text-anchor:middle} .notes{color:#555;font-size:12px}
.legend span{margin-right:14px} .lg.m0{color:#d62728} .lg.m1{color:#ff9f1c} .lg.m2{color:#2ca02c}
.lg.m3{color:#9467bd} .tick{font-size:10px;fill:#777} .marker-note{color:#777;font-size:12px}
"""


@dataclass
class ExplorerInputs:
    """What the page shows. ``markers``: name -> weights in ``surrogates.domains`` order, the chosen mixture
    first; ``references``: name -> {capability: score} of runs without a mixture (the base model)."""

    title: str
    source: str
    surrogates: object  # CapabilitySurrogates
    lower: Sequence[float]
    upper: Sequence[float]
    quantile: float
    measured_ids: Sequence[str]
    measured_X: np.ndarray
    measured_scores: Mapping[str, Sequence[float]]
    markers: Mapping[str, Sequence[float]]
    references: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    directions: Mapping[str, str] = field(default_factory=dict)
    notes: Sequence[str] = ()


def _finite(values, what: str) -> list[float]:
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ExplorerError(f"{what} has a non-finite value: {out}")
    return out


def page_data(inp: ExplorerInputs) -> dict:
    """The JSON the page embeds; every check the page would otherwise fail silently on is made here."""
    s = inp.surrogates
    k = len(s.domains)
    lower, upper = _finite(inp.lower, "lower bounds"), _finite(inp.upper, "upper bounds")
    if len(lower) != k or len(upper) != k:
        raise ExplorerError(f"{k} domains but {len(lower)} lower and {len(upper)} upper bounds")
    if any(a > b for a, b in zip(lower, upper)) or sum(lower) > 1 + SIMPLEX_SLACK or sum(upper) < 1 - SIMPLEX_SLACK:
        raise ExplorerError(f"no mixture satisfies the bounds: lower {lower}, upper {upper}")
    if not 0 < inp.quantile < 0.5:
        raise ExplorerError(f"interval quantile must lie in (0, 0.5), got {inp.quantile}")
    X = np.asarray(inp.measured_X, dtype=float).reshape(-1, k)
    if len(X) != len(inp.measured_ids):
        raise ExplorerError(f"{len(X)} measured mixtures for {len(inp.measured_ids)} ids")
    scores = {c: _finite(v, f"measured {c}") for c, v in inp.measured_scores.items() if c in s.capabilities}
    for c, v in scores.items():
        if len(v) != len(X):
            raise ExplorerError(f"measured {c}: {len(v)} scores for {len(X)} mixtures")
    markers = [{"name": n, "weights": _finite(w, f"marker {n}")} for n, w in inp.markers.items()]
    if not markers:
        raise ExplorerError("no chosen mixture to mark")
    for m in markers:
        if len(m["weights"]) != k:
            raise ExplorerError(f"marker {m['name']}: {len(m['weights'])} weights for {k} domains")
    return {
        "title": inp.title, "source": inp.source, "domains": list(s.domains), "capabilities": list(s.capabilities),
        "directions": {c: inp.directions.get(c, "") for c in s.capabilities},
        "lower": lower, "upper": upper, "quantile": float(inp.quantile),
        "models": export_surrogates(s),
        "measured": {"ids": [str(i) for i in inp.measured_ids], "X": X.tolist(), "scores": scores},
        "markers": markers, "start": markers[0]["weights"],
        "references": {n: {c: float(v) for c, v in r.items() if c in s.capabilities and math.isfinite(float(v))}
                       for n, r in inp.references.items()},
    }


def _script_json(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def build_page(inp: ExplorerInputs) -> str:
    data = page_data(inp)
    model_js = (HERE / "explorer_model.js").read_text(encoding="utf-8")
    ui_js = (HERE / "explorer_ui.js").read_text(encoding="utf-8")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in inp.notes)
    q = data["quantile"]
    legend = (f'<span style="color:#1f6fd1">● this mixture (interval: ensemble {q:g}–{1 - q:g} quantiles)</span>'
              '<span style="color:#9aa">● measured mixtures (click one to load it)</span>'
              '<span id="legend"></span>'
              + "".join(f"<span>┆ {html.escape(n)} (measured)</span>" for n in data["references"]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<title>{html.escape(inp.title)}</title><style>{CSS}</style></head>
<body>
<h1>{html.escape(inp.title)}</h1>
<p class="sub">{html.escape(inp.source)}</p>
<div class="wrap">
<div class="panel"><b>Mixture</b> (sum <span id="sum"></span>; each slider within its bounds, the others rescale)
<div id="sliders"></div><div id="markers"></div>
<div class="marker-note">◆ marks are the surrogates' predictions at those mixtures</div></div>
<div class="panel"><b>Trade-off</b> <select id="capA"></select> vs <select id="capB"></select><br>
<svg id="scatter" width="420" height="300"></svg></div>
</div>
<div class="panel" style="margin-top:16px"><b>Predicted scores</b> <span class="legend">{legend}</span>
<table><thead><tr><th>capability</th><th></th><th>predicted</th><th>interval</th><th></th></tr></thead>
<tbody id="caps"></tbody></table></div>
<ul class="notes">{notes}</ul>
<script id="mm-data" type="application/json">{_script_json(data)}</script>
<script id="mm-model">{model_js}</script>
<script id="mm-ui">{ui_js}</script>
</body></html>
"""


def write_page(inp: ExplorerInputs, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_page(inp), encoding="utf-8")
    return path
