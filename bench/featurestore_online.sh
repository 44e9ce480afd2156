#!/usr/bin/env bash
# Plinth's feature serving against `feast serve`, on the harness's data (docs/BENCHMARKS.md):
#   1. a Plinth server (pinned to CPU 1) with the harness's features.parquet uploaded as a
#      dataset, an entity and a public feature view `fv` (f0..f9) over it;
#   2. `plinth materialize` of the 100,000 entities, timed (Feast's `materialize` is timed by
#      the harness's feast steps);
#   3. the harness's `target_online` load (wrk, 1 and 8 connections, 1 and 100 entities × 10
#      features) against Plinth, then the `serve` step for `feast serve`, in the same run.
# usage: bench/featurestore_online.sh [FEAST_STEPS...]   (default: serve)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source bench/lib.sh
DATA="${BENCH_DATA:-$BENCH_HOME/data}/featurestore"
PORT="${PLINTH_BENCH_PORT:-8210}"
work="$(mktemp -d)"
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
key="$("$bin" key generate)"
PLINTH_BOOTSTRAP_ADMIN_KEY="$key" taskset -c 1 "$bin" serve --listen "127.0.0.1:$PORT" --data-dir "$work/data" --log-level warn >"$work/server.log" 2>&1 &
echo $! >"$work/pid"
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.1; done
export PLINTH_PROFILES_FILE="$work/profiles.toml"
p() { taskset -c 0 "$bin" "$@"; }
p login --url "http://127.0.0.1:$PORT" --key "$key" >/dev/null
p team create bench >/dev/null
p dataset upload bench/features "$DATA/features.parquet" >/dev/null
p entity create bench/item --key entity_id:int64 >/dev/null
python3 - "$work/view.json" <<'PY'
import json, sys
json.dump({"name": "fv", "entity": "item", "source": {"name": "features"}, "timestamp_field": "event_timestamp",
           "features": [{"name": f"f{i}", "type": "float64"} for i in range(10)], "public": True}, open(sys.argv[1], "w"))
PY
p feature-view create bench "$work/view.json" >/dev/null
start=$(date +%s.%N)
p materialize bench/fv --full
echo "{\"bench\":\"featurestore\",\"peer\":\"plinth\",\"step\":\"materialize\",\"seconds\":$(awk "BEGIN{print $(date +%s.%N) - $start}"),\"entities\":100000}"
TARGET_NAME=plinth TARGET_ONLINE_URL="http://127.0.0.1:$PORT/api/v1/teams/bench/features/online" \
  "$PEERS_DIR/featurestore/run_featurestore.sh" target_online
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(serve)
"$PEERS_DIR/featurestore/run_featurestore.sh" "${steps[@]}"
