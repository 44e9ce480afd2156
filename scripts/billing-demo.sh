#!/usr/bin/env bash
# A month of a small platform, scripted through the CLI and the API as its teams would live it,
# then the statement of one team and the platform report, as the platform computes them:
#   - fraud (standard plan): two models in production, 250,000 predictions (150,000 beyond the
#     free allowance), a new version rolled back within minutes (a failed change);
#   - credit: 40,000 predictions, a second version promoted cleanly; its plan changes to
#     enterprise from next month;
#   - growth: a monthly quota of 30,000 predictions, run into (429 quota_exceeded);
#   - satisfaction answers from each team.
#
#   usage: scripts/billing-demo.sh [PLINTH_BINARY]    (default: the release build)
#
# It starts its own server on a free port with a fresh data directory and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PLINTH="${1:-${CARGO_TARGET_DIR:-target}/release/plinth}"
DATA="$(mktemp -d "${TMPDIR:-/tmp}/plinth-demo.XXXXXX")"
export PLINTH_PROFILES_FILE="$DATA/profiles.toml"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
KEY="$("$PLINTH" key generate)"
PLINTH_BOOTSTRAP_ADMIN_KEY="$KEY" PLINTH_LOG_LEVEL=warn \
  "$PLINTH" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/data" 2>"$DATA/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 200); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.05; done
p() { "$PLINTH" "$@"; }
p login --url "$URL" --key "$KEY" >/dev/null

# 10,000 rows of the models' six Adult features, one request body.
python3 - "$DATA/rows.json" <<'EOF'
import json, sys
rows = [[20 + i % 60, 9 + i % 7, (i * 37) % 5000, 0, 30 + i % 30, i % 2] for i in range(10_000)]
json.dump({"rows": rows}, open(sys.argv[1], "w"))
EOF
predict() { # TEAM MODEL ROWS_IN_TEN_THOUSANDS
  local ok=0 refused=0
  for _ in $(seq 1 "$3"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
      --data-binary @"$DATA/rows.json" "$URL/api/v1/deployments/$1/$2/production/predict")
    if [ "$code" = 200 ]; then ok=$((ok + 1)); else refused=$((refused + 1)); fi
  done
  echo "  $1/$2: $((ok * 10000)) predictions answered, $refused requests refused" >&2
}
M=testdata/models
for team in fraud credit growth; do p team create "$team" >/dev/null; done
p model create fraud/scoring --task binary_classification >/dev/null
p version upload fraud/scoring "$M/lightgbm_binary.txt" >/dev/null
p deploy fraud/scoring --env production --traffic 1 >/dev/null
p model create fraud/chargeback --task binary_classification >/dev/null
p version upload fraud/chargeback "$M/xgboost_binary.json" >/dev/null
p deploy fraud/chargeback --env production --traffic 1 >/dev/null
p model create credit/limit --task binary_classification >/dev/null
p version upload credit/limit "$M/lightgbm_binary.onnx" >/dev/null
p deploy credit/limit --env production --traffic 1 >/dev/null
p model create growth/upsell --task binary_classification >/dev/null
p version upload growth/upsell "$M/sklearn_gb_binary.onnx" >/dev/null
p deploy growth/upsell --env production --traffic 1 >/dev/null
p billing limits growth --predictions-per-month 30000 >/dev/null

echo "traffic:" >&2
predict fraud scoring 20
predict fraud chargeback 5
predict credit limit 4
predict growth upsell 4
# fraud ships scoring v2 and rolls it back; credit ships limit v2 for good.
p version upload fraud/scoring "$M/lightgbm_binary.onnx" >/dev/null
p deploy fraud/scoring --env production --traffic 2 >/dev/null
p rollback fraud/scoring --env production >/dev/null
p version upload credit/limit "$M/lightgbm_binary.txt" >/dev/null
p deploy credit/limit --env production --traffic 2 >/dev/null
p billing set-plan credit enterprise >/dev/null
for team in fraud credit growth; do
  p user create "lead-$team" >/dev/null
  p team add-member "$team" "lead-$team" --role maintainer >/dev/null
  secret=$(p --json key create --principal "lead-$team" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
  score=$([ "$team" = growth ] && echo 3 || echo 5)
  PLINTH_KEY="$secret" PLINTH_URL="$URL" p survey "$score" --team "$team" >/dev/null
done
# Each replica adds its figures to the ledger every 5 s: wait two rounds.
sleep 11
echo
p statement show fraud
echo
p platform report
