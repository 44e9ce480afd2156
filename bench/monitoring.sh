#!/usr/bin/env bash
# Plinth's monitoring against its peers, side by side in one run (docs/BENCHMARKS.md):
# ../shared/bench/peers/monitoring/run_monitoring.sh with `plinth drift` (against Evidently,
# 1M x 10 columns each side) and `plinth fairness` (against Fairlearn) as its target. The
# harness times each command (wall clock, including process start and the Parquet reads) and
# compares its JSON with the peer's values leaf by leaf.
# usage: bench/monitoring.sh        (env: PEERS_DIR, BENCH_HOME)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source bench/lib.sh
export TARGET_NAME=plinth
export TARGET_DRIFT_CMD="'$bin' drift --reference \"\$REF_PARQUET\" --current \"\$CUR_PARQUET\" --out \"\$OUT_JSON\""
export TARGET_FAIRNESS_CMD="'$bin' fairness --input \"\$FAIRNESS_PARQUET\" --label y_true --prediction y_pred --group group --out \"\$OUT_JSON\""
"$PEERS_DIR/monitoring/run_monitoring.sh" gen evidently fairlearn target
