#!/usr/bin/env bash
# Server CPU time per request: a figure that moves far less with the machine's noise than req/s.
#
#   usage: bench/serving_cpu.sh [PLINTH_BINARY ...]     (default: the release build)
#
# For each binary: the harness's serving model deployed by bench/serve_bench_model.sh (server on
# CPU 1, wrk on CPU 0, as the harness does), busy polling off (a spinning thread would count
# its waiting as CPU time), a 2-s warm-up, then wrk at each concurrency (CONNS, default
# "1 8 32") for DURATION seconds (default 5) with 1-row OIP bodies (BODY=batch64 for 64 rows).
# Prints one JSON line per level: req/s, p50/p99 and the server's user+system CPU microseconds
# per request (from /proc/<pid>/stat). Several binaries are measured in turn, in one run, so
# that two builds compare under the same conditions.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/serving_setup.sh
source bench/serving_setup.sh "$@"
URL="http://$LISTEN/v2/models/bench.lgbm/infer"
HZ=$(getconf CLK_TCK)
trap stop EXIT

for bin in "${BINS[@]}"; do
  stop
  start_server "$bin" PLINTH_BUSY_POLL_US=0
  # The server process of the session start_server made.
  pid=$(pgrep -s "$SERVER_PID" -f -- "serve --listen $LISTEN")
  cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
  taskset -c 0 wrk -t1 -c32 -d2s -s "$PEERS_DIR/lib/wrk_post.lua" "$URL" >/dev/null 2>&1
  for c in ${CONNS:-1 8 32}; do
    before=$(cpu)
    line=$(taskset -c 0 wrk -t1 -c"$c" -d"${DURATION:-5}"s -s "$PEERS_DIR/lib/wrk_post.lua" "$URL" 2>&1 | tail -n 1)
    after=$(cpu)
    python3 - "$bin" "$c" "$((after - before))" "$HZ" "${BODY:-single}" "$line" <<'EOF'
import json, sys
bin_, conns, ticks, hz, body, line = sys.argv[1:]
d = json.loads(line)
print(json.dumps({"bench": "serving_cpu", "binary": bin_, "body": body, "conns": int(conns),
                  "rps": round(d["rps"]), "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"],
                  "errors": d["err_status"] + d["err_timeout"],
                  "cpu_us_per_request": round(int(ticks) / int(hz) * 1e6 / max(d["requests"], 1), 2)}))
EOF
  done
done
