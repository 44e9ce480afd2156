#!/usr/bin/env bash
# Measures Plinth's start-up figures: server start -> /readyz 200, and the cold start of a
# deployed model (its first request after a restart loads it: load -> first answer).
#
#   usage: bench/startup.sh MODEL_FILE [RUNS]       (prints one JSON line per run)
set -euo pipefail
MODEL="$1"
RUNS="${2:-5}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLINTH="${PLINTH_BIN:-${CARGO_TARGET_DIR:-$HERE/../target}/release/plinth}"
LISTEN=127.0.0.1:8231
DATA="$(mktemp -d "${TMPDIR:-/tmp}/plinth-startup.XXXXXX")"
trap 'pkill -f "plinth serve --listen $LISTEN" 2>/dev/null || true; rm -rf "$DATA"' EXIT
export PLINTH_PROFILES_FILE="$DATA/profiles.toml"
KEY="$("$PLINTH" key generate)"
export PLINTH_BOOTSTRAP_ADMIN_KEY="$KEY" PLINTH_LOG_LEVEL=warn
BODY="$(dirname "$MODEL")/bodies/v2_single.json"

now_ms() { date +%s%3N; }
wait_ready() {
  while ! curl -sf "http://$LISTEN/readyz" >/dev/null; do :; done
}

# First start: create the platform, register and deploy the model.
"$PLINTH" serve --listen "$LISTEN" --data-dir "$DATA/data" 2>/dev/null &
wait_ready
"$PLINTH" login --url "http://$LISTEN" --key "$KEY" >/dev/null
"$PLINTH" team create bench >/dev/null
"$PLINTH" model create bench/lgbm --task binary_classification >/dev/null
"$PLINTH" version upload bench/lgbm "$MODEL" >/dev/null
"$PLINTH" deploy bench/lgbm --traffic 1 --public >/dev/null
pkill -f "plinth serve --listen $LISTEN"; sleep 0.5

for i in $(seq 1 "$RUNS"); do
  t0=$(now_ms)
  "$PLINTH" serve --listen "$LISTEN" --data-dir "$DATA/data" 2>/dev/null &
  wait_ready
  t1=$(now_ms)
  # The model is not loaded yet: this request loads it (cold start).
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' --data-binary @"$BODY" "http://$LISTEN/v2/models/bench.lgbm/infer"
  t2=$(now_ms)
  load_ms=$(curl -sf -H "Authorization: Bearer $KEY" "http://$LISTEN/api/v1/deployments/bench/lgbm/production/metrics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["versions"][0]["last_load_ms"])')
  # A warm request, for comparison.
  t3=$(now_ms)
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' --data-binary @"$BODY" "http://$LISTEN/v2/models/bench.lgbm/infer"
  t4=$(now_ms)
  echo "{\"bench\":\"startup\",\"run\":$i,\"start_to_ready_ms\":$((t1 - t0)),\"first_request_ms\":$((t2 - t1)),\"model_load_ms\":$load_ms,\"warm_request_ms\":$((t4 - t3))}"
  pkill -f "plinth serve --listen $LISTEN"; sleep 0.3
done
