#!/usr/bin/env bash
# What metering and quotas cost the serving path: the peers' serving harness against Plinth with
# metering off (`metering = false`: no quota hook, nothing added to the ledger), on as deployed
# by default (metered, no team limit), and on with the team under quotas (a monthly quota and a
# requests-per-second limit, both far above the load: every request is checked), in one run,
# alternating ROUNDS times (default 2), then the server's CPU time per request of each
# (bench/serving_cpu.sh's method). Compare the ratios within this run.
#
#   usage: bench/metering_overhead.sh [PLINTH_BINARY]     (default: the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_DIR="${PEERS_DIR:-../shared/bench/peers}"
export BENCH_HOME="${BENCH_HOME:-$HOME/.cache/plinth-bench}"
export BENCH_DATA="${BENCH_DATA:-$BENCH_HOME/data}"
BIN="${1:-${CARGO_TARGET_DIR:-target}/release/plinth}"
export TARGET_READY_URL=http://127.0.0.1:8200/v2/models/bench.lgbm/ready
export TARGET_URL=http://127.0.0.1:8200/v2/models/bench.lgbm/infer
flags() {
  case "$1" in
    off) echo "METERING=false" ;;
    quota) echo "QUOTA=1" ;;
    *) echo "" ;;
  esac
}
for round in $(seq 1 "${ROUNDS:-2}"); do
  for mode in off metered quota; do
    TARGET_NAME="plinth-metering-$mode" \
      TARGET_CMD="env $(flags "$mode") PLINTH_BIN='$BIN' bench/serve_bench_model.sh \"\$BENCH_DATA/serving/model.onnx\" 127.0.0.1:8200" \
      PERF_ANALYZER=0 "$PEERS_DIR/serving/run_serving.sh" target
  done
done
for mode in off metered quota; do
  unset METERING QUOTA
  [ "$mode" = off ] && export METERING=false
  [ "$mode" = quota ] && export QUOTA=1
  bench/serving_cpu.sh "$BIN" | sed "s/\"bench\": \"serving_cpu\"/\"bench\": \"serving_cpu\", \"mode\": \"metering-$mode\"/"
done
