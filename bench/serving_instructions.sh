#!/usr/bin/env bash
# User-space instructions per request, counted by callgrind: the one serving figure that does not
# move with the machine's noise (the same binary and load give the same count within ~1 %), so
# it tells whether a change made the request path cheaper when req/s cannot.
#
#   usage: bench/serving_instructions.sh [PLINTH_BINARY ...]     (default: the release build)
#
# For each binary: the harness's serving model deployed by bench/serve_bench_model.sh with the
# server under `valgrind --tool=callgrind` (busy polling off: a spinning worker would count its
# waiting), a 3-s warm-up, counters zeroed, then wrk for DURATION seconds (default 3) at CONNS
# connections (default 1) with 1-row OIP bodies (BODY=batch64 for 64 rows; URL_KIND=health for
# the empty /v2/health/live instead). Prints one JSON line per binary: requests and
# instructions per request (every thread of the server: the runtime, the prediction log's
# writer). Kernel time is not counted. KEEP=DIR keeps each binary's callgrind output there, for
# callgrind_annotate (where the instructions went).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/serving_setup.sh
source bench/serving_setup.sh "$@"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
work="$(mktemp -d)"
trap 'stop; rm -rf "$work"' EXIT

load() {
  if [ "${URL_KIND:-infer}" = health ]; then
    taskset -c 0 wrk -t1 -c"${CONNS:-1}" -d"$1" "http://$LISTEN/v2/health/live"
  else
    taskset -c 0 wrk -t1 -c"${CONNS:-1}" -d"$1" -s "$PEERS_DIR/lib/wrk_post.lua" \
      "http://$LISTEN/v2/models/bench.lgbm/infer"
  fi
}

n=0
for bin in "${BINS[@]}"; do
  stop
  n=$((n + 1))
  bin="$(realpath "$bin")"
  rm -f "$work"/callgrind.out* "$work/server.pid"
  # `plinth serve` runs under callgrind (its pid written for callgrind_control); the script's
  # other plinth commands run as they are.
  cat >"$work/plinth" <<EOF
#!/bin/sh
if [ "\$1" = serve ]; then
  echo \$\$ > "$work/server.pid"
  exec valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$bin" "\$@"
fi
exec "$bin" "\$@"
EOF
  chmod +x "$work/plinth"
  SERVER_LOG="$work/server.log" start_server "$work/plinth" PLINTH_BUSY_POLL_US=0
  server="$(cat "$work/server.pid")"
  load 3s >/dev/null
  callgrind_control -z "$server" >/dev/null
  requests=$(load "${DURATION:-3}s" | awk '/requests in/ {print $1}')
  callgrind_control -d "$server" >/dev/null
  sleep 1
  ls "$work"/callgrind.out.* >/dev/null 2>&1 || { echo "callgrind wrote nothing for $bin" >&2; exit 1; }
  [ "${requests:-0}" -gt 0 ] || { echo "no request was answered by $bin" >&2; exit 1; }
  instructions=$(for f in "$work"/callgrind.out.*; do
    callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
  done | awk '{s += $1} END {print s}')
  if [ -n "${KEEP:-}" ]; then
    # One folder per binary, numbered in argument order: two builds' release/plinth never collide.
    keep="$KEEP/$n-$(echo "$bin" | tr '/' '_')"
    mkdir -p "$keep"
    cp "$work"/callgrind.out.* "$keep/"
  fi
  printf '{"bench": "serving_instructions", "binary": "%s", "kind": "%s", "body": "%s", "conns": %s, "requests": %s, "instructions_per_request": %s}\n' \
    "$bin" "${URL_KIND:-infer}" "${BODY:-single}" "${CONNS:-1}" "$requests" "$((instructions / requests))"
done
