"""The explorer's predictions equal the Python surrogates' in a real headless Chromium (`make explorer-check`).

    PYTHONPATH=. .venv/bin/python scripts/explorer_check.py [--screenshot docs/screenshots/explorer.png]

Declared before running: every reading must match ``CapabilitySurrogates.predict`` and ``.intervals`` (at the
page's quantile) to an absolute 1e-6, at the mixture the page shows, after each of these moves: the page as it
opens (the chosen mixture), four slider drags with the mouse, two arrow-key presses, a baseline button and a
click on a measured point; every mixture shown must sum to 1 within 1e-9 and lie within the bounds. The data:
a synthetic 4-domain swarm of 30 runs and 3 metrics (seed 0), fitted with `mergemix fit` (a --max-weight bound,
a prior), then `mergemix explore --fit`; or, with --stage/--config, a finished stage's `mergemix explore --stage` page; with --fit DIR, an existing fit folder's page. The browser: Debian's /usr/bin/chromium driven by playwright-core
(scripts/explorer_drive.cjs; NODE_PATH must hold playwright-core, the make target installs it).
Exit 0 when every reading matches, 1 otherwise; prints the largest difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-6
DOMAINS = ("web", "code", "math", "sft")


def make_swarm(folder: Path, runs: int = 30, seed: int = 0) -> tuple[Path, Path]:
    """A synthetic swarm: mixtures on the simplex and three metrics with trade-offs and noise."""
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.full(len(DOMAINS), 0.7), size=runs)
    w, c, m, s = X.T
    scores = {
        "code_pass@1": 0.10 + 0.35 * np.sqrt(c) + 0.05 * s + rng.normal(0, 0.01, runs),
        "gsm8k_acc": 0.15 + 0.40 * m * (1 - 0.5 * m) + 0.10 * s + rng.normal(0, 0.01, runs),
        "web_bpb": 1.10 - 0.25 * w + 0.05 * c + rng.normal(0, 0.005, runs),
    }
    ids = [f"run{i:02d}" for i in range(runs)]
    mix, sc = folder / "mixtures.csv", folder / "scores.csv"
    pd.DataFrame(X, columns=list(DOMAINS), index=pd.Index(ids, name="run")).to_csv(mix)
    pd.DataFrame(scores, index=pd.Index(ids, name="run")).to_csv(sc)
    return mix, sc


def mergemix(*args: str) -> None:
    from mergemix_dagster.cli import main

    code = main(list(args))
    if code:
        raise SystemExit(f"mergemix {' '.join(args)} exited {code}")


def compare(readings: list[dict], inputs) -> tuple[float, list[str]]:
    """Largest |page − Python| over every reading, and every failure in words; ``inputs`` (ExplorerInputs) holds
    the surrogates as Python loaded them, the bounds and the quantile."""
    s = inputs.surrogates
    lo, hi = np.array(inputs.lower), np.array(inputs.upper)
    worst, failures = 0.0, []
    for r in readings:
        x = np.array(r["x"], dtype=float)
        if abs(x.sum() - 1) > 1e-9 or (x < lo - 1e-12).any() or (x > hi + 1e-12).any():
            failures.append(f"{r['step']}: mixture {x.tolist()} off the simplex or outside the bounds")
        pred, iv = s.predict(x[None, :]), s.intervals(x[None, :], inputs.quantile)
        if set(r["predictions"]) != set(s.capabilities):
            failures.append(f"{r['step']}: page shows {sorted(r['predictions'])}, surrogates have {s.capabilities}")
        for c, shown in r["predictions"].items():
            want = (pred[c][0], iv[c][0, 0], iv[c][0, 1])
            got = (shown["value"], shown["low"], shown["high"])
            for name, a, b in zip(("value", "low", "high"), got, want):
                d = abs(float(a) - float(b))
                worst = max(worst, d)
                if not d <= TOLERANCE:
                    failures.append(f"{r['step']}: {c} {name} page {a} vs python {b} (|d| = {d:.3g})")
            if shown["text"] != f"{want[0]:.4f}":
                failures.append(f"{r['step']}: {c} displayed {shown['text']!r}, python rounds to {want[0]:.4f}")
    return worst, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screenshot", default=str(ROOT / "docs" / "screenshots" / "explorer.png"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--keep", default="", help="folder to keep the fit and the page in (default: a temporary one)")
    ap.add_argument("--stage", default="", help="check the page of this finished stage instead of a synthetic fit")
    ap.add_argument("--config", default="", help="with --stage: its config")
    ap.add_argument("--fit", default="", help="check the page of this existing `mergemix fit --out` folder instead")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="explorer-check-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        page = work / "explorer.html"
        if args.stage:
            inputs = stage_page(args.config, args.stage, page)
        elif args.fit:
            from mergemix_dagster.core.explore.sources import fit_inputs

            mergemix("explore", "--fit", args.fit, "-o", str(page))
            inputs = fit_inputs(Path(args.fit))
        else:
            inputs = fit_page(work, page)
        readings_path = work / "readings.json"
        driver = ROOT / "scripts" / "explorer_drive.cjs"
        subprocess.run(["node", str(driver), str(page), str(readings_path), args.screenshot, args.chromium],
                       check=True, env={**os.environ})
        readings = json.loads(readings_path.read_text())
        worst, failures = compare(readings, inputs)
    print(f"{len(readings)} page states, {sum(len(r['predictions']) for r in readings)} predictions read; "
          f"largest |page - python| = {worst:.3g} (tolerance {TOLERANCE:g})")
    for f in failures:
        print(f"FAIL {f}")
    print(f"screenshot: {args.screenshot}")
    return 1 if failures or not readings else 0


def stage_page(config: str, stage: str, page: Path):
    """``mergemix explore --stage``'s page, and what Python reads for the same stage."""
    from mergemix_dagster.core.settings import load_settings
    from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase
    from mergemix_dagster.steps.explorer import stage_explorer_inputs

    mergemix("explore", "--stage", stage, "--config", config, "-o", str(page))
    s = load_settings(config)
    return stage_explorer_inputs(s, CheckpointStore(root=s.store_uri),
                                 EvaluationDatabase(path=s.database_path, store_root=s.store_uri), stage)


def fit_page(work: Path, page: Path):
    """A synthetic swarm fitted with ``mergemix fit``, its ``mergemix explore --fit`` page, and what Python reads."""
    from mergemix_dagster.core.explore.sources import fit_inputs

    mix, sc = make_swarm(work)
    fit_dir = work / "fit"
    mergemix("fit", "--mixtures", str(mix), "--scores", str(sc), "--objective",
                 "maximize:code_pass@1,maximize:gsm8k_acc,minimize:web_bpb", "--out", str(fit_dir),
                 "--samples", "4000", "--max-weight", "web=0.45", "--min-weight", "sft=0.05",
                 "--kl-weight", "0.05", "--prior", "web=0.4", "--prior", "code=0.2", "--prior", "math=0.2",
                 "--prior", "sft=0.2")
    mergemix("explore", "--fit", str(fit_dir), "-o", str(page))
    return fit_inputs(fit_dir)


if __name__ == "__main__":
    sys.exit(main())
