#!/usr/bin/env bash
# Egress proxy: added latency of a keep-alive plain-HTTP GET and CONNECT tunnel throughput,
# paddock's proxy against a direct connection, tinyproxy and squid, in one run of
# crates/proxy/benches/egress.rs. Installs tinyproxy and squid when missing, runs each in the
# foreground on a free loopback port with an allow-list equivalent to paddock's (the upstream's
# host and port only, CONNECT to that port only, every request logged) and stops them on exit.
# Writes the markdown table to target/bench-proxy.md. Everything stays on 127.0.0.1.
# Usage: scripts/bench-proxy.sh [BENCH ARGS...]   e.g. --requests 20000 --bytes 2147483648
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

ws=$(mktemp -d /var/tmp/paddock-bench-proxy-XXXXXX)
chmod 755 "$ws"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$ws"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# install PACKAGE BINARY: installs PACKAGE when BINARY is missing. If this run installed it and
# the package started its system service, that service is stopped again.
install() {
    command -v "$2" >/dev/null || [ -x "/usr/sbin/$2" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "not root: cannot install $1" >&2
        return 1
    fi
    apt-get install -y -q "$1" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q "$1" >/dev/null; } || return 1
    invoke-rc.d "$1" stop >/dev/null 2>&1 || true
}

# free_port: sets PORT to a loopback TCP port nothing uses and this run has not handed out.
taken=" "
free_port() {
    while :; do
        PORT=$((20000 + RANDOM % 40000))
        case "$taken" in *" $PORT "*) continue ;; esac
        ss -Htan "( sport = :$PORT )" | grep -q . && continue
        taken="$taken$PORT "
        return
    done
}

# wait_listen PID PORT: waits until PORT accepts, while PID lives.
wait_listen() {
    for _ in $(seq 200); do
        kill -0 "$1" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# own DIR USER: lets a proxy that drops privileges to USER write in DIR.
own() {
    if [ "$(id -u)" = 0 ] && id "$2" >/dev/null 2>&1; then chown "$2:" "$1"; fi
}

# Build first, so that the proxies are not started long before they are measured.
cargo bench -q -p paddock-proxy --bench egress --no-run

free_port
up=$PORT
args=(--upstream-port "$up")

# tinyproxy: resolves names only through the system resolver (/etc/hosts, DNS), which this
# script does not touch, so it is asked for 127.0.0.1 itself. The filter matches whole URLs:
# http://127.0.0.1:UP/... for plain HTTP and 127.0.0.1:UP for CONNECT, nothing else.
start_tinyproxy() {
    install tinyproxy tinyproxy || { why="apt-get install tinyproxy failed"; return 1; }
    local d="$ws/tinyproxy" user=""
    mkdir "$d" && own "$d" tinyproxy
    if [ "$(id -u)" = 0 ] && id tinyproxy >/dev/null 2>&1; then
        user=$'User tinyproxy\nGroup tinyproxy'
    fi
    free_port
    local port=$PORT
    printf '%s\n' "^http://127\\.0\\.0\\.1:$up/" "^127\\.0\\.0\\.1:$up\$" >"$d/filter"
    cat >"$d/tinyproxy.conf" <<EOF
$user
Port $port
Listen 127.0.0.1
Timeout 600
MaxClients 100
LogFile "$d/tinyproxy.log"
LogLevel Connect
PidFile "$d/tinyproxy.pid"
Allow 127.0.0.1
ConnectPort $up
FilterDefaultDeny Yes
FilterType ere
FilterURLs On
Filter "$d/filter"
EOF
    tinyproxy -d -c "$d/tinyproxy.conf" >"$d/out.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    if ! wait_listen "$pid" "$port"; then
        why="did not accept on 127.0.0.1:$port: $(tail -qn 3 "$d/out.log" "$d/tinyproxy.log" 2>/dev/null | tr '\n' ' ')"
        return 1
    fi
    args+=(--peer "tinyproxy=127.0.0.1:$port/127.0.0.1")
}

# squid: asked for bench.test, which a hosts file of its own (hosts_file) maps to 127.0.0.1;
# dstdomain -n so that 127.0.0.1 is not let in by a reverse lookup of that file. Other names
# are refused before any lookup; DNS, were it asked, would go to 127.0.0.1 only.
start_squid() {
    install squid squid || { why="apt-get install squid failed"; return 1; }
    local d="$ws/squid" bin
    bin=$(command -v squid || echo /usr/sbin/squid)
    mkdir "$d" && own "$d" proxy
    free_port
    local port=$PORT
    printf '127.0.0.1 bench.test\n' >"$d/hosts"
    cat >"$d/squid.conf" <<EOF
http_port 127.0.0.1:$port
pid_filename $d/squid.pid
cache_log $d/cache.log
access_log stdio:$d/access.log squid
cache_store_log none
coredump_dir $d
cache deny all
cache_mem 0 MB
pinger_enable off
hosts_file $d/hosts
dns_nameservers 127.0.0.1
shutdown_lifetime 0 seconds
acl bench_host dstdomain -n bench.test
acl bench_port port $up
http_access allow bench_host bench_port
http_access deny all
EOF
    "$bin" -N -f "$d/squid.conf" >"$d/out.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    if ! wait_listen "$pid" "$port"; then
        why="did not accept on 127.0.0.1:$port: $(tail -qn 3 "$d/out.log" "$d/cache.log" 2>/dev/null | tr '\n' ' ')"
        return 1
    fi
    args+=(--peer "squid=127.0.0.1:$port")
}

# Each start_* function adds a --peer, or sets why and fails.
for p in tinyproxy squid; do
    why=""
    if ! "start_$p"; then
        echo "$p: not measured: $why" >&2
        args+=(--skip "$p=$why")
    fi
done

cargo bench -q -p paddock-proxy --bench egress -- "${args[@]}" "$@" | tee target/bench-proxy.md
