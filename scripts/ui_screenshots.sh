#!/usr/bin/env bash
# Screenshots of asset pages in the Dagster UI (`dg dev`) after a finished smoke run, with headless Chromium.
#   MERGEMIX_HOME=/tmp/x MERGEMIX_CONFIG=smoke .venv/bin/mergemix run && .venv/bin/mergemix validate
#   MERGEMIX_HOME=/tmp/x MERGEMIX_CONFIG=smoke bash scripts/ui_screenshots.sh docs/screenshots
# Needs `chromium` (apt-get install -y chromium). Asset pages are rendered by JavaScript, hence the time budget.
set -euo pipefail
OUT=${1:-docs/screenshots}
PORT=${PORT:-3333}
BIN=${BIN:-.venv/bin}
export DAGSTER_HOME=${DAGSTER_HOME:-$MERGEMIX_HOME/dagster}
mkdir -p "$OUT"
set -m  # dg dev (webserver, daemon, code server) in its own process group, stopped as one at exit
"$BIN/dg" dev --host 127.0.0.1 --port "$PORT" > "$OUT/.dg-dev.log" 2>&1 &
DG=$!
set +m
trap 'kill -- -$DG 2>/dev/null || true' EXIT
for _ in $(seq 1 180); do
  curl -sf "http://127.0.0.1:$PORT/server_info" > /dev/null && break
  sleep 2
done
shoot() {  # name, path
  chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1500,${3:-1900} \
    --virtual-time-budget=30000 --run-all-compositor-stages-before-draw \
    --screenshot="$OUT/$1.png" "http://127.0.0.1:$PORT$2" > /dev/null 2>&1
  echo "$OUT/$1.png"
}
shoot chosen_mixture "/assets/chosen_mixture?partition=s0"
shoot candidate_evaluations "/assets/candidate_evaluations?partition=s0"
shoot proxy_fidelity "/assets/proxy_fidelity?partition=s0" 2600
rm -f "$OUT/.dg-dev.log"
