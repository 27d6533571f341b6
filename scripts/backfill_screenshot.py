"""Screenshot of one asset backfill's page in the Dagster UI (per-asset progress), for the README.

    # a home with foundation and corpora built, stage_automation_sensor on, the daemon running:
    dagster sensor start stage_automation_sensor -w workspace.yaml; mergemix stage add s0   # → one backfill
    MERGEMIX_HOME=... DAGSTER_HOME=... MERGEMIX_CONFIG=smoke .venv/bin/python scripts/backfill_screenshot.py <backfill id> out.png

Same needs as scripts/ui_screenshots.py (Playwright, the system's chromium).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ui_screenshots  # noqa: E402  (server wait and GraphQL helpers, same port setting)


def main(backfill_id: str, out: Path) -> None:
    import shutil

    from playwright.sync_api import sync_playwright

    dg = Path(sys.executable).parent / "dg"
    server = subprocess.Popen([str(dg), "dev", "--host", "127.0.0.1", "--port", str(ui_screenshots.PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ui_screenshots._wait_for_server()
        ui_screenshots._graphql("mutation SetNuxSeen { setNuxSeen }")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{ui_screenshots.BASE}/runs/b/{backfill_id}", timeout=300_000)
            page.wait_for_timeout(5000)
            page.get_by_text("Overview", exact=True).last.click()
            page.wait_for_timeout(10000)
            page.screenshot(path=str(out), full_page=True)
            print(out)
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
