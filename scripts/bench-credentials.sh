#!/usr/bin/env bash
# Credential injection: HTTPS requests through Paddock's intercepting proxy against its opaque
# tunnel, a direct connection and mitmproxy (from PyPI, in target/bench-venv) doing the same
# header injection with the same upstream verification, in one run of
# crates/proxy/benches/intercept.rs. Everything stays on 127.0.0.1.
# Writes the markdown table to target/bench-credentials.md.
# Usage: scripts/bench-credentials.sh [BENCH ARGS...]   e.g. --requests 5000
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/paddock-bench-cred-XXXXXX)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

if [ ! -x target/bench-venv/bin/mitmdump ]; then
    echo "installing mitmproxy into target/bench-venv (pip, about 30 s)" >&2
    python3 -m venv target/bench-venv
    target/bench-venv/bin/pip install -q mitmproxy
fi
cargo bench -q -p paddock-proxy --bench intercept --no-run

# The upstream's certificate, made now so that mitmproxy can be told to trust its CA.
python3 - "$work/tls" <<'PY'
import subprocess, sys, os
d = sys.argv[1]; os.makedirs(d)
run = lambda *a: subprocess.run(a, check=True, capture_output=True)
run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "2", "-subj", "/CN=bench CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr", "-subj", "/CN=localhost")
open(f"{d}/ext", "w").write("subjectAltName=DNS:localhost\n")
run("openssl", "x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
    "-CAcreateserial", "-out", f"{d}/server.pem", "-days", "2", "-extfile", f"{d}/ext")
PY

# mitmproxy: the same header on requests to the upstream, the upstream verified against its CA.
cat >"$work/inject.py" <<'PY'
def request(flow):
    if flow.request.host == "localhost":
        flow.request.headers["x-api-key"] = "bench-secret-value"
PY
port=$((20000 + RANDOM % 40000))
up=$((20000 + RANDOM % 40000))
target/bench-venv/bin/mitmdump -q --listen-host 127.0.0.1 --listen-port "$port" \
    --set confdir="$work/mitm" --set ssl_verify_upstream_trusted_ca="$work/tls/ca.pem" \
    --set connection_strategy=lazy -s "$work/inject.py" >"$work/mitm.log" 2>&1 &
pid=$!
for _ in $(seq 200); do
    [ -f "$work/mitm/mitmproxy-ca-cert.pem" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/mitm.log" >&2; exit 1; }
    sleep 0.1
done
# All of it read (sed, not head): mitmdump dies of a broken pipe when its reader leaves early.
mitm_version=$(target/bench-venv/bin/mitmdump --version | sed -n 1p)
cargo bench -q -p paddock-proxy --bench intercept -- --tls-dir "$work/tls" --upstream-port "$up" \
    --peer "${mitm_version// /}=127.0.0.1:$port=$work/mitm/mitmproxy-ca-cert.pem" "$@" |
    tee target/bench-credentials.md
