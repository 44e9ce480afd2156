#!/usr/bin/env bash
# Plinth's gbdt trainer against LightGBM, XGBoost (hist) and scikit-learn's
# HistGradientBoosting, side by side in one run (docs/BENCHMARKS.md):
# ../shared/bench/peers/training/run_training.sh with `plinth fit` as its target (800k x 20
# train, 200k test, 100 trees; each library's defaults, Plinth's are LightGBM's). The harness
# times Plinth's whole process (Parquet reads, binning, training, writing the model, predicting
# the test set through the serving evaluator) and computes the test AUC from its predictions.
# Then peak RSS, each alone under /usr/bin/time: the harness's Python process training only
# LightGBM (it loads the same Parquet with pandas first), and `plinth fit`.
# usage: bench/training.sh        (env: PEERS_DIR, BENCH_HOME)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source bench/lib.sh
fit="'$bin' fit --data \"\$TRAIN_PARQUET\" --label y --param objective=binary --out \"\$BENCH_HOME/plinth_model.txt\" --predict \"\$TEST_PARQUET\" --predictions \"\$PRED_OUT\""
export TARGET_NAME=plinth TARGET_TRAIN_CMD="$fit"
"$PEERS_DIR/training/run_training.sh"
data="$BENCH_HOME/data/training"
echo "peak RSS (KiB), each alone:"
TRAIN_PEERS=lightgbm /usr/bin/time -f "lightgbm (python, data loaded with pandas) %M KiB, %e s" \
  "$PEERS_DIR/training/run_training.sh" >/dev/null
/usr/bin/time -f "plinth fit %M KiB, %e s" "$bin" fit --data "$data/train.parquet" --label y \
  --param objective=binary --out "$BENCH_HOME/plinth_model.txt" 2>&1 | tail -1
