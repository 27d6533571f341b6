// The explorer's arithmetic, no DOM: LightGBM trees (core/explore/trees.py documents the format and mirrors
// this file in Python), ensemble intervals, and moving one weight while the mixture stays on the simplex and
// inside its bounds. Runs in the page and under node (tests/test_explorer.py).
"use strict";
const MM = (function () {
  const KZ = 1.0000000180025095e-35; // LightGBM's kZeroThreshold (1e-35f)

  // node: [feature, threshold, missing type (0 None, 1 Zero, 2 NaN) + 4 * default_left, left, right] or a leaf value
  function evalTree(node, x) {
    while (typeof node !== "number") {
      const missing = node[2] & 3, defaultLeft = node[2] & 4;
      let v = x[node[0]];
      if (Number.isNaN(v) && missing !== 2) v = 0.0;
      if ((missing === 1 && v >= -KZ && v <= KZ) || (missing === 2 && Number.isNaN(v))) {
        node = defaultLeft ? node[3] : node[4];
      } else {
        node = v <= node[1] ? node[3] : node[4];
      }
    }
    return node;
  }

  function evalModel(model, x) {
    if ("const" in model) return model.const;
    let s = 0.0;
    for (const t of model.trees) s += evalTree(t, x);
    return s;
  }

  function quantile(values, q) { // numpy's default (linear) quantile
    const a = values.slice().sort((p, r) => p - r);
    const h = (a.length - 1) * q;
    const lo = Math.floor(h);
    const hi = Math.min(lo + 1, a.length - 1);
    return a[lo] + (h - lo) * (a[hi] - a[lo]);
  }

  // {capability: {value, low, high}} at mixture x (low/high null without an ensemble of >= 2 members)
  function predict(models, x, q) {
    const out = {};
    for (const cap of Object.keys(models)) {
      const m = models[cap];
      const value = evalModel(m.main, x);
      let low = null, high = null;
      if (m.members.length >= 2) {
        const p = m.members.map((e) => evalModel(e, x));
        let sum = 0.0;
        for (const v of p) sum += v;
        const mean = sum / p.length;
        const centred = p.map((v) => v - mean + value);
        low = quantile(centred, q);
        high = quantile(centred, 1 - q);
      }
      out[cap] = { value: value, low: low, high: high };
    }
    return out;
  }

  function total(a) { let s = 0.0; for (const v of a) s += v; return s; }

  // Put the rounding residual on the coordinate with the most room (as core/search/constraints.py does).
  function fixSum(y, lo, hi, skip) {
    const r = 1.0 - total(y);
    if (r === 0) return y;
    let best = -1, room = -1;
    for (let j = 0; j < y.length; j++) {
      if (j === skip) continue;
      const free = r > 0 ? hi[j] - y[j] : y[j] - lo[j];
      if (free > room) { room = free; best = j; }
    }
    if (best >= 0) y[best] = Math.min(hi[best], Math.max(lo[best], y[best] + r));
    return y;
  }

  // Any point -> the nearest-in-spirit point inside [lo, hi] on the simplex: clip, then spread the deficit
  // over the room above (or the excess over the room below) in proportion to that room.
  function project(x, lo, hi) {
    const y = x.map((v, j) => Math.min(hi[j], Math.max(lo[j], v)));
    const d = 1.0 - total(y);
    const room = y.map((v, j) => (d > 0 ? hi[j] - v : v - lo[j]));
    const r = total(room);
    if (r > 0) for (let j = 0; j < y.length; j++) y[j] += d * room[j] / r;
    return fixSum(y.map((v, j) => Math.min(hi[j], Math.max(lo[j], v))), lo, hi, -1);
  }

  // Set weight i to v (clamped to what the bounds allow); the others share the rest in proportion to their
  // current weight above their lower bound (equally when none has any), each capped at its upper bound.
  function setWeight(x, i, v, lo, hi) {
    const k = x.length;
    let loO = 0.0, hiO = 0.0;
    for (let j = 0; j < k; j++) if (j !== i) { loO += lo[j]; hiO += hi[j]; }
    v = Math.min(hi[i], 1.0 - loO, Math.max(lo[i], 1.0 - hiO, v));
    const y = x.slice();
    y[i] = v;
    let free = [];
    for (let j = 0; j < k; j++) if (j !== i) { free.push(j); y[j] = lo[j]; }
    let rest = 1.0 - v - loO;
    for (let pass = 0; pass < k && free.length && rest > 0; pass++) {
      let w = free.map((j) => Math.max(0, x[j] - lo[j]));
      if (total(w) <= 0) w = free.map(() => 1.0);
      const tw = total(w);
      const capped = [];
      free.forEach((j, n) => { if (y[j] + rest * w[n] / tw > hi[j]) capped.push(j); });
      if (!capped.length) {
        free.forEach((j, n) => { y[j] += rest * w[n] / tw; });
        rest = 0;
        break;
      }
      for (const j of capped) { rest -= hi[j] - y[j]; y[j] = hi[j]; }
      free = free.filter((j) => !capped.includes(j));
    }
    return fixSum(y, lo, hi, i);
  }

  return { evalTree, evalModel, quantile, predict, project, setWeight };
})();
if (typeof module !== "undefined") module.exports = MM;
