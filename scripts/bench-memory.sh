#!/usr/bin/env bash
# Host memory per idle sandbox on the ns backend: starts N idle sandboxes (`run -d`, the proxy
# on) with each paddock build given, and reports the proportional set size (Pss: shared pages
# split among the processes that map them) of each sandbox's host-side processes: the supervisor
# and its direct children (the egress proxy's process, the jail's outer process). The sandbox's
# own processes are not counted. Also their anonymous memory: what is each sandbox's own
# whatever else runs (Pss also splits the program's pages among its copies). Writes a markdown table to target/bench-memory.md.
# Usage: scripts/bench-memory.sh [N] [PADDOCK...]   (default: this tree's release build)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5}
shift || true
if [ $# -eq 0 ]; then
    cargo build --release -q --workspace --bins
    set -- "$PWD/target/release/paddock"
fi
ws=$(mktemp -d /var/tmp/paddock-bench-XXXXXX)
names=()
cleanup() {
    for name in "${names[@]}"; do "$P" rm -f "$name" >/dev/null 2>&1 || true; done
    rm -rf "$ws"
}
trap cleanup EXIT
field() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
kib() { awk -v k="$1" -v n="$n" 'BEGIN { printf "%.2f", k / n / 1024 }'; }
out=target/bench-memory.md
mkdir -p target
{
    echo "| build | sandboxes | Pss: supervisor MiB | Pss: its other host processes MiB | Pss: total MiB per sandbox | anonymous: total MiB per sandbox |"
    echo "|---|---|---|---|---|---|"
} >"$out"
# A program written moments ago has dirty pages in the page cache until they are written
# back, which smaps counts as the process's own: write them back first.
sync
for P in "$@"; do
    "$P" run --rm -w "$ws" --backend ns -- true >/dev/null 2>&1 # builds the default image if missing
    names=()
    for i in $(seq 1 "$n"); do
        name="benchmem-$$-$i"
        names+=("$name")
        "$P" run -d -w "$ws" --backend ns --name "$name" >/dev/null 2>&1
    done
    sleep 2 # settled: every proxy serving, nothing starting
    sup=0
    rest=0
    own=0
    for name in "${names[@]}"; do
        pid=$("$P" inspect --json "$name" | python3 -c 'import json,sys; print(json.load(sys.stdin)["supervisor_pid"])')
        sup=$((sup + $(field "$pid" Pss)))
        own=$((own + $(field "$pid" Anonymous)))
        for child in $(cat /proc/"$pid"/task/*/children); do
            rest=$((rest + $(field "$child" Pss)))
            own=$((own + $(field "$child" Anonymous)))
        done
    done
    echo "| \`$P\` | $n | $(kib $sup) | $(kib $rest) | $(kib $((sup + rest))) | $(kib $own) |" >>"$out"
    for name in "${names[@]}"; do "$P" rm -f "$name" >/dev/null; done
    names=()
done
cat "$out"
