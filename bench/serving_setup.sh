# Sourced by bench/serving_cpu.sh and bench/serving_instructions.sh (from the repository root,
# with the script's arguments): the peers' folder and data, the address the server listens on,
# the request body wrk sends (BODY=single or batch64, in WRK_BODY), the binaries to measure (the
# arguments, else the release build, in BINS), `start_server BIN [VAR=VALUE ...]`, which starts
# bench/serve_bench_model.sh in a session of its own and waits until the model is ready, and
# `stop`, which stops that session (nothing is stopped by name).
PEERS_DIR="${PEERS_DIR:-../shared/bench/peers}"
export BENCH_DATA="${BENCH_DATA:-${BENCH_HOME:-$HOME/.cache/plinth-bench}/data}"
LISTEN="${LISTEN:-127.0.0.1:8200}"
case "${BODY:-single}" in
  single) export WRK_BODY="$BENCH_DATA/serving/bodies/v2_single.json" ;;
  batch64) export WRK_BODY="$BENCH_DATA/serving/bodies/v2_batch64.json" ;;
  *) echo "BODY is single or batch64" >&2; exit 2 ;;
esac
[ -f "$WRK_BODY" ] || { echo "no $WRK_BODY: run $PEERS_DIR/serving/train_model.py first" >&2; exit 2; }
BINS=("$@")
[ ${#BINS[@]} -eq 0 ] && BINS=("${CARGO_TARGET_DIR:-target}/release/plinth")
SERVER_PID=""

start_server() {
  local bin="$1"
  shift
  [ -x "$bin" ] || { echo "no executable $bin" >&2; exit 2; }
  env "$@" PLINTH_BIN="$bin" setsid taskset -c 1 bench/serve_bench_model.sh \
    "$BENCH_DATA/serving/model.onnx" "$LISTEN" >"${SERVER_LOG:-/dev/null}" 2>&1 &
  SERVER_PID=$!
  local deadline=$(($(date +%s) + ${READY_SECONDS:-180}))
  until curl -sf -o /dev/null "http://$LISTEN/v2/models/bench.lgbm/ready"; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "the server exited before it was ready" >&2
      [ -n "${SERVER_LOG:-}" ] && cat "$SERVER_LOG" >&2
      exit 1
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { echo "the server was not ready in time" >&2; stop; exit 1; }
    sleep 0.2
  done
}

stop() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
  local deadline=$(($(date +%s) + 30))
  while kill -0 -- "-$SERVER_PID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
  kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
[ -f "$BENCH_DATA/serving/model.onnx" ] || { echo "no $BENCH_DATA/serving/model.onnx: see $PEERS_DIR/README.md (setup.sh core, then serving/train_model.py)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 2; }
