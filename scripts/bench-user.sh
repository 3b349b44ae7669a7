#!/usr/bin/env bash
# User mode against root mode and the bare tools, in one run: start-to-exit of
# `paddock run --rm -- true` on the ns backend as an ordinary user and as root, against
# `bwrap --unshare-all` and `unshare -Ur` as that user (hyperfine, every command behind the
# same `setpriv`), the gvisor backend as that user against bare `runsc --rootless do`, then the host memory per idle sandbox (Pss and anonymous memory of the
# supervisor and its direct children, as scripts/bench-memory.sh) in both modes. Writes
# target/bench-user.md.
# Usage: scripts/bench-user.sh [RUNS] [IDLE]   (as root; the ordinary user is
# $PADDOCK_BENCH_USER, default paddock-suite, made and prepared with `paddock system setup` if
# needed; its image is built on first use)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
idle=${2:-3}
user=${PADDOCK_BENCH_USER:-paddock-suite}
for tool in hyperfine bwrap unshare setpriv python3; do
    command -v "$tool" >/dev/null || { echo "bench-user.sh: $tool is missing" >&2; exit 1; }
done
cargo build --release -q --workspace --bins
P="$PWD/target/release/paddock"
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/sh "$user"
"$P" system setup --user "$user" >/dev/null
home=$(getent passwd "$user" | cut -d: -f6)
as_user="setpriv --reuid=$(id -u "$user") --regid=$(id -g "$user") --clear-groups --reset-env"
as_root="setpriv --reset-env"
uws=$($as_user mktemp -d "$home/paddock-bench-XXXXXX")
rws=$(mktemp -d /var/tmp/paddock-bench-XXXXXX)
names=()
cleanup() {
    for entry in "${names[@]}"; do
        local who=${entry%%:*} name=${entry#*:}
        if [ "$who" = user ]; then $as_user "$P" rm -f "$name" >/dev/null 2>&1 || true
        else $as_root "$P" rm -f "$name" >/dev/null 2>&1 || true; fi
    done
    rm -rf "$uws" "$rws"
}
trap cleanup EXIT
# First runs: each mode's image (the user's is built as the user, about two minutes).
$as_user "$P" run --rm -w "$uws" --backend ns -- true
$as_root "$P" run --rm -w "$rws" --backend ns -- true
mkdir -p target
hyperfine -N --warmup 5 --runs "$runs" --export-markdown target/bench-user-start.md \
    -n "user: paddock run --rm -- true" "$as_user $P run --rm -T -w $uws --backend ns -- true" \
    -n "root: paddock run --rm -- true" "$as_root $P run --rm -T -w $rws --backend ns -- true" \
    -n "user: bwrap --unshare-all --ro-bind / / true" "$as_user bwrap --unshare-all --ro-bind / / true" \
    -n "user: unshare -Ur true" "$as_user unshare -Ur true"
# gVisor as the user: Paddock's gvisor backend against bare rootless runsc.
runsc=$(command -v runsc || echo /usr/sbin/runsc)
guest=${PADDOCK_GUEST_BINARY:-/usr/local/bin/paddock-guest}
runsc_root=$($as_user mktemp -d "$home/paddock-bench-runsc-XXXXXX")
uws_g=$uws
hyperfine -N --warmup 3 --runs "$(( (runs + 3) / 4 ))" --export-markdown target/bench-user-gvisor.md \
    -n "user: paddock run --rm --backend gvisor -- true" \
    "$as_user env PADDOCK_GUEST_BINARY=$guest $P run --rm -T -w $uws_g --backend gvisor -- true" \
    -n "user: runsc --rootless do true" \
    "$as_user $runsc --rootless --network=none --platform=systrap --ignore-cgroups --root=$runsc_root do true"
rm -rf "$runsc_root"

field() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" -v n="$idle" 'BEGIN { printf "%.2f", k / n / 1024 }'; }
sync
{
    echo "| mode | idle sandboxes | Pss: total MiB per sandbox | anonymous: MiB per sandbox |"
    echo "|---|---|---|---|"
} >target/bench-user-memory.md
for mode in user root; do
    if [ "$mode" = user ]; then run=$as_user ws=$uws; else run=$as_root ws=$rws; fi
    started=()
    for i in $(seq 1 "$idle"); do
        name="benchuser-$$-$mode-$i"
        names+=("$mode:$name")
        started+=("$name")
        $run "$P" run -d -w "$ws" --backend ns --name "$name" >/dev/null
    done
    sleep 2 # settled: every proxy serving, nothing starting
    pss=0
    anon=0
    for name in "${started[@]}"; do
        pid=$($run "$P" inspect --json "$name" | python3 -c 'import json,sys; print(json.load(sys.stdin)["supervisor_pid"])')
        for p in "$pid" $(cat /proc/"$pid"/task/*/children); do
            pss=$((pss + $(field "$p" Pss)))
            anon=$((anon + $(field "$p" Anonymous)))
        done
    done
    echo "| $mode | $idle | $(mib $pss) | $(mib $anon) |" >>target/bench-user-memory.md
    for name in "${started[@]}"; do $run "$P" rm -f "$name" >/dev/null; done
done
cat target/bench-user-start.md target/bench-user-gvisor.md target/bench-user-memory.md >target/bench-user.md
cat target/bench-user.md
