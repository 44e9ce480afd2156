#!/usr/bin/env bash
# Plinth against the serving peers, side by side in one run (docs/BENCHMARKS.md):
#   1. ../shared/bench/peers/serving/run_serving.sh with Plinth as its `target` and the peers;
#   2. Triton's perf_analyzer against Plinth (the harness's p99 criterion, then its default one);
#   3. start-up figures (server start -> ready, cold start of the model);
#   4. memory across a sustained run (SOAK_SECONDS, default 300).
# usage: bench/serving.sh            (env: PEERS_DIR, SOAK_SECONDS, SERVING_PEERS)
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_DIR="${PEERS_DIR:-../shared/bench/peers}"
export BENCH_HOME="${BENCH_HOME:-$HOME/.cache/plinth-bench}"
export BENCH_DATA="${BENCH_DATA:-$BENCH_HOME/data}"
OUT="${OUT_DIR:-$BENCH_HOME/out}"
mkdir -p "$OUT"
cargo build --release -p plinth

export TARGET_NAME=plinth
export TARGET_CMD='bench/serve_bench_model.sh "$BENCH_DATA/serving/model.onnx" 127.0.0.1:8200'
export TARGET_READY_URL=http://127.0.0.1:8200/v2/models/bench.lgbm/ready
export TARGET_URL=http://127.0.0.1:8200/v2/models/bench.lgbm/infer
PERF_ANALYZER=0 "$PEERS_DIR/serving/run_serving.sh" target ${SERVING_PEERS:-inproc fastapi mlserver kserve}

start_plinth() {
  taskset -c 1 bench/serve_bench_model.sh "$BENCH_DATA/serving/model.onnx" 127.0.0.1:8200 >"$OUT/plinth-bench-server.log" 2>&1 &
  until curl -sf "$TARGET_READY_URL" >/dev/null; do sleep 0.1; done
}
stop_plinth() {
  pkill -f "plinth serve --listen 127.0.0.1:8200" || true
  sleep 1
}

start_plinth
"$PEERS_DIR/serving/perf_analyzer.sh" plinth 127.0.0.1:8200 bench.lgbm | tee -a "$OUT/serving.jsonl" || true
bench/perf_analyzer_default.sh 127.0.0.1:8200 bench.lgbm | tee -a "$OUT/serving.jsonl" || true
stop_plinth

bench/startup.sh "$BENCH_DATA/serving/model.onnx" 5 | tee -a "$OUT/serving.jsonl"

# Memory over a sustained run at load: RSS sampled every 10 s.
start_plinth
# The newest match: a server of the start-up runs may still be exiting.
pid=$(pgrep -n -f "plinth serve --listen 127.0.0.1:8200")
WRK_BODY="$BENCH_DATA/serving/bodies/v2_single.json" taskset -c 0 wrk -t1 -c32 -d"${SOAK_SECONDS:-300}s" \
  -s "$PEERS_DIR/lib/wrk_post.lua" "$TARGET_URL" >"$OUT/plinth-soak-wrk.json" 2>&1 &
wrk_pid=$!
samples=()
while kill -0 "$wrk_pid" 2>/dev/null; do
  samples+=("$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)")
  sleep 10
done
echo "{\"bench\":\"serving\",\"peer\":\"plinth\",\"case\":\"soak\",\"rss_kb_samples\":[$(IFS=,; echo "${samples[*]}")],\"wrk\":$(tail -n 1 "$OUT/plinth-soak-wrk.json")}" | tee -a "$OUT/serving.jsonl"
stop_plinth
