#!/usr/bin/env bash
# What monitoring costs the serving path: the peers' serving harness against Plinth with its
# deployment monitored as deployed by default (summaries for drift, rollups), monitored and
# keeping its predictions for labels (KEEP_PREDICTIONS=1), and not monitored (NO_MONITOR=1), in
# one run, alternating ROUNDS times (default 2), then the server's CPU time
# per request of each (bench/serving_cpu.sh's method). Compare the ratios within this run.
# MODES picks the deployments (default "monitored keeping unmonitored"); CONCURRENCY passes to
# the harness (default "1 8 32").
#
#   usage: bench/monitoring_overhead.sh [PLINTH_BINARY]     (default: the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_DIR="${PEERS_DIR:-../shared/bench/peers}"
export BENCH_HOME="${BENCH_HOME:-$HOME/.cache/plinth-bench}"
export BENCH_DATA="${BENCH_DATA:-$BENCH_HOME/data}"
BIN="${1:-${CARGO_TARGET_DIR:-target}/release/plinth}"
export TARGET_READY_URL=http://127.0.0.1:8200/v2/models/bench.lgbm/ready
export TARGET_URL=http://127.0.0.1:8200/v2/models/bench.lgbm/infer
for round in $(seq 1 "${ROUNDS:-2}"); do
  for mode in ${MODES:-monitored keeping unmonitored}; do
    flag=""
    [ "$mode" = keeping ] && flag="KEEP_PREDICTIONS=1"
    [ "$mode" = unmonitored ] && flag="NO_MONITOR=1"
    TARGET_NAME="plinth-$mode" \
      TARGET_CMD="env $flag PLINTH_BIN='$BIN' bench/serve_bench_model.sh \"\$BENCH_DATA/serving/model.onnx\" 127.0.0.1:8200" \
      PERF_ANALYZER=0 "$PEERS_DIR/serving/run_serving.sh" target
  done
done
# CPU per request, both modes in turn.
for mode in ${MODES:-monitored keeping unmonitored}; do
  unset NO_MONITOR KEEP_PREDICTIONS
  [ "$mode" = keeping ] && export KEEP_PREDICTIONS=1
  [ "$mode" = unmonitored ] && export NO_MONITOR=1
  bench/serving_cpu.sh "$BIN" | sed "s/\"bench\": \"serving_cpu\"/\"bench\": \"serving_cpu\", \"mode\": \"$mode\"/"
done
