#!/usr/bin/env bash
# The trainer's memory bound on 10 million rows (docs/training.md §Memory, docs/BENCHMARKS.md):
# generates 10M x 20 float32 rows (sklearn's make_classification in 1M-row chunks, written as
# one Parquet file of 1M-row row groups, ~0.8 GB), then trains 20 trees with `plinth fit` under
# /usr/bin/time and compares its peak RSS with the stated bound:
# rows x (features + 36) bytes (binary: bins, label, score, gradient and hessian, the row
# index, the partition's scratch, a leaf's gathered gradients) + the bin sample (200k x 20 x
# 16 bytes) + one batch of the file.
# usage: bench/training_memory.sh [rows]        (env: PEERS_DIR, BENCH_HOME)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source bench/lib.sh
rows="${1:-10000000}"
py="$BENCH_HOME/venvs/core/bin/python"
file="$BENCH_HOME/data/training/big_${rows}.parquet"
if [ ! -f "$file" ]; then
  "$py" - "$rows" "$file" <<'PY'
import sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
from sklearn.datasets import make_classification
rows, path = int(sys.argv[1]), sys.argv[2]
writer = None
for i in range(0, rows, 1_000_000):
    n = min(1_000_000, rows - i)
    x, y = make_classification(n_samples=n, n_features=20, n_informative=12, n_redundant=4, random_state=i)
    cols = {f"f{j}": x[:, j].astype(np.float32) for j in range(20)}
    cols["y"] = y.astype(np.int8)
    t = pa.table(cols)
    writer = writer or pq.ParquetWriter(path, t.schema)
    writer.write_table(t)
writer.close()
PY
fi
bound=$(( rows * (20 + 36) / 1024 + 200000 * 20 * 16 / 1024 ))
echo "rows $rows; stated bound without the batch: $bound KiB"
/usr/bin/time -f "plinth fit: peak RSS %M KiB, %e s wall, %U s user" "$bin" fit --data "$file" --label y \
  --param objective=binary --param num_iterations=20 --out "$BENCH_HOME/plinth_big_model.txt" 2>&1 | tail -3
