#!/usr/bin/env bash
# Materialize the whole graph with the `dagster asset materialize` CLI, one call per partition,
# because a Dagster run cannot mix assets with different partitions definitions.
# Usage: scripts/smoke_materialize.sh [config]   (default: smoke). Honors MERGEMIX_HOME and DAGSTER_HOME;
# SMOKE_VALIDATE=1 (default: the whole validation group), fidelity (its proxy-fidelity half) or 0 (none).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export MERGEMIX_CONFIG=${1:-${MERGEMIX_CONFIG:-smoke}}
export MERGEMIX_HOME=${MERGEMIX_HOME:-$(mktemp -d)/mergemix}
export DAGSTER_HOME=${DAGSTER_HOME:-$MERGEMIX_HOME/dagster}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$DAGSTER_HOME" "$MERGEMIX_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || printf 'telemetry:\n  enabled: false\n' > "$DAGSTER_HOME/dagster.yaml"
STAGE=s0
DOMAINS=$($BIN/python -c "from mergemix_dagster.core.settings import load_settings; print(' '.join(load_settings().domain_names))")
materialize() { echo "+ dagster asset materialize $*"; $BIN/dagster asset materialize -m mergemix_dagster.definitions "$@" >"$MERGEMIX_HOME/last_materialize.log" 2>&1 || { tail -60 "$MERGEMIX_HOME/last_materialize.log"; exit 1; }; }
# Run config of Dagster's default executor: a run of one or two small steps gains nothing from a subprocess per
# step, so it runs in the CLI's process; the optimize and validation runs (many steps, scoring fanned out) use
# the multiprocess executor with a forkserver that preloads the code location and the libraries the steps
# import lazily, once instead of once per step (each is seconds of torch, transformers, lm-eval, LightGBM).
PRELOAD='["mergemix_dagster.definitions", "transformers.models.llama.modeling_llama", "lm_eval.evaluator", "lightgbm", "matplotlib.pyplot", "scipy.stats"]'
IN_PROCESS=(--config-json '{"execution": {"config": {"in_process": {}}}}')
STEPS=(--config-json '{"execution": {"config": {"multiprocess": {"start_method": {"forkserver": {"preload_modules": '"$PRELOAD"'}}}}}}')

$BIN/mergemix stage add "$STAGE"
materialize --select general_corpus,base_tokenizer "${IN_PROCESS[@]}"
for d in $DOMAINS; do materialize --select domain_corpus --partition "$d" "${IN_PROCESS[@]}"; done
materialize --select stage_base --partition "$STAGE" "${IN_PROCESS[@]}"
for d in $DOMAINS; do materialize --select expert_checkpoint --partition "$d|$STAGE" "${IN_PROCESS[@]}"; done
materialize --select merge_candidates,candidate_evaluations,capability_surrogates,search_rounds,chosen_mixture --partition "$STAGE" "${STEPS[@]}"
$BIN/mergemix show
if [ "${SMOKE_VALIDATE:-1}" = 1 ]; then  # the validation study of the stage (issue 4), same CLI
  materialize --select 'group:validation' --partition "$STAGE" "${STEPS[@]}"
  cat "$MERGEMIX_HOME/validation/$STAGE/report.md"
elif [ "${SMOKE_VALIDATE}" = fidelity ]; then  # only the proxy-fidelity half (tests: test_validation covers the rest)
  materialize --select validation_design,validation_proxies,reference_models,proxy_fidelity --partition "$STAGE" "${STEPS[@]}"
  $BIN/python -c "import json,sys; print('Overall Spearman', json.load(open(sys.argv[1]))['overall_spearman'])" \
    "$MERGEMIX_HOME/validation/$STAGE/fidelity.json"
fi
echo "smoke materialize OK: $MERGEMIX_HOME"
