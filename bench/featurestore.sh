#!/usr/bin/env bash
# Plinth against the feature-store peers, side by side in one run (docs/BENCHMARKS.md):
# ../shared/bench/peers/featurestore/run_featurestore.sh with `plinth features pit` as the
# point-in-time target; the harness compares its rows with DuckDB's ASOF LEFT JOIN.
# usage: bench/featurestore.sh [STEP ...]     (default steps: gen target_pit duckdb)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source bench/lib.sh
export TARGET_NAME=plinth
export TARGET_PIT_CMD="'$bin' features pit --features \"\$FS_FEATURES\" --entities \"\$FS_ENTITY_DF\" --out \"\$FS_OUT\" --ttl 2d"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(gen target_pit duckdb)
"$PEERS_DIR/featurestore/run_featurestore.sh" "${steps[@]}"
