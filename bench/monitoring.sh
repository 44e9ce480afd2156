#!/usr/bin/env bash
# Plinth's fairness metrics against Fairlearn, side by side in one run (docs/BENCHMARKS.md):
# ../shared/bench/peers/monitoring/run_monitoring.sh with `plinth fairness` as its target.
# The harness times each command (wall clock, including process start and the Parquet read)
# and compares its JSON with Fairlearn's values leaf by leaf (rel 1e-9).
# usage: bench/monitoring.sh        (env: PEERS_DIR, BENCH_HOME)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source bench/lib.sh
export TARGET_NAME=plinth
export TARGET_FAIRNESS_CMD="'$bin' fairness --input \"\$FAIRNESS_PARQUET\" --label y_true --prediction y_pred --group group --out \"\$OUT_JSON\""
"$PEERS_DIR/monitoring/run_monitoring.sh" gen fairlearn target
