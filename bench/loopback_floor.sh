#!/usr/bin/env bash
# The loopback floor of this machine, measured the way the serving harness measures servers
# (wrk with the harness's Lua script and 1-row body, server on CPU 1, wrk on CPU 0): a C server
# that answers every request with a fixed body and does nothing else (bench/floor/http_floor.c),
# sleeping between requests and busy polling. No server can beat these figures here; they
# bound, for example, "10x FastAPI's requests/s at 1 connection" and "p99 at 32 connections".
# Then, at 1 connection, the busy-polling floor doing WORK_US of work per request (FLOOR_WORK_US,
# default "5 10 20"): how the round trip grows with a server's own time.
# usage: bench/loopback_floor.sh          (env: BENCH_HOME, PEERS_DIR, DURATION, FLOOR_WORK_US)
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_DIR="${PEERS_DIR:-../shared/bench/peers}"
BENCH_DATA="${BENCH_DATA:-${BENCH_HOME:-$HOME/.cache/plinth-bench}/data}"
work="$(mktemp -d)"
trap 'kill "$(cat "$work/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$work"' EXIT
gcc -O2 -o "$work/http_floor" bench/floor/http_floor.c
# floor NAME CONCURRENCY MODE [WORK_US]: the floor server started, loaded by the harness's
# load generator, stopped.
floor() {
  local name="$1" conc="$2"; shift 2
  taskset -c 1 "$work/http_floor" "$1" 8299 ${2:+"$2"} &
  echo $! >"$work/pid"
  sleep 0.3
  CONCURRENCY="$conc" DURATION="${DURATION:-6}" "$PEERS_DIR/lib/loadgen.sh" "$name" single \
    http://127.0.0.1:8299/ "$BENCH_DATA/serving/bodies/v2_single.json"
  kill "$(cat "$work/pid")"
  wait "$(cat "$work/pid")" 2>/dev/null || true
}
floor floor_sleeping "${CONCURRENCY:-1 8 32}" 0
floor floor_busy_poll "${CONCURRENCY:-1 8 32}" 1
for work_us in ${FLOOR_WORK_US:-5 10 20}; do
  WARMUP=0 floor "floor_busy_poll_work_${work_us}us" 1 1 "$work_us"
done
