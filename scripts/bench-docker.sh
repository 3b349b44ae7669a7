#!/usr/bin/env bash
# A sandbox's own Docker Engine (`--docker`, vm backend), all figures from one run, stating the
# accelerator:
#  1. what the engine adds to a start: `paddock run --rm --backend vm [--docker] -- true`
#     (each run a fresh layer: the engine makes its state every time);
#  2. `docker run --rm IMAGE true` inside a running sandbox (through `paddock exec`, whose own
#     cost is measured beside it) against the host's own `docker run` of the same image (the
#     host's running engine, or one this script starts without bridge or netfilter rules and
#     stops). Both with `--network none`, and inside once more on the engine's bridge.
# The image is the sandbox's own busybox (no container registry is needed).
# Usage: scripts/bench-docker.sh [RUNS]  (as root; writes target/bench-docker.md)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null
command -v dockerd >/dev/null || { echo "bench-docker.sh: the host has no dockerd (apt-get install docker.io)" >&2; exit 1; }
cargo build --release -q --workspace --bins
scripts/build-guest.sh target/release/paddock-guest >/dev/null 2>&1
export PADDOCK_GUEST_BINARY="$PWD/target/release/paddock-guest"
P="$PWD/target/release/paddock"
ws=$(mktemp -d /var/tmp/paddock-bench-docker-XXXXXX)
name=bench-docker-$$
host_engine=""
cleanup() {
    "$P" rm -f "$name" >/dev/null 2>&1 || true
    docker rmi -f paddock-bench-bb:1 >/dev/null 2>&1 || true
    if [ -n "$host_engine" ]; then kill "$host_engine" 2>/dev/null || true; wait "$host_engine" 2>/dev/null || true; fi
    rm -rf "$ws" "${tmp:-}"
}
trap cleanup EXIT
# Builds the images (default-docker, its VM files) when missing, outside the timings.
"$P" run --rm -T -w "$ws" --backend vm --docker -- true 2>/dev/null
accel=$("$P" doctor --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print("kvm" if any(i["name"]=="kvm" and i["ok"] for i in r["host"]) else "tcg")')
out=target/bench-docker.md
tmp=$(mktemp -d)
echo "## --docker on the vm backend ($accel), $(nproc) cores, $(date -u +%F)" >"$out"
echo >>"$out"
hyperfine -N --warmup 1 --runs "$runs" --export-markdown "$tmp/start.md" \
    -n "run --backend vm -- true" "$P run --rm -T -w $ws --backend vm -- true" \
    -n "run --backend vm --docker -- true" "$P run --rm -T -w $ws --backend vm --docker -- true" >/dev/null
cat "$tmp/start.md" >>"$out"

# The same busybox image in the sandbox's engine and the host's.
"$P" create --name "$name" -w "$ws" --backend vm --docker >/dev/null
"$P" start "$name" >/dev/null
"$P" exec "$name" -- sh -c 'rm -rf /tmp/bb && mkdir -p /tmp/bb/bin && cp /bin/busybox /tmp/bb/bin/ && for a in $(busybox --list); do [ $a = busybox ] || ln -s busybox /tmp/bb/bin/$a; done && tar -C /tmp/bb -cf '"$ws"'/bb.tar . && docker import '"$ws"'/bb.tar paddock-bench-bb:1 >/dev/null'
if ! docker info >/dev/null 2>&1; then
    hd=$tmp/host-docker
    mkdir -p "$hd"
    dockerd --data-root="$hd/data" --exec-root="$hd/exec" --pidfile="$hd/pid" --iptables=false --ip-forward=false --bridge=none >"$hd/log" 2>&1 &
    host_engine=$!
    for _ in $(seq 300); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
fi
docker import "$ws/bb.tar" paddock-bench-bb:1 >/dev/null
echo >>"$out"
hyperfine -N --warmup 1 --runs "$runs" --export-markdown "$tmp/run.md" \
    -n "host: docker run --rm --network none IMAGE true" "docker run --rm --network none paddock-bench-bb:1 true" \
    -n "sandbox: paddock exec -- docker run --rm --network none IMAGE true" "$P exec $name -- docker run --rm --network none paddock-bench-bb:1 true" \
    -n "sandbox: paddock exec -- docker run --rm IMAGE true (bridge)" "$P exec $name -- docker run --rm paddock-bench-bb:1 true" \
    -n "sandbox: paddock exec -- true" "$P exec $name -- true" >/dev/null
cat "$tmp/run.md" >>"$out"
cat "$out"
