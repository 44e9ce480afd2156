#!/usr/bin/env bash
# Plinth against the feature-store peers, side by side in one run (docs/BENCHMARKS.md):
# ../shared/bench/peers/featurestore/run_featurestore.sh with `plinth features pit` as the
# point-in-time target; the harness compares its rows with DuckDB's ASOF LEFT JOIN.
# usage: bench/featurestore.sh [STEP ...]     (default steps: gen target_pit duckdb)
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_DIR="${PEERS_DIR:-../shared/bench/peers}"
export BENCH_HOME="${BENCH_HOME:-$HOME/.cache/plinth-bench}"
cargo build --release -p plinth
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/plinth"
export TARGET_NAME=plinth
export TARGET_PIT_CMD="'$bin' features pit --features \"\$FS_FEATURES\" --entities \"\$FS_ENTITY_DF\" --out \"\$FS_OUT\" --ttl 2d"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(gen target_pit duckdb)
"$PEERS_DIR/featurestore/run_featurestore.sh" "${steps[@]}"
