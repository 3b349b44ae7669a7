#!/usr/bin/env bash
# Runs every benchmark script once, in a quick mode (few runs, small inputs), so that a script
# that no longer works fails CI instead of rotting until someone needs its figures. The figures
# of a quick run mean nothing; the scripts' own usage lines give the real commands.
# Usage: scripts/bench-quick.sh   (as root, after ./setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
failed=()
quick() {
    local name=$1
    shift
    printf '\n--- %s (%s)\n' "$name" "$*"
    local started=$SECONDS
    if "$@" >"target/bench-quick-$name.log" 2>&1; then
        echo "ok in $((SECONDS - started)) s"
    else
        echo "FAILED after $((SECONDS - started)) s; its last lines:"
        tail -n 20 "target/bench-quick-$name.log"
        failed+=("$name")
    fi
}
mkdir -p target
quick start scripts/bench-start.sh 3
quick interleaved python3 scripts/bench-interleaved.py 2 "true=true" "sh=sh -c true"
quick exec scripts/bench-exec.sh 3
quick memory scripts/bench-memory.sh 1
quick user scripts/bench-user.sh 3 1
quick gvisor scripts/bench-gvisor.sh 3 500
quick vm scripts/bench-vm.sh 1
quick docker scripts/bench-docker.sh 1
quick proxy scripts/bench-proxy.sh --requests 200 --warmup 20 --rounds 1 --runs 1 --bytes 16777216
quick credentials scripts/bench-credentials.sh --requests 40 --bytes 4194304
quick review scripts/bench-review.sh 2 2000
if [ "${#failed[@]}" -gt 0 ]; then
    echo "bench-quick.sh: these benchmark scripts no longer work: ${failed[*]}" >&2
    exit 1
fi
echo "bench-quick.sh: every benchmark script ran"
