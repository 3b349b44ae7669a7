#!/usr/bin/env bash
# One more command in a running sandbox: `paddock exec NAME -- true` on each backend this host
# runs, against `docker exec` of the same image's tree (Docker Engine from Debian's packages;
# the container image is imported from Paddock's default image, so no registry is involved), and
# the same command through the HTTP API (`paddock serve`, curl on its unix socket). One hyperfine
# run; before it, the API's round trip from inside one client against Docker Engine's API and
# the host's own start of `true` (scripts/bench-api-exec.py, 10 x RUNS rounds each). Writes
# target/bench-exec.md.
# Usage: scripts/bench-exec.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null
command -v dockerd >/dev/null || apt-get install -y -q docker.io >/dev/null
cargo build --release -q --workspace --bins
guest=target/bench-guest
scripts/build-guest.sh "$guest" >/dev/null 2>&1
export PADDOCK_GUEST_BINARY=$PWD/$guest
P="$PWD/target/release/paddock"
ws=$(mktemp -d /var/tmp/paddock-bench-XXXXXX)
names=()
cleanup() {
    for n in "${names[@]}"; do "$P" rm -f "$n" >/dev/null 2>&1 || true; done
    docker rm -f paddock-bench-exec >/dev/null 2>&1 || true
    [ -n "${serve_pid:-}" ] && kill "$serve_pid" 2>/dev/null || true
    [ -n "${dockerd_pid:-}" ] && kill "$dockerd_pid" 2>/dev/null || true
    rm -rf "$ws"
}
trap cleanup EXIT
"$P" run --rm -T -w "$ws" --backend ns -- true  # builds the default image if missing
rootfs=${PADDOCK_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/paddock}/images/default/rootfs

args=()
for b in ns gvisor vm; do
    if "$P" doctor --json | python3 -c "import json,sys; sys.exit(0 if any(x['backend']=='$b' and x['usable'] for x in json.load(sys.stdin)['backends']) else 1)"; then
        n=bench-exec-$b
        "$P" rm -f "$n" >/dev/null 2>&1 || true
        "$P" run -d -w "$ws" --backend "$b" --name "$n" >/dev/null
        names+=("$n")
        args+=(-n "paddock exec ($b) -- true" "$P exec $n -- true")
    fi
done
# The API: one server, each exec a POST over its unix socket.
sock=$ws/api.sock
"$P" serve --socket "$sock" >"$ws/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { cat "$ws/serve.log" >&2; exit 1; }
api_exec="curl -sSf --unix-socket $sock -H content-type:application/json --data-binary '{\"command\":[\"true\"]}' http://x/v1/sandboxes/bench-exec-ns/exec"
eval "$api_exec" | grep -q '"exit_code":0' || { echo "the API's exec failed" >&2; exit 1; }
args+=(-n "API exec (ns): curl POST …/exec [true]" "$api_exec")
# The round trips through each API, timed from inside one client (scripts/bench-api-exec.py):
# the host's own start of `true` (the floor) and Paddock's, before Docker's daemon runs; then
# Docker's, with only Docker's running. Each tool is timed with its own daemons only: Docker's
# work goes on after each exec (containerd and its shim clean up), and the other's rounds paid
# for it when they ran in turn (Paddock's median 1.75 ms alone against 2.06-2.26 ms
# alternating with Docker's, 2026-12-03).
medians=target/bench-api-exec.medians
rm -f "$medians"
python3 scripts/bench-api-exec.py $((runs * 10)) --header --floor --paddock "$sock" bench-exec-ns \
    --medians "$medians" >target/bench-api-exec.md
# Docker: the engine is started here when it is not running (no systemd on this kind of host).
if ! docker info >/dev/null 2>&1; then
    dockerd >/tmp/paddock-bench-dockerd.log 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
fi
if ! docker image inspect paddock-bench:latest >/dev/null 2>&1; then
    tar -C "$rootfs" -c . | docker import - paddock-bench:latest >/dev/null
fi
docker rm -f paddock-bench-exec >/dev/null 2>&1 || true
docker run -d --name paddock-bench-exec --network none paddock-bench:latest sleep infinity >/dev/null
docker_sock=$(docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null || true)
docker_sock=${docker_sock#unix://}
[ -S "$docker_sock" ] || docker_sock=/var/run/docker.sock

python3 scripts/bench-api-exec.py $((runs * 10)) --docker "$docker_sock" paddock-bench-exec \
    --medians "$medians" >>target/bench-api-exec.md
python3 - "$medians" >>target/bench-api-exec.md <<'PY'
import sys
m = dict((k, float(v)) for k, v in (line.split() for line in open(sys.argv[1])))
print(f"\nPaddock's median / the floor's: {m['paddock'] / m['floor']:.2f}x; "
      f"Docker Engine's / Paddock's: {m['docker'] / m['paddock']:.1f}x")
PY
args+=(-n "docker exec (runc) -- true" "docker exec paddock-bench-exec true")
hyperfine -N --warmup 5 --runs "$runs" --export-markdown target/bench-exec.md "${args[@]}"
{
    echo
    cat target/bench-api-exec.md
} >>target/bench-exec.md
cat target/bench-exec.md
