//! Credentials injected by the proxy, for real: local HTTPS upstreams that echo what they
//! receive, a secret bound to one of them, real clients inside real sandboxes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{PyServer, stderr, stdout, unique};

const SECRET: &str = "real-secret-4f7c2a9e";
const NAMES: &[&str] = &["api.echo.test", "other.echo.test", "bad.echo.test"];

/// Answers every GET with the request head it received (`/redirect` sends a 307 to
/// other.echo.test on the same port; `/hold` answers only once `/release` has arrived, or after
/// 20 s).
const ECHO: &str = r#"
import http.server, ssl, sys, os, threading
port_file, cert, key = sys.argv[1:4]
released = threading.Event()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def short(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/hold":
            return self.short(b"hold: released\n" if released.wait(20) else b"hold: timed out\n")
        if self.path == "/release":
            released.set()
            return self.short(b"release: done\n")
        if self.path == "/redirect":
            self.send_response(307)
            self.send_header("Location", "https://other.echo.test:%d/after-redirect" % self.server.server_address[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = ("%s %s\n%s" % (self.command, self.path, self.headers)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
if cert != "-":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
open(port_file + ".tmp", "w").write(str(srv.server_address[1]))
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
"#;

fn echo(tls: Option<(&Path, &Path)>) -> PyServer {
    let (cert, key) = tls.unwrap_or((Path::new("-"), Path::new("-")));
    common::py_server(ECHO, &[cert.as_os_str(), key.as_os_str()])
}

/// A CA (written to `dir/NAME-ca/ca.pem`) and a server certificate for the test names.
fn tls_files(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    common::test_certificates(dir, name, NAMES)
}

fn secret(args: &[&str]) {
    let mut child = common::paddock()
        .args(["secret"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{SECRET}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "secret {args:?}: {out:?}");
}

on_every_backend!(the_secret_reaches_its_host_only);

fn the_secret_reaches_its_host_only(backend: &str) {
    common::ensure_image();
    let dir = tempfile::Builder::new()
        .prefix("paddock-cred-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (ca, cert, key) = tls_files(dir.path(), "good");
    let (_, bad_cert, bad_key) = tls_files(dir.path(), "untrusted");
    common::hand_over(dir.path());
    let good = echo(Some((&cert, &key)));
    let bad = echo(Some((&bad_cert, &bad_key)));
    let plain = echo(None);
    let name = unique("cred");
    let (gp, bp, pp) = (good.port, bad.port, plain.port);
    // The secret, bound to api.echo.test (and to bad.echo.test, whose certificate nobody trusts).
    for host in ["api.echo.test", "bad.echo.test"] {
        let sname = host.split('.').next().unwrap();
        secret(&[
            "set-custom",
            sname,
            "--host",
            host,
            "--header",
            "x-api-key",
            "--env",
            &format!("{}_KEY", sname.to_uppercase()),
            "--sandbox",
            &name,
        ]);
    }
    let ls = stdout(
        &common::paddock()
            .args(["secret", "ls", "--json"])
            .output()
            .unwrap(),
    );
    assert!(ls.contains("api.echo.test") && !ls.contains(SECRET), "{ls}");

    let (first, second) = SECRET.split_at(8);
    let script = format!(
        r#"
echo "env: $API_KEY"
echo "--- bound"; curl -sS https://api.echo.test:{gp}/bound -H "x-api-key: $API_KEY"
echo "--- other"; curl -sS --cacert /etc/paddock-test/ca.pem https://other.echo.test:{gp}/other -H "x-api-key: $API_KEY"
echo "--- host-mismatch"; curl -sS -o /dev/null -w '%{{http_code}}\n' https://api.echo.test:{gp}/mismatch -H "Host: other.echo.test:{gp}" -H "x-api-key: $API_KEY"
cat /etc/ssl/certs/ca-certificates.crt /etc/paddock-test/ca.pem > /tmp/both.pem
echo "--- redirect"; curl -sSL --cacert /tmp/both.pem https://api.echo.test:{gp}/redirect -H "x-api-key: $API_KEY" 2>&1
echo "--- plain"; curl -sS http://api.echo.test:{pp}/plain -H "x-api-key: $API_KEY"
echo "--- untrusted"; curl -sS -w '\n%{{http_code}}\n' https://bad.echo.test:{bp}/untrusted -H "x-api-key: $BAD_KEY"
echo "--- fronting"; python3 - <<'PY'
import socket, ssl
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(b"CONNECT api.echo.test:{gp} HTTP/1.1\r\nHost: api.echo.test:{gp}\r\n\r\n")
s.recv(1000)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    t = ctx.wrap_socket(s, server_hostname="other.echo.test")
    t.sendall(b"GET /fronted HTTP/1.1\r\nHost: other.echo.test:{gp}\r\n\r\n")
    print("fronting answer:", t.recv(2000).decode(errors="replace").split("\r\n")[0])
except Exception as e:
    print("fronting refused")
PY
echo "--- http2"; curl -sS --http2 -w 'version %{{http_version}}\n' https://api.echo.test:{gp}/h2 -H "x-api-key: $API_KEY"
echo "--- h2-concurrent"; curl -sS --http2 --parallel --parallel-max 2 -H "x-api-key: $API_KEY" -w '%{{url_effective}} connects=%{{num_connects}} version=%{{http_version}}\n' https://api.echo.test:{gp}/hold https://api.echo.test:{gp}/release
echo "--- absolute"; python3 - <<'PY'
import socket, ssl
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(b"CONNECT api.echo.test:{gp} HTTP/1.1\r\nHost: api.echo.test:{gp}\r\n\r\n")
s.recv(1000)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname="api.echo.test")
t.sendall(b"GET https://api.echo.test:{gp}/abs HTTP/1.1\r\nHost: other.echo.test:{gp}\r\n\r\n")
print("absolute answer:", t.recv(2000).decode(errors="replace").replace("\r\n", " | "))
PY
echo "--- python"; python3 -c 'import urllib.request; print(urllib.request.urlopen(urllib.request.Request("https://api.echo.test:{gp}/py", headers={{"x-api-key": "x"}})).read().decode())'
echo "--- search"; python3 - <<'PY'
import glob, os
# The value in two halves, so that this script itself does not carry it.
needle = ("{first}" + "{second}").encode()
for p in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        if needle in open(p, "rb").read(): print("FOUND-IN", p)
    except OSError: pass
for top in ["/etc", "/home", "/root", "/tmp", "/run", "/var", "/usr/local", os.getcwd()]:
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            try:
                if os.path.isfile(p) and not os.path.islink(p) and needle in open(p, "rb").read(): print("FOUND-IN", p)
            except OSError: pass
print("searched")
PY
echo "--- end"
"#
    );
    let ca_mount = format!("{}:/etc/paddock-test:ro", ca.parent().unwrap().display());
    let out = common::paddock_for(backend)
        .env(
            "PADDOCK_TEST_RESOLVE",
            NAMES
                .iter()
                .map(|n| format!("{n}=127.0.0.1"))
                .collect::<Vec<_>>()
                .join(";"),
        )
        .env("PADDOCK_TEST_UPSTREAM_CA", &ca)
        .args(["run", "--backend", backend, "--name", &name, "-w"])
        .arg(dir.path())
        .args(["--mount", &ca_mount])
        .args(["--allow", "*.echo.test:*", "--allow", "127.0.0.1:*"])
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let o = stdout(&out);
    let section = |title: &str| -> String {
        o.split(&format!("--- {title}\n"))
            .nth(1)
            .and_then(|r| r.split("\n--- ").next())
            .unwrap_or("")
            .to_owned()
    };
    let ctx = format!("{o}\nstderr:\n{}", stderr(&out));
    assert!(o.contains("env: paddock-placeholder-api-"), "{ctx}");
    assert!(
        section("bound").contains(&format!("x-api-key: {SECRET}")),
        "the bound host did not get the secret:\n{ctx}"
    );
    let other = section("other");
    assert!(
        other.contains("GET /other") && other.contains("x-api-key: paddock-placeholder-api-"),
        "{ctx}"
    );
    assert!(section("host-mismatch").contains("421"), "{ctx}");
    // HTTP/2 from the client (ALPN h2), HTTP/1.1 to the host: the secret goes in the same way.
    let h2 = section("http2");
    assert!(
        h2.contains(&format!("x-api-key: {SECRET}")) && h2.contains("version 2"),
        "{ctx}"
    );
    // Two requests at once on one HTTP/2 connection (the second made no connection of its
    // own): the first waits upstream until the second arrives there, so it is answered only if
    // the proxy does not hold the second back behind it.
    let concurrent = section("h2-concurrent");
    assert!(
        concurrent.contains("hold: released")
            && concurrent.contains("release: done")
            && concurrent.contains("connects=0")
            && !concurrent.contains("version=1"),
        "{ctx}"
    );
    // An absolute URI whose Host header names another host gets nothing.
    let absolute = section("absolute");
    assert!(
        absolute.contains("400 Bad Request") && absolute.contains("names both"),
        "{ctx}"
    );
    let redirect = section("redirect");
    assert!(redirect.contains("GET /after-redirect"), "{ctx}");
    assert!(!redirect.contains(SECRET), "{ctx}");
    let plain = section("plain");
    assert!(
        plain.contains("GET /plain") && !plain.contains(SECRET),
        "{ctx}"
    );
    let untrusted = section("untrusted");
    assert!(
        untrusted.contains("could not be verified") && untrusted.contains("502"),
        "{ctx}"
    );
    assert!(section("fronting").contains("fronting refused"), "{ctx}");
    assert!(
        section("python").contains(&format!("x-api-key: {SECRET}")),
        "{ctx}"
    );
    let search = section("search");
    assert!(
        search.contains("searched") && !search.contains("FOUND-IN"),
        "{ctx}"
    );
    // Nothing of the value on the host's process list either.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(!stdout(&ps).contains(SECRET));
    // The audit log says which credential went where, never its value.
    let log = common::paddock()
        .args(["policy", "log", "--sandbox", &name, "--json"])
        .output()
        .unwrap();
    let log = stdout(&log);
    assert!(log.contains("credential api injected"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
    // Each intercepted request is a row of its own, with its status and the bytes it carried.
    let bound: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["path"] == "/bound")
        .collect();
    assert_eq!(bound.len(), 1, "{log}");
    assert_eq!(bound[0]["method"], "GET");
    assert_eq!(bound[0]["status"], 200);
    assert!(
        bound[0]["bytes_down"].as_u64().unwrap() > 100,
        "{:?}",
        bound[0]
    );
    for s in ["api", "bad"] {
        let _ = common::paddock()
            .args(["secret", "rm", s, "--sandbox", &name])
            .output();
    }
    let _ = common::paddock().args(["rm", &name]).output();
}

/// An agent cache holding a claude "installation" that prints what it was started with and
/// the key it sees: the probe for what a preset's command gets. (The real installs from the
/// npm registry are the registries suite's.) Returns the cache's base (`PADDOCK_CACHE_DIR`).
fn probe_agent_cache(dir: &Path) -> PathBuf {
    let base = dir.join("cache");
    let cache = base.join("agents");
    let install = cache.join("claude/1.0.0-0");
    std::fs::create_dir_all(install.join("bin")).unwrap();
    std::fs::write(
        install.join("bin/claude"),
        "#!/bin/sh\ntouch /opt/paddock/agent/x 2>/dev/null && echo writable\n\
         sudo -n touch /opt/paddock/agent/y 2>/dev/null && echo writable-by-root\n\
         echo \"stand-in claude $* key=$ANTHROPIC_API_KEY config=$CLAUDE_CONFIG_DIR\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        install.join("bin/claude"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        install.join("agent.json"),
        r#"{"agent":"claude","package":"@anthropic-ai/claude-code","version":"1.0.0","node":"22.0.0","installed_at":0}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink("1.0.0-0", cache.join("claude/current")).unwrap();
    common::hand_over(&base);
    base
}

on_ns_and_gvisor!(
    an_agent_preset_runs_from_the_cache_and_gets_placeholders,
    method_and_path_rules_hold_inside_https
);

fn an_agent_preset_runs_from_the_cache_and_gets_placeholders(backend: &str) {
    common::ensure_image();
    let dir = tempfile::Builder::new()
        .prefix("paddock-agent-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let cache = probe_agent_cache(dir.path());
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    common::hand_over(&ws);
    let name = unique("agent");
    secret(&["set", "anthropic", "--sandbox", &name]);
    let run = || {
        common::paddock_for(backend)
            .env("PADDOCK_CACHE_DIR", &cache)
            .args(["run", "--backend", backend, "--name", &name, "-w"])
            .arg(&ws)
            .args(["claude", "--", "--version"])
            .output()
            .unwrap()
    };
    let first = run();
    let ctx = format!("{first:?}");
    assert!(
        stdout(&first).contains("stand-in claude --version key=paddock-placeholder-anthropic-")
            && stdout(&first).contains("config=/home/agent/.claude"),
        "{ctx}"
    );
    assert!(!stdout(&first).contains(SECRET), "{ctx}");
    assert!(!stderr(&first).contains("installing"), "{ctx}");
    // The installation is seen read-only, also by root inside.
    assert!(!stdout(&first).contains("writable"), "{ctx}");
    for f in ["x", "y"] {
        assert!(!cache.join("agents/claude/1.0.0-0").join(f).exists(), "{f}");
    }
    let bad = common::paddock()
        .args(["run", "--rm", "-w"])
        .arg(&ws)
        .arg("nosuchagent")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        stderr(&bad).contains("unknown agent \"nosuchagent\""),
        "{bad:?}"
    );
    let _ = common::paddock()
        .args(["secret", "rm", "anthropic", "--sandbox", &name])
        .output();
    let _ = common::paddock().args(["rm", &name]).output();
}

fn method_and_path_rules_hold_inside_https(backend: &str) {
    common::ensure_image();
    let dir = tempfile::Builder::new()
        .prefix("paddock-mp-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (ca, cert, key) = tls_files(dir.path(), "good");
    common::hand_over(dir.path());
    let good = echo(Some((&cert, &key)));
    let name = unique("methods");
    let port = good.port.to_string();
    let rule = common::paddock()
        .args(["policy", "allow", "api.echo.test", "--port", &port])
        .args(["--method", "GET", "--path", "/v1/*", "--sandbox", &name])
        .output()
        .unwrap();
    assert!(rule.status.success(), "{rule:?}");
    let gp = good.port;
    let script = format!(
        r#"
echo "get-v1: $(curl -sS -o /dev/null -w '%{{http_code}}' https://api.echo.test:{gp}/v1/models)"
echo "post-v1: $(curl -sS -o /dev/null -w '%{{http_code}}' -X POST https://api.echo.test:{gp}/v1/models)"
echo "get-v2: $(curl -sS -o /dev/null -w '%{{http_code}}' https://api.echo.test:{gp}/v2/admin)"
curl -sS -D - -o /dev/null -X DELETE https://api.echo.test:{gp}/v1/x | grep -i x-paddock-decision
"#
    );
    let out = common::paddock_for(backend)
        .env("PADDOCK_TEST_RESOLVE", "api.echo.test=127.0.0.1")
        .env("PADDOCK_TEST_UPSTREAM_CA", &ca)
        .args(["run", "--backend", backend, "--name", &name, "-w"])
        .arg(dir.path())
        .args(["--allow", "127.0.0.1:*", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    let o = stdout(&out);
    let ctx = format!("{o}\nstderr:\n{}", stderr(&out));
    for want in [
        "get-v1: 200",
        "post-v1: 403",
        "get-v2: 403",
        "x-paddock-decision: deny",
    ] {
        assert!(o.contains(want), "missing {want:?}:\n{ctx}");
    }
    let log = stdout(
        &common::paddock()
            .args(["policy", "log", "--sandbox", &name, "--json"])
            .output()
            .unwrap(),
    );
    assert!(
        log.contains("/v2/admin") && log.contains("/v1/models"),
        "{log}"
    );
    let _ = common::paddock().args(["rm", &name]).output();
}

/// A sandbox's own secrets go with it: a later sandbox of the same name does not inherit them;
/// the global ones stay.
#[test]
fn rm_takes_the_sandboxs_own_secrets_with_it() {
    require_root!();
    let ws = common::workspace();
    let name = unique("secrm");
    let _cleanup = common::Cleanup(name.clone());
    let global = unique("glob");
    // Removed however the test ends: a global secret left behind would give every later
    // sandbox of this user a trust store of its own and its variables.
    struct Forget(String);
    impl Drop for Forget {
        fn drop(&mut self) {
            let _ = common::paddock().args(["secret", "rm", &self.0]).output();
        }
    }
    let _forget = Forget(global.clone());
    secret(&[
        "set-custom",
        &global,
        "--host",
        "g.example.test",
        "--header",
        "x-k",
    ]);
    secret(&["set", "anthropic", "--sandbox", &name]);
    let made = common::paddock()
        .args(["create", "--backend", "ns", "--name", &name, "-w"])
        .arg(ws.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let listed = || stdout(&common::paddock().args(["secret", "ls"]).output().unwrap());
    assert!(
        listed().contains(&format!("sandbox {name}")),
        "{}",
        listed()
    );
    let rm = common::paddock().args(["rm", &name]).output().unwrap();
    assert!(rm.status.success(), "{rm:?}");
    assert!(stderr(&rm).contains("secret(s)"), "{rm:?}");
    let after = listed();
    assert!(!after.contains(&format!("sandbox {name}")), "{after}");
    assert!(after.contains(&global), "{after}");
}
