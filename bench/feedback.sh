#!/usr/bin/env bash
# Feedback ingest: labels a second into one Plinth process on one core.
#
#   usage: bench/feedback.sh [PLINTH_BINARY]     (default: the release build)
#
# A fresh server on CPU 1 (SQLite, embedded defaults) with the harness's serving model deployed
# keeping its predictions (bench/serve_bench_model.sh, KEEP_PREDICTIONS=1); ROWS rows (default
# 100,000) predicted in requests of 1,000, half
# of them under caller-chosen prediction ids; once the captured predictions are written (the
# figures loop, every 5 s), their labels are posted from CPU 0 in requests of 10,000, in
# shuffled order: first all new, then the same again (unchanged), then half of them changed.
# Prints one JSON line per pass: labels, seconds, labels/s. Bodies are built before the clock
# starts; the clock covers the HTTP requests only.
set -euo pipefail
cd "$(dirname "$0")/.."
BODY=single
# shellcheck source=bench/serving_setup.sh
source bench/serving_setup.sh "$@"
trap stop EXIT
BENCH_KEY="$("${BINS[0]}" key generate)"
start_server "${BINS[0]}" PLINTH_BUSY_POLL_US=0 BENCH_KEY="$BENCH_KEY" KEEP_PREDICTIONS=1
BENCH_KEY="$BENCH_KEY" taskset -c 0 python3 - "$LISTEN" "${ROWS:-100000}" <<'PY'
import json, os, random, sys, time, urllib.request

listen, rows = sys.argv[1], int(sys.argv[2])
base = f"http://{listen}/api/v1/deployments/bench/lgbm/production"
auth = {"authorization": "Bearer " + os.environ["BENCH_KEY"]}

def post(path, body):
    req = urllib.request.Request(base + path, data=body, headers={"content-type": "application/json", **auth})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())

# The harness's model's features, from its one-row body.
single = json.load(open(os.environ["WRK_BODY"]))
x = single["inputs"][0]["data"]
width = len(x)
rng = random.Random(7)
keys = []
for start in range(0, rows, 1000):
    n = min(1000, rows - start)
    batch = [[v + rng.random() for v in x[:width]] for _ in range(n)]
    body = {"rows": batch}
    named = (start // 1000) % 2 == 0
    if named:
        body["ids"] = [f"p{start + i}" for i in range(n)]
    answer = post("/predict", json.dumps(body).encode())
    for i in range(n):
        keys.append({"prediction_id": f"p{start + i}"} if named else {"request_id": answer["request_id"], "row": i})

# Wait until every prediction is captured (written every 5 s).
deadline = time.time() + 60
while True:
    with urllib.request.urlopen(urllib.request.Request(base + "/performance", headers=auth)) as r:
        p = json.loads(r.read())
    if p["versions"] and p["versions"][0]["predictions"] >= rows:
        break
    if time.time() > deadline:
        sys.exit(f"only {p} captured")
    time.sleep(0.5)

order = list(range(rows))
rng.shuffle(order)
def bodies(label_of):
    out = []
    for s in range(0, rows, 10_000):
        out.append(json.dumps({"labels": [dict(keys[i], label=label_of(i)) for i in order[s:s + 10_000]]}).encode())
    return out

for name, label_of in [("new", lambda i: i % 2), ("unchanged", lambda i: i % 2), ("half changed", lambda i: (i % 2) ^ (i % 4 == 0))]:
    prepared = bodies(label_of)
    t = time.perf_counter()
    total = {"added": 0, "replaced": 0, "unchanged": 0}
    for b in prepared:
        r = post("/feedback", b)
        for k in total:
            total[k] += r[k]
    s = time.perf_counter() - t
    print(json.dumps({"bench": "feedback", "pass": name, "labels": rows, "seconds": round(s, 3),
                      "labels_per_s": round(rows / s), **total}))
PY
