"""Screenshots of asset pages in the Dagster UI (`dg dev`) after a finished smoke run, for the README.

    MERGEMIX_HOME=/tmp/x MERGEMIX_CONFIG=smoke .venv/bin/mergemix run
    MERGEMIX_HOME=/tmp/x MERGEMIX_CONFIG=smoke .venv/bin/mergemix validate   (for the proxy_fidelity pages)
    MERGEMIX_HOME=/tmp/x MERGEMIX_CONFIG=smoke .venv/bin/python scripts/ui_screenshots.py docs/screenshots

Needs `pip install -e '.[screenshots]'` (Playwright) and a Chromium (`apt-get install -y chromium`; no
browser download). Dagster shows a markdown value over 1,000 characters (our inline plots) behind a
"[Show Markdown]" button, so the plot screenshot opens it first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PORT = int(os.environ.get("PORT", "3333"))
BASE = f"http://127.0.0.1:{PORT}"


def _wait_for_server(timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{BASE}/server_info", timeout=5)
            return
        except OSError:
            time.sleep(2)
    raise SystemExit("dg dev did not answer in time")


def _graphql(query: str) -> dict:
    request = urllib.request.Request(
        f"{BASE}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    return json.load(urllib.request.urlopen(request, timeout=60))


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DAGSTER_HOME", str(Path(os.environ["MERGEMIX_HOME"]) / "dagster"))
    dg = Path(sys.executable).parent / "dg"
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "dg-dev.log", "w")
    server = subprocess.Popen([str(dg), "dev", "--host", "127.0.0.1", "--port", str(PORT)], stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_server()
        _graphql("mutation SetNuxSeen { setNuxSeen }")  # no "join the community" dialog over the page
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            for asset in ("chosen_mixture", "candidate_evaluations", "proxy_fidelity"):
                page.goto(f"{BASE}/assets/{asset}?partition=s0", timeout=300_000)
                page.get_by_text("Metadata", exact=True).first.wait_for(timeout=300_000)
                page.wait_for_timeout(3000)
                page.screenshot(path=str(out / f"{asset}.png"), full_page=True)
                print(out / f"{asset}.png")
            for row, name in (("rank_fidelity_plot", "proxy_fidelity_rank_plot"),
                              ("dual_capability_plot", "proxy_fidelity_dual_plot")):
                page.keyboard.press("Escape")
                page.locator("tr", has_text=row).get_by_text("[Show Markdown]").click()
                dialog = page.get_by_role("dialog")
                dialog.locator("img").first.wait_for(timeout=60_000)
                page.wait_for_timeout(1000)
                dialog.screenshot(path=str(out / f"{name}.png"))
                print(out / f"{name}.png")
            # an expert page (the UI opens the latest materialized partition) and its training loss curve
            page.goto(f"{BASE}/assets/expert_checkpoint?partition=math%7Cs0", timeout=300_000)
            page.get_by_text("Metadata", exact=True).first.wait_for(timeout=300_000)
            page.wait_for_timeout(3000)
            page.screenshot(path=str(out / "expert_checkpoint.png"), full_page=True)
            print(out / "expert_checkpoint.png")
            page.locator("tr", has_text="loss_curve").get_by_text("[Show Markdown]").click()
            dialog = page.get_by_role("dialog")
            dialog.locator("img").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)
            dialog.screenshot(path=str(out / "expert_checkpoint_loss_curve.png"))
            print(out / "expert_checkpoint_loss_curve.png")
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # dg dev, its webserver, daemon and code server
        server.wait(timeout=60)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
