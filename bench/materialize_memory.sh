#!/usr/bin/env bash
# Materialization memory on a table 10x the feature-store harness's (docs/BENCHMARKS.md):
# the harness's generator with FS_ENTITIES=1000000 writes 10,000,000 feature rows (1,000,000
# entities x 10 timestamps, shuffled). They are uploaded as a dataset with a view over them;
# then a fresh server process runs only `plinth materialize --full`, and its peak resident
# memory (VmHWM) is read before it stops.
# usage: bench/materialize_memory.sh [ENTITIES]      (default 1000000)
#   ONLINE_STORE=redis://127.0.0.1:6379 puts the online store in Redis, so that the server's
#   peak memory is the materialization's alone (the embedded store's page cache lives in the
#   server process).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source bench/lib.sh
ENTITIES="${1:-1000000}"
DATA10="$BENCH_HOME/data-${ENTITIES}e"
PY="$BENCH_HOME/venvs/feast/bin/python"
if [ ! -f "$DATA10/featurestore/features.parquet" ]; then
  BENCH_DATA="$DATA10" FS_ENTITIES="$ENTITIES" "$PY" "$PEERS_DIR/featurestore/gen_data.py" >&2
fi
PORT="${PLINTH_BENCH_PORT:-8211}"
work="$(mktemp -d)"
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
key="$("$bin" key generate)"
start() {
  PLINTH_BOOTSTRAP_ADMIN_KEY="$key" taskset -c 1 "$bin" serve --listen "127.0.0.1:$PORT" --data-dir "$work/data" --max-upload-bytes 8589934592 ${ONLINE_STORE:+--online-store-url "$ONLINE_STORE"} --log-level warn >>"$work/server.log" 2>&1 &
  echo $! >"$work/pid"
  until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.1; done
}
stop() { kill "$(cat "$work/pid")"; while kill -0 "$(cat "$work/pid")" 2>/dev/null; do sleep 0.1; done; }
export PLINTH_PROFILES_FILE="$work/profiles.toml"
p() { taskset -c 0 "$bin" "$@"; }
start
p login --url "http://127.0.0.1:$PORT" --key "$key" >/dev/null
p team create bench >/dev/null
p dataset upload bench/features "$DATA10/featurestore/features.parquet" >/dev/null
p entity create bench/item --key entity_id:int64 >/dev/null
python3 - "$work/view.json" <<'PY'
import json, sys
json.dump({"name": "fv", "entity": "item", "source": {"name": "features"}, "timestamp_field": "event_timestamp",
           "features": [{"name": f"f{i}", "type": "float64"} for i in range(10)], "public": True}, open(sys.argv[1], "w"))
PY
p feature-view create bench "$work/view.json" >/dev/null
stop
start
pid="$(cat "$work/pid")"
before_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
t0=$(date +%s.%N)
p materialize bench/fv --full >/dev/null
secs=$(awk "BEGIN{print $(date +%s.%N) - $t0}")
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
got=$(curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/teams/bench/features/online" -H 'content-type: application/json' \
  -d '{"features": ["fv:f0"], "entities": {"entity_id": [0, 999999]}}')
file_mb=$(du -m "$DATA10/featurestore/features.parquet" | cut -f1)
echo "{\"bench\":\"featurestore\",\"peer\":\"plinth\",\"step\":\"materialize_memory\",\"feature_rows\":$((ENTITIES * 10)),\"entities\":$ENTITIES,\"parquet_mb\":$file_mb,\"online_store\":\"${ONLINE_STORE:-embedded}\",\"seconds\":$secs,\"rss_before_mb\":$((before_kb / 1024)),\"peak_rss_mb\":$((peak_kb / 1024)),\"check\":$got}"
stop
