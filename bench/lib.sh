# Sourced by the bench scripts (from the repository root): where the peer harnesses and their
# data are, and a release build of Plinth in $bin.
PEERS_DIR="${PEERS_DIR:-../shared/bench/peers}"
export BENCH_HOME="${BENCH_HOME:-$HOME/.cache/plinth-bench}"
cargo build --release -p plinth
bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/plinth"
