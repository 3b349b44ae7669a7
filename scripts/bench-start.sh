#!/usr/bin/env bash
# Start-to-exit of a trivial command: paddock's namespace backend against bubblewrap and bare
# unshare, in one hyperfine run (the image must already be built). Writes a markdown table to
# target/bench-start.md. Usage: scripts/bench-start.sh [RUNS] [busy]
# With `busy`, a loop writing 32 MiB files with fsync (dd, in /var/tmp) keeps the disk busy
# during the run, as a build next to the agent would.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
busy=${2:-}
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null
command -v bwrap >/dev/null || apt-get install -y -q bubblewrap >/dev/null
cargo build --release -q --workspace --bins
ws=$(mktemp -d /var/tmp/paddock-bench-XXXXXX)
load=
trap 'rm -rf "$ws"; [ -z "$load" ] || kill "$load" 2>/dev/null; rm -f "$ws.load"' EXIT
P="$PWD/target/release/paddock"
"$P" run --rm -w "$ws" --backend ns -- true  # builds the default image if missing
if [ "$busy" = busy ]; then
    (while :; do dd if=/dev/zero of="$ws.load" bs=1M count=32 conv=fsync 2>/dev/null; done) &
    load=$!
    sleep 2
fi
hyperfine -N --warmup 10 --runs "$runs" --export-markdown target/bench-start.md \
    -n "paddock run --backend ns -- true" "$P run --rm -T -w $ws --backend ns -- true" \
    -n "bwrap --unshare-all --ro-bind / / true" "bwrap --unshare-all --ro-bind / / true" \
    -n "unshare -Urmpfn true" "unshare -Urmpfn true"
cat target/bench-start.md
