#!/usr/bin/env bash
# Starts Plinth with the peer harness's serving model deployed, for ../shared/bench/peers.
#
#   usage: bench/serve_bench_model.sh MODEL_FILE [LISTEN]     (default listen 127.0.0.1:8200)
#
# A fresh data directory, a bootstrap admin key, the model registered as bench/lgbm version 1
# and deployed public to production: the harness's wrk sends no API key. The script stays in
# the foreground (the harness stops its process group). Plinth's OIP name: bench.lgbm.
# NO_MONITOR=1 deploys it without monitoring (no summaries for drift); KEEP_PREDICTIONS=1 also
# keeps its predictions for labels. METERING=false starts the server without metering and
# quotas; QUOTA=1 puts team bench under quotas far above any load (every request is checked).
set -euo pipefail
MODEL="$1"
LISTEN="${2:-127.0.0.1:8200}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLINTH="${PLINTH_BIN:-${CARGO_TARGET_DIR:-$HERE/../target}/release/plinth}"
unset PLINTH_BIN # plinth refuses PLINTH_* variables that are not its settings
DATA="$(mktemp -d "${TMPDIR:-/tmp}/plinth-bench.XXXXXX")"
export PLINTH_PROFILES_FILE="$DATA/profiles.toml"
# Another server on this address would answer the readiness check below and be measured instead.
if curl -s -o /dev/null -m 1 "http://$LISTEN/"; then
  echo "serve_bench_model.sh: something already answers on $LISTEN; stop it first" >&2
  exit 1
fi
# BENCH_KEY: the admin key to bootstrap with (a caller that needs the API, e.g. feedback.sh).
KEY="${BENCH_KEY:-$("$PLINTH" key generate)}"
PLINTH_BOOTSTRAP_ADMIN_KEY="$KEY" PLINTH_LOG_LEVEL="${PLINTH_LOG_LEVEL:-warn}" \
  PLINTH_METERING="${METERING:-true}" "$PLINTH" serve --listen "$LISTEN" --data-dir "$DATA/data" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do
  kill -0 "$SERVER" 2>/dev/null || { echo "serve_bench_model.sh: plinth serve exited" >&2; exit 1; }
  curl -sf "http://$LISTEN/readyz" >/dev/null && break
  sleep 0.05
done
"$PLINTH" login --url "http://$LISTEN" --key "$KEY" >/dev/null
"$PLINTH" team create bench >/dev/null
if [ -n "${QUOTA:-}" ]; then
  "$PLINTH" billing limits bench --predictions-per-month 1000000000000 --requests-per-second 1000000000 >/dev/null
fi
"$PLINTH" model create bench/lgbm --task binary_classification >/dev/null
"$PLINTH" version upload bench/lgbm "$MODEL" >/dev/null
"$PLINTH" deploy bench/lgbm --env production --traffic 1 --public \
  --max-batch-size "${MAX_BATCH:-256}" --max-wait-us "${MAX_WAIT_US:-200}" --max-workers "${MAX_WORKERS:-2}" \
  --log-sample-rate "${LOG_SAMPLE_RATE:-1.0}" ${NO_MONITOR:+--no-monitor} ${KEEP_PREDICTIONS:+--keep-predictions} >/dev/null
echo "plinth: bench/lgbm deployed from $MODEL on http://$LISTEN (OIP name bench.lgbm)" >&2
wait $SERVER
