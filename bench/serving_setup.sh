# Sourced by bench/serving_cpu.sh and bench/serving_instructions.sh (from the repository root,
# with the script's arguments): the peers' folder and data, the address the server listens on,
# the request body wrk sends (BODY=single or batch64, in WRK_BODY), the binaries to measure (the
# arguments, else the release build, in BINS) and `stop`, which stops the server.
PEERS_DIR="${PEERS_DIR:-../shared/bench/peers}"
export BENCH_DATA="${BENCH_DATA:-${BENCH_HOME:-$HOME/.cache/plinth-bench}/data}"
LISTEN=127.0.0.1:8200
case "${BODY:-single}" in
  single) export WRK_BODY="$BENCH_DATA/serving/bodies/v2_single.json" ;;
  batch64) export WRK_BODY="$BENCH_DATA/serving/bodies/v2_batch64.json" ;;
  *) echo "BODY is single or batch64" >&2; exit 2 ;;
esac
[ -f "$WRK_BODY" ] || { echo "no $WRK_BODY: run $PEERS_DIR/serving/train_model.py first" >&2; exit 2; }
BINS=("$@")
[ ${#BINS[@]} -eq 0 ] && BINS=("${CARGO_TARGET_DIR:-target}/release/plinth")
stop() { pkill -f -- "serve --listen $LISTEN" 2>/dev/null || true; sleep 1; }
