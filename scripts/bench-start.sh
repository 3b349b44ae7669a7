#!/usr/bin/env bash
# Start-to-exit of a trivial command: paddock's namespace backend against bubblewrap and bare
# unshare, in one hyperfine run (the image must already be built). Writes a markdown table to
# target/bench-start.md. Usage: scripts/bench-start.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null
command -v bwrap >/dev/null || apt-get install -y -q bubblewrap >/dev/null
cargo build --release -q --workspace --bins
ws=$(mktemp -d /var/tmp/paddock-bench-XXXXXX)
trap 'rm -rf "$ws"' EXIT
P="$PWD/target/release/paddock"
"$P" run --rm -w "$ws" --backend ns -- true  # builds the default image if missing
hyperfine -N --warmup 10 --runs "$runs" --export-markdown target/bench-start.md \
    -n "paddock run --backend ns -- true" "$P run --rm -T -w $ws --backend ns -- true" \
    -n "bwrap --unshare-all --ro-bind / / true" "bwrap --unshare-all --ro-bind / / true" \
    -n "unshare -Urmpfn true" "unshare -Urmpfn true"
cat target/bench-start.md
