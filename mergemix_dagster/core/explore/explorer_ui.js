// The explorer page: one slider per domain (kept on the simplex and inside the bounds by MM.setWeight), every
// capability's predicted score with its ensemble interval, the measured mixtures as points, markers to jump to.
// Every number shown carries its full value in data-value (data-low/data-high) for scripts/explorer_check.py.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("mm-data").textContent);
  const K = D.domains.length, lo = D.lower, hi = D.upper;
  let x = MM.project(D.start, lo, hi);
  const $ = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const SVG = "http://www.w3.org/2000/svg";
  const s$ = (tag, attrs) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  };
  const fmt = (v) => (v === null || v === undefined ? "–" : Math.abs(v) >= 1000 ? v.toFixed(1) : v.toFixed(4));

  // markers: the chosen mixture and baselines, each with its predictions (for the strips and the scatter)
  // a baseline outside the bounds (beyond the 1e-4 that stored, rounded mixtures carry) is marked at its own
  // prediction, and loads moved into the bounds
  const outside = (w) => w.some((v, j) => v < lo[j] - 1e-4 || v > hi[j] + 1e-4);
  const markers = D.markers.map((m) => ({ ...m, name: m.name + (outside(m.weights) ? " (outside the bounds)" : ""),
                                          pred: MM.predict(D.models, m.weights, D.quantile) }));

  // --- sliders
  const sl = document.getElementById("sliders");
  D.domains.forEach((d, i) => {
    const row = $("div", { class: "srow" });
    row.append($("label", { for: "w-" + i, class: "dname", title: d }, d));
    row.append($("input", { type: "range", id: "w-" + i, min: lo[i], max: hi[i], step: "0.0005",
                           value: x[i], "data-domain": d, "aria-label": "weight of " + d }));
    row.append($("span", { class: "wv", id: "wv-" + i }));
    row.append($("span", { class: "bounds" }, "[" + lo[i].toFixed(3) + ", " + hi[i].toFixed(3) + "]"));
    sl.append(row);
    row.querySelector("input").addEventListener("input", (ev) => {
      x = MM.setWeight(x, i, parseFloat(ev.target.value), lo, hi);
      render();
    });
  });
  const legend = document.getElementById("legend");
  markers.forEach((m, n) => legend.append($("span", { class: "lg m" + Math.min(n, 3) }, "◆ " + m.name)));
  const mk = document.getElementById("markers");
  markers.forEach((m, n) => {
    const b = $("button", { type: "button", class: "marker m" + Math.min(n, 3), "data-marker": m.name }, m.name);
    b.addEventListener("click", () => { x = MM.project(m.weights, lo, hi); render(); });
    mk.append(b);
  });

  // --- capability rows
  const caps = D.capabilities;
  const range = {};
  for (const c of caps) {
    const vals = (D.measured.scores[c] || []).slice();
    for (const m of markers) vals.push(m.pred[c].value);
    for (const r of Object.values(D.references)) if (c in r) vals.push(r[c]);
    let a = Math.min(...vals), b = Math.max(...vals);
    if (!(b > a)) { a -= 0.5; b += 0.5; }
    const pad = (b - a) * 0.08;
    range[c] = [a - pad, b + pad];
  }
  const W = 320, H = 26;
  const sx = (c, v) => Math.max(0, Math.min(W, ((v - range[c][0]) / (range[c][1] - range[c][0])) * W));
  const tb = document.getElementById("caps");
  const live = {};
  caps.forEach((c, n) => {
    const tr = $("tr", { "data-capability": c });
    tr.append($("td", { class: "cname", title: c }, c));
    tr.append($("td", { class: "dir" }, D.directions[c] || ""));
    const val = $("td", { class: "pred", id: "p-" + n });
    const iv = $("td", { class: "iv", id: "i-" + n });
    const svg = s$("svg", { width: W, height: H, class: "strip" });
    (D.measured.scores[c] || []).forEach((v, j) => {
      const p = s$("circle", { cx: sx(c, v), cy: 6 + ((j * 7) % 14), r: 2.6, class: "meas" });
      const t = s$("title", {}); t.textContent = D.measured.ids[j] + ": " + v;
      p.append(t);
      p.addEventListener("click", () => { x = MM.project(D.measured.X[j], lo, hi); render(); });
      svg.append(p);
    });
    for (const [name, r] of Object.entries(D.references)) {
      if (!(c in r)) continue;
      const l = s$("line", { x1: sx(c, r[c]), x2: sx(c, r[c]), y1: 0, y2: H, class: "ref" });
      const t = s$("title", {}); t.textContent = name + ": " + r[c];
      l.append(t); svg.append(l);
    }
    markers.map((m, k) => [m, k]).reverse().forEach(([m, k]) => { // the chosen mixture drawn last, on top
      const px = sx(c, m.pred[c].value);
      const p = s$("path", { d: `M${px},${H / 2 - 6} l5,6 l-5,6 l-5,-6 z`, class: "mk m" + Math.min(k, 3) });
      const t = s$("title", {}); t.textContent = m.name + " (predicted): " + m.pred[c].value;
      p.append(t); svg.append(p);
    });
    const bar = s$("line", { y1: H / 2, y2: H / 2, class: "ivbar" });
    const dot = s$("circle", { cy: H / 2, r: 4.5, class: "cur" });
    svg.append(bar, dot);
    const td = $("td"); td.append(svg);
    tr.append(val, iv, td);
    tb.append(tr);
    live[c] = { val, iv, bar, dot };
  });

  // --- trade-off scatter: measured mixtures in the plane of two capabilities
  const selA = document.getElementById("capA"), selB = document.getElementById("capB");
  for (const sel of [selA, selB]) for (const c of caps) sel.append($("option", { value: c }, c));
  selB.selectedIndex = Math.min(1, caps.length - 1);
  const sc = document.getElementById("scatter");
  function drawScatter(pred) {
    const a = selA.value, b = selB.value, SW = 420, SH = 300, M = 36, ML = 64;
    const X = (v) => ML + ((v - range[a][0]) / (range[a][1] - range[a][0])) * (SW - ML - M);
    const Y = (v) => SH - M - ((v - range[b][0]) / (range[b][1] - range[b][0])) * (SH - 2 * M);
    sc.replaceChildren();
    sc.append(s$("rect", { x: ML, y: M, width: SW - ML - M, height: SH - 2 * M, class: "frame" }));
    const la = s$("text", { x: (SW + ML - M) / 2, y: SH - 8, class: "axis" }); la.textContent = a;
    const lb = s$("text", { x: 10, y: SH / 2, class: "axis", transform: `rotate(-90 10 ${SH / 2})` }); lb.textContent = b;
    sc.append(la, lb);
    for (const [v, tx, ty, anchor] of [[range[a][0], ML, SH - M + 14, "start"], [range[a][1], SW - M, SH - M + 14, "end"]]) {
      const t = s$("text", { x: tx, y: ty, class: "tick", "text-anchor": anchor }); t.textContent = fmt(v); sc.append(t);
    }
    for (const [v, ty] of [[range[b][0], SH - M], [range[b][1], M + 10]]) {
      const t = s$("text", { x: ML - 3, y: ty, class: "tick", "text-anchor": "end" }); t.textContent = fmt(v); sc.append(t);
    }
    (D.measured.ids).forEach((id, j) => {
      const va = D.measured.scores[a], vb = D.measured.scores[b];
      if (!va || !vb) return;
      const p = s$("circle", { cx: X(va[j]), cy: Y(vb[j]), r: 3.5, class: "meas" });
      const t = s$("title", {}); t.textContent = id; p.append(t);
      p.addEventListener("click", () => { x = MM.project(D.measured.X[j], lo, hi); render(); });
      sc.append(p);
    });
    markers.map((m, k) => [m, k]).reverse().forEach(([m, k]) => {
      const p = s$("circle", { cx: X(m.pred[a].value), cy: Y(m.pred[b].value), r: 6, class: "mk m" + Math.min(k, 3) });
      const t = s$("title", {}); t.textContent = m.name + " (predicted)"; p.append(t); sc.append(p);
    });
    const pa = pred[a], pb = pred[b];
    if (pa.low !== null) sc.append(s$("line", { x1: X(pa.low), x2: X(pa.high), y1: Y(pb.value), y2: Y(pb.value), class: "ivbar" }));
    if (pb.low !== null) sc.append(s$("line", { x1: X(pa.value), x2: X(pa.value), y1: Y(pb.low), y2: Y(pb.high), class: "ivbar" }));
    sc.append(s$("circle", { cx: X(pa.value), cy: Y(pb.value), r: 6, class: "cur" }));
  }
  selA.addEventListener("change", () => render());
  selB.addEventListener("change", () => render());

  function render() {
    x.forEach((v, i) => {
      document.getElementById("w-" + i).value = v;
      const s = document.getElementById("wv-" + i);
      s.textContent = v.toFixed(4);
      s.dataset.value = String(v);
    });
    const pred = MM.predict(D.models, x, D.quantile);
    caps.forEach((c) => {
      const p = pred[c], L = live[c];
      L.val.textContent = fmt(p.value);
      L.val.dataset.value = String(p.value);
      L.iv.textContent = p.low === null ? "–" : "[" + fmt(p.low) + ", " + fmt(p.high) + "]";
      L.iv.dataset.low = p.low === null ? "" : String(p.low);
      L.iv.dataset.high = p.high === null ? "" : String(p.high);
      L.dot.setAttribute("cx", sx(c, p.value));
      L.bar.setAttribute("x1", sx(c, p.low === null ? p.value : p.low));
      L.bar.setAttribute("x2", sx(c, p.high === null ? p.value : p.high));
    });
    document.getElementById("sum").textContent = x.reduce((s, v) => s + v, 0).toFixed(6);
    drawScatter(pred);
    window.MM_STATE = { x: x.slice(), predictions: pred };
  }
  render();
})();
