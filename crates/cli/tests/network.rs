//! The egress proxy from inside real sandboxes: real clients (curl, git, pip, npm, python)
//! against real HTTP and HTTPS servers on loopback, names mapped by the test resolver override.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{PyServer, stderr, stdout, unique};

/// Names the upstream servers answer to; all map to 127.0.0.1 for the proxy only.
const NAMES: &[&str] = &[
    "up.test",
    "tls.test",
    "rebind.test",
    "other.test",
    "wild.test",
    "a.wild.test",
    "a.b.wild.test",
    "evil-wild.test",
    "wild.test.evil.test",
];

fn resolve_override() -> String {
    NAMES
        .iter()
        .map(|n| format!("{n}=127.0.0.1"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Files the servers offer: a page, a bare git repository (dumb HTTP), a pip simple index and
/// an npm registry document.
fn site(root: &Path) {
    std::fs::create_dir_all(root.join("simple/demo")).unwrap();
    std::fs::write(root.join("hello.txt"), "hello from upstream\n").unwrap();
    std::fs::write(
        root.join("simple/demo/index.html"),
        "<!DOCTYPE html><html><body><a href=\"demo-1.2.3-py3-none-any.whl\">demo-1.2.3-py3-none-any.whl</a></body></html>\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("npm")).unwrap();
    std::fs::write(
        root.join("npm/demo"),
        r#"{"name":"demo","dist-tags":{"latest":"4.5.6"},"versions":{"4.5.6":{"name":"demo","version":"4.5.6","dist":{"tarball":"https://tls.test/npm/demo-4.5.6.tgz","shasum":"0000000000000000000000000000000000000000"}}}}"#,
    )
    .unwrap();
    let src = root.parent().unwrap().join("src");
    let git = |args: &[&str], dir: &Path| {
        let o = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    std::fs::create_dir_all(&src).unwrap();
    git(&["init", "-q", "-b", "main"], &src);
    std::fs::write(src.join("README"), "cloned through the proxy\n").unwrap();
    git(&["add", "README"], &src);
    git(&["commit", "-q", "-m", "first"], &src);
    git(
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            root.join("repo.git").to_str().unwrap(),
        ],
        root,
    );
    git(&["update-server-info"], &root.join("repo.git"));
}

struct World {
    _dir: tempfile::TempDir,
    http: PyServer,
    https: PyServer,
    ca: PathBuf,
}

fn world() -> World {
    common::ensure_image();
    let dir = tempfile::Builder::new()
        .prefix("paddock-net-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = dir.path().join("www");
    site(&root);
    let (ca, cert, key) = common::test_certificates(dir.path(), "server", NAMES);
    let http = common::static_server(&root, None);
    let https = common::static_server(&root, Some((&cert, &key)));
    World {
        _dir: dir,
        http,
        https,
        ca,
    }
}

/// `paddock run` with the resolver override, in a sandbox named `name` on `ws`.
fn run(ws: &Path, name: &str, flags: &[&str], script: &str) -> Output {
    run_on("ns", ws, name, flags, script)
}

/// The same on `backend`.
fn run_on(backend: &str, ws: &Path, name: &str, flags: &[&str], script: &str) -> Output {
    let mut c = common::paddock_for(backend);
    c.env("PADDOCK_TEST_RESOLVE", resolve_override())
        .args(["run", "--backend", backend, "--name", name, "-w"])
        .arg(ws)
        .args(flags)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap()
}

fn policy(args: &[&str]) -> Output {
    common::paddock().arg("policy").args(args).output().unwrap()
}

fn rm(name: &str) {
    let _ = common::paddock().args(["rm", "-f", name]).output();
}

fn audit(name: &str) -> Vec<serde_json::Value> {
    let o = policy(&["log", "--sandbox", name, "--json", "--limit", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

// The same clients and the same bypass attempts on every backend: a VM's connections reach the
// proxy over vsock, a gVisor sandbox's over a socket its helper was handed.
on_every_backend_in_both_modes!(
    real_clients_reach_allowed_hosts_only,
    bypasses_and_raw_network_fail,
    no_network_means_no_proxy_at_all
);

// As the ordinary user, Paddock's main mode.
on_every_backend!(a_company_mirror_on_a_private_address_with_its_own_ca);

/// A company mirror: names that resolve to a private address on a network the test made,
/// served over TLS with a CA only the host trusts (the host's trust store is the bundle
/// `SSL_CERT_FILE` names for `paddock`: the system's plus that CA). A plain allow does not reach
/// the private address; an allow with a private address does, and clients inside trust the
/// host's CA without being told; `--no-host-ca` takes that trust away.
fn a_company_mirror_on_a_private_address_with_its_own_ca(backend: &str) {
    use std::os::unix::fs::PermissionsExt;
    common::ensure_image();
    let net = common::netns::TestNet::new();
    let dir = tempfile::Builder::new()
        .prefix("paddock-mirror-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "hello from the mirror\n").unwrap();
    let (ca, cert, key) =
        common::test_certificates(dir.path(), "mirror", &["mirror.test", "plain.test"]);
    let server = net.static_server(&root, &cert, &key);
    let mut bundle = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap();
    bundle.push_str(&std::fs::read_to_string(&ca).unwrap());
    let host_bundle = dir.path().join("host-bundle.pem");
    std::fs::write(&host_bundle, bundle).unwrap();
    for p in [dir.path(), &host_bundle] {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let ws = common::workspace();
    let name = unique("net-mirror");
    let port = server.port;
    let script = format!(
        r#"
echo "plain: $(curl -sS -o /dev/null -w '%{{http_code}}' https://plain.test:{port}/hello.txt 2>&1)"
echo "mirror: $(curl -sS https://mirror.test:{port}/hello.txt 2>&1)"
python3 -c 'import urllib.request; print("python:", urllib.request.urlopen("https://mirror.test:{port}/hello.txt").read().decode().strip())' 2>&1 | tail -1
echo "node-trust: ${{NODE_EXTRA_CA_CERTS:-unset}}"
"#
    );
    let run = |extra: &[&str]| {
        let mut c = common::paddock_for(backend);
        c.env(
            "PADDOCK_TEST_RESOLVE",
            format!("mirror.test={p};plain.test={p}", p = net.peer),
        )
        .env("SSL_CERT_FILE", &host_bundle)
        .args(["run", "--backend", backend, "--name", &name, "-w"])
        .arg(ws.path())
        .args(["--allow", &format!("plain.test:{port}")])
        .args(["--allow-private-address", &format!("mirror.test:{port}")])
        .args(extra)
        .args(["--", "sh", "-c", &script]);
        c.output().unwrap()
    };
    let o = run(&[]);
    let out = stdout(&o);
    let refusal = audit(&name)
        .into_iter()
        .find(|r| r["host"] == "plain.test")
        .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let o2 = run(&["--no-host-ca"]);
    let untrusted = stdout(&o2);
    rm(&name);
    for want in [
        // Refused by the address check: explained over TLS under the sandbox's CA.
        "plain: 403",
        "mirror: hello from the mirror",
        "python: hello from the mirror",
        "node-trust: /etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(
            out.contains(want),
            "missing {want:?} in:\n{out}\nstderr:\n{}",
            stderr(&o)
        );
    }
    assert!(
        refusal.contains(&format!("resolved to {}", net.peer)) && refusal.contains("private"),
        "{refusal:?}"
    );
    assert!(
        untrusted.contains("mirror: curl: (60)"),
        "with --no-host-ca the mirror's CA is not trusted:\n{untrusted}\nstderr:\n{}",
        stderr(&o2)
    );
}

fn real_clients_reach_allowed_hosts_only(backend: &str) {
    let w = world();
    let ws = common::workspace();
    let name = unique("net-clients");
    let (hp, sp) = (w.http.port, w.https.port);
    // The CA's own directory: the vm backend shares directories, not single files.
    let ca_mount = format!("{}:/etc/paddock-test:ro", w.ca.parent().unwrap().display());
    let script = format!(
        r#"
ca=/etc/paddock-test/ca.pem
echo "curl-http: $(curl -sS http://up.test:{hp}/hello.txt)"
echo "curl-https: $(curl -sS --cacert $ca https://tls.test:{sp}/hello.txt)"
GIT_SSL_CAINFO=$ca git clone -q https://tls.test:{sp}/repo.git /tmp/repo && echo "git: $(cat /tmp/repo/README)"
pip index versions demo --index-url https://tls.test:{sp}/simple/ --cert $ca 2>/dev/null | head -1 | sed 's/^/pip: /'
npm_config_cafile=$ca npm view demo version --registry https://tls.test:{sp}/npm/ 2>&1 | tail -1 | sed 's/^/npm: /'
SSL_CERT_FILE=$ca python3 -c 'import urllib.request; print("python:", urllib.request.urlopen("https://tls.test:{sp}/hello.txt").read().decode().strip())'
echo "denied: $(curl -s -o /dev/null -w '%{{http_code}}' http://other.test:{hp}/denied)"
curl -s -D - -o /dev/null http://other.test:{hp}/header | grep -i x-paddock-decision
echo "denied-connect: $(curl -s -o /dev/null -w '%{{http_code}}' --cacert $ca https://other.test:{sp}/ 2>&1)"
"#
    );
    let o = run_on(
        backend,
        ws.path(),
        &name,
        &[
            "--mount",
            &ca_mount,
            "--allow",
            &format!("up.test:{hp}"),
            "--allow",
            &format!("tls.test:{sp}"),
            "--allow",
            "127.0.0.1",
        ],
        &script,
    );
    let out = stdout(&o);
    rm(&name);
    for want in [
        "curl-http: hello from upstream",
        "curl-https: hello from upstream",
        "git: cloned through the proxy",
        "pip: demo (1.2.3)",
        "npm: 4.5.6",
        "python: hello from upstream",
        "denied: 403",
        "x-paddock-decision: deny; rule=default",
        "denied-connect: 000",
    ] {
        assert!(
            out.contains(want),
            "missing {want:?} in:\n{out}\nstderr:\n{}",
            stderr(&o)
        );
    }
    drop(w);
}

fn bypasses_and_raw_network_fail(backend: &str) {
    let w = world();
    let ws = common::workspace();
    let name = unique("net-escape");
    let hp = w.http.port;
    let script = format!(
        r#"
curl -s --max-time 3 --noproxy '*' http://127.0.0.1:{hp}/hello.txt && echo NOPROXY-WORKED
(exec 3<>/dev/tcp/127.0.0.1/{hp} && echo DEVTCP-WORKED) 2>/dev/null
python3 - <<'PY'
import socket
for target in (("127.0.0.1", {hp}), ("10.0.0.1", 80), ("1.1.1.1", 443)):
    try:
        socket.create_connection(target, timeout=2); print("TCP-WORKED", target)
    except OSError as e:
        print("tcp refused", target, e.errno)
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"x", ("1.1.1.1", 53)); print("UDP-WORKED")
except OSError as e:
    print("udp refused", e.errno)
try:
    socket.getaddrinfo("up.test", 80); print("DNS-WORKED")
except OSError as e:
    print("dns refused")
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).sendto(b"\x08\0\0\0\0\0\0\0", ("1.1.1.1", 0)); print("ICMP-WORKED")
except OSError as e:
    print("icmp refused", e.errno)
# Smuggling shape straight at the proxy: both Content-Length and Transfer-Encoding.
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(b"POST http://up.test:{hp}/smuggle HTTP/1.1\r\nHost: up.test:{hp}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
print("smuggle:", s.recv(100).split(b"\r\n")[0].decode())
PY
"#
    );
    let o = run_on(
        backend,
        ws.path(),
        &name,
        &[
            "-u",
            "root",
            "--allow",
            &format!("up.test:{hp}"),
            "--allow",
            "127.0.0.1",
        ],
        &script,
    );
    let out = stdout(&o) + &stderr(&o);
    rm(&name);
    for bad in [
        "NOPROXY-WORKED",
        "DEVTCP-WORKED",
        "TCP-WORKED",
        "UDP-WORKED",
        "DNS-WORKED",
        "ICMP-WORKED",
    ] {
        assert!(!out.contains(bad), "{bad}:\n{out}");
    }
    assert!(
        out.contains("dns refused") && out.contains("udp refused"),
        "{out}"
    );
    assert!(out.contains("smuggle: HTTP/1.1 400"), "{out}");
    drop(w);
}

#[test]
fn names_addresses_and_wildcards_decided_and_audited_once() {
    require_root!();
    let w = world();
    let ws = common::workspace();
    let name = unique("net-decide");
    // A second server: no address rule names its port, so loopback there is refused.
    let other = common::static_server(&w._dir.path().join("www"), None);
    let (hp, op) = (w.http.port, other.port);
    // (host, port, expected status)
    let cases: &[(&str, u16, &str)] = &[
        ("a.wild.test", hp, "200"),
        ("A.WILD.TEST.", hp, "200"),
        ("wild.test", hp, "403"),
        ("a.b.wild.test", hp, "403"),
        ("evil-wild.test", hp, "403"),
        ("wild.test.evil.test", hp, "403"),
        // Allowed by name, but it resolves to loopback and no rule names that address and port.
        ("rebind.test", op, "403"),
        // Every spelling of 127.0.0.1 is 127.0.0.1: allowed where the address rule names it…
        ("2130706433", hp, "200"),
        // …and refused where nothing does.
        ("2130706433", op, "403"),
        ("0x7f000001", op, "403"),
        ("0177.0.0.1", op, "403"),
        ("127.1", op, "403"),
        ("[::ffff:7f00:1]", op, "403"),
        // Allowed by name on port 80 only: another port must be named.
        ("up.test", hp, "403"),
    ];
    // The request goes to the proxy exactly as spelled (curl would rewrite numeric hosts and
    // then skip the proxy for 127.0.0.1 because of NO_PROXY).
    let mut script = String::from(
        r#"req() { python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(("GET http://%s/%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (sys.argv[1], sys.argv[2], sys.argv[1])).encode())
print(s.recv(64).split(b" ")[1].decode())' "$1" "$2"; }
"#,
    );
    for (i, (host, port, _)) in cases.iter().enumerate() {
        std::fs::write(w._dir.path().join(format!("www/case{i}")), "ok").unwrap();
        script += &format!("echo \"case{i} $(req {host}:{port} case{i})\"\n");
    }
    let o = run(
        ws.path(),
        &name,
        &[
            "--allow",
            &format!("*.wild.test:{hp}"),
            "--allow",
            &format!("rebind.test:{op}"),
            "--allow",
            "up.test",
            // 127.0.0.1 is allowed only for the wildcard names: a port-limited address rule.
            "--allow",
            &format!("127.0.0.1:{hp}"),
        ],
        &script,
    );
    let out = stdout(&o);
    let rows = audit(&name);
    rm(&name);
    drop(other);
    for (i, (host, _, want)) in cases.iter().enumerate() {
        assert!(
            out.contains(&format!("case{i} {want}")),
            "{host}: want {want}\n{out}\n{}",
            stderr(&o)
        );
        let hits: Vec<_> = rows
            .iter()
            .filter(|r| r["path"] == format!("/case{i}"))
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "case{i} ({host}) audited {} times: {rows:#?}",
            hits.len()
        );
        let action = if *want == "200" { "allow" } else { "deny" };
        assert_eq!(hits[0]["action"], action, "case{i} {host}: {:#?}", hits[0]);
    }
    drop(w);
}

/// `policy check` and the proxy decide alike: for each request a real client sends from inside
/// (plain HTTP, HTTPS opened whole, HTTPS intercepted because a rule limits its paths),
/// `check` gives the decision the proxy made and the words its audit row starts with.
#[test]
fn check_decides_as_the_proxy_does() {
    require_root!();
    let w = world();
    let ws = common::workspace();
    let name = unique("net-check");
    let (hp, sp) = (w.http.port, w.https.port);
    for (action, rule) in [
        ("allow", vec![format!("*.wild.test:{hp}")]),
        (
            "allow",
            vec![
                format!("up.test:{hp}"),
                "--method".into(),
                "GET".into(),
                "--path".into(),
                "/v1/*".into(),
            ],
        ),
        (
            "allow",
            vec![format!("tls.test:{sp}"), "--path".into(), "/v1/*".into()],
        ),
        ("deny", vec![format!("a.b.wild.test:{hp}")]),
        (
            "deny",
            vec![
                format!("a.wild.test:{hp}"),
                "--path".into(),
                "/secret*".into(),
            ],
        ),
    ] {
        let mut args = vec![action.to_owned()];
        args.extend(rule);
        args.extend(["--sandbox".into(), name.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = policy(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    // (method, url, the audit row's path, or none for a refused CONNECT)
    let cases: Vec<(&str, String, Option<String>)> = vec![
        (
            "GET",
            format!("http://a.wild.test:{hp}/c1"),
            Some("/c1".into()),
        ),
        (
            "GET",
            format!("http://wild.test:{hp}/c2"),
            Some("/c2".into()),
        ),
        (
            "GET",
            format!("http://up.test:{hp}/v1/c3"),
            Some("/v1/c3".into()),
        ),
        (
            "GET",
            format!("http://up.test:{hp}/v2/c4"),
            Some("/v2/c4".into()),
        ),
        (
            "POST",
            format!("http://up.test:{hp}/v1/c5"),
            Some("/v1/c5".into()),
        ),
        (
            "GET",
            format!("https://tls.test:{sp}/v1/c6"),
            Some("/v1/c6".into()),
        ),
        (
            "GET",
            format!("https://tls.test:{sp}/v2/c7"),
            Some("/v2/c7".into()),
        ),
        ("GET", format!("https://other.test:{sp}/c8"), None),
        (
            "GET",
            format!("http://a.b.wild.test:{hp}/c9"),
            Some("/c9".into()),
        ),
        (
            "GET",
            format!("http://a.wild.test:{hp}/secret/c10"),
            Some("/secret/c10".into()),
        ),
    ];
    let mut script = String::new();
    for (method, url, _) in &cases {
        // The system's trust store: it holds the sandbox's CA, which intercepted tunnels use.
        script += &format!("curl -s -o /dev/null -X {method} {url} || true\n");
    }
    let mut c = common::paddock_for("ns");
    let o = c
        .env("PADDOCK_TEST_RESOLVE", resolve_override())
        .env("PADDOCK_TEST_UPSTREAM_CA", &w.ca)
        .args(["run", "--backend", "ns", "--name", &name, "-w"])
        .arg(ws.path())
        .args(["--allow", "127.0.0.1"])
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = audit(&name);
    for (method, url, path) in &cases {
        let o = policy(&["check", url, "--method", method, "--sandbox", &name]);
        let out = stdout(&o);
        let mut lines = out.lines();
        let first = lines.next().unwrap_or_default();
        let reason = lines.next().unwrap_or_default().trim();
        let row = rows
            .iter()
            .find(|r| match path {
                Some(p) => r["path"] == p.as_str(),
                None => r["method"] == "CONNECT" && url.contains(r["host"].as_str().unwrap()),
            })
            .unwrap_or_else(|| panic!("no audit row for {method} {url}: {rows:#?}"));
        let decision = first.split_whitespace().next().unwrap_or_default();
        assert_eq!(
            decision, row["action"],
            "{method} {url}: check says {out:?}, the proxy {row:#?}"
        );
        assert_eq!(
            o.status.code(),
            Some(if decision == "allow" { 0 } else { 1 })
        );
        assert!(
            !reason.is_empty() && row["reason"].as_str().unwrap().starts_with(reason),
            "{method} {url}: check says {reason:?}, the proxy {:?}",
            row["reason"]
        );
    }
    rm(&name);
    drop(w);
}

#[test]
fn rules_changed_while_running_apply_to_the_next_request() {
    require_root!();
    let w = world();
    let ws = common::workspace();
    let name = unique("net-live");
    let hp = w.http.port;
    let script = format!(
        r#"
echo "before $(curl -s -o /dev/null -w '%{{http_code}}' http://up.test:{hp}/hello.txt)"
touch {ws}/asked
for i in $(seq 200); do [ -e {ws}/go ] && break; sleep 0.1; done
echo "after $(curl -s -o /dev/null -w '%{{http_code}}' http://up.test:{hp}/hello.txt)"
"#,
        ws = ws.path().display()
    );
    let child = {
        let ws = ws.path().to_owned();
        let name = name.clone();
        std::thread::spawn(move || run(&ws, &name, &["--allow", "127.0.0.1"], &script))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ws.path().join("asked").exists() {
        assert!(Instant::now() < deadline, "sandbox did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = policy(&["allow", &format!("up.test:{hp}"), "--sandbox", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(ws.path().join("go"), "").unwrap();
    let o = child.join().unwrap();
    rm(&name);
    let out = stdout(&o);
    assert!(
        out.contains("before 403") && out.contains("after 200"),
        "{out}\n{}",
        stderr(&o)
    );
    drop(w);
}

fn no_network_means_no_proxy_at_all(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let name = unique("net-none");
    let o = run_on(
        backend,
        ws.path(),
        &name,
        &["--no-network"],
        "env | grep -ci _proxy; python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 3128), timeout=2)' 2>/dev/null && echo PROXY-REACHABLE; true",
    );
    rm(&name);
    let out = stdout(&o);
    assert!(out.starts_with('0'), "{out}");
    assert!(!out.contains("PROXY-REACHABLE"), "{out}");
}

#[test]
fn new_sandboxes_get_balanced_unless_told_otherwise() {
    require_root!();
    let ws = common::workspace();
    let count = |name: &str| -> (usize, String) {
        let o = policy(&["ls", "--sandbox", name, "--json"]);
        let rules: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
        let sources: Vec<String> = rules
            .iter()
            .map(|r| r["source"].as_str().unwrap().to_owned())
            .collect();
        (rules.len(), sources.join(","))
    };
    let a = unique("net-preset-a");
    assert!(run(ws.path(), &a, &[], "true").status.success());
    let (n, sources) = count(&a);
    assert!(
        n > 10 && sources.contains("preset:balanced"),
        "{n} {sources}"
    );
    let b = unique("net-preset-b");
    assert!(
        run(
            ws.path(),
            &b,
            &["--policy", "deny-all", "--allow", "only.example.com"],
            "true"
        )
        .status
        .success()
    );
    assert_eq!(count(&b), (1, "run".to_owned()));
    // A second run keeps the sandbox's preset and does not add the same --allow twice.
    assert!(
        run(ws.path(), &b, &["--allow", "only.example.com"], "true")
            .status
            .success()
    );
    assert_eq!(count(&b), (1, "run".to_owned()));
    rm(&a);
    rm(&b);
    assert_eq!(count(&b).0, 0, "rm removes the sandbox's rules");
}

/// What a recording upstream proxy saw of each request: its request line and its
/// Proxy-Authorization.
type UpstreamLog = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// A minimal upstream proxy on the host's loopback (CONNECT, and absolute-form plain HTTP),
/// that resolves every name to 127.0.0.1 itself and records what it was asked.
fn recording_upstream() -> (u16, UpstreamLog) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let log = UpstreamLog::default();
    let seen = log.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut client) = s else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match client.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let line = head.lines().next().unwrap_or("").to_owned();
                let auth = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("proxy-authorization")
                        .then(|| v.trim().to_owned())
                });
                seen.lock().unwrap().push((line.clone(), auth));
                let target = line.split(' ').nth(1).unwrap_or("");
                let connect = line.starts_with("CONNECT ");
                let authority = target
                    .strip_prefix("http://")
                    .map_or(target, |r| r.split('/').next().unwrap_or(""));
                let port: u16 = authority
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(80);
                let Ok(mut origin) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                if connect {
                    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                } else {
                    // On to the origin in origin form, as a proxy does.
                    let path = authority.len() + "http://".len();
                    let _ = origin.write_all(head.replacen(&target[..path], "", 1).as_bytes());
                }
                let (mut c2, mut o2) = (client.try_clone().unwrap(), origin.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut o2);
                    let _ = o2.shutdown(Shutdown::Write);
                });
                let _ = std::io::copy(&mut origin, &mut client);
                let _ = client.shutdown(Shutdown::Write);
                let _ = up.join();
            });
        }
    });
    (port, log)
}

#[test]
fn a_sandbox_reaches_a_loopback_origin_only_through_its_upstream_proxy() {
    require_root!();
    let w = world();
    let ws = common::workspace();
    let name = unique("net-upstream");
    let (up, log) = recording_upstream();
    let hp = w.http.port;
    // No rule for 127.0.0.1: straight from Paddock's proxy, up.test's address would be
    // refused; through the upstream proxy the name is the upstream's to resolve.
    let script = format!(
        r#"
echo "plain: $(curl -sS http://up.test:{hp}/hello.txt)"
echo "tunnel: $(curl -sS -p http://up.test:{hp}/hello.txt)"
echo "denied: $(curl -s -o /dev/null -w '%{{http_code}}' http://other.test:{hp}/hello.txt)"
"#
    );
    let o = run(
        ws.path(),
        &name,
        &[
            "--policy",
            "deny-all",
            "--allow",
            &format!("up.test:{hp}"),
            "--upstream-proxy",
            &format!("http://tester:pw@127.0.0.1:{up}"),
        ],
        &script,
    );
    let out = stdout(&o);
    let inspect = common::paddock().args(["inspect", &name]).output().unwrap();
    let rows = audit(&name);
    rm(&name);
    let via = format!("through the upstream proxy http://tester:***@127.0.0.1:{up}");
    let reached: Vec<&serde_json::Value> = rows.iter().filter(|r| r["host"] == "up.test").collect();
    assert!(
        reached.len() == 2
            && reached
                .iter()
                .all(|r| r["action"] == "allow" && r["reason"].as_str().unwrap().contains(&via)),
        "{rows:#?}"
    );
    for want in [
        "plain: hello from upstream",
        "tunnel: hello from upstream",
        "denied: 403",
    ] {
        assert!(
            out.contains(want),
            "missing {want:?} in:\n{out}\nstderr:\n{}",
            stderr(&o)
        );
    }
    // "tester:pw" in base64; other.test never reached the upstream proxy.
    let login = Some("Basic dGVzdGVyOnB3".to_owned());
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            (
                format!("GET http://up.test:{hp}/hello.txt HTTP/1.1"),
                login.clone()
            ),
            (format!("CONNECT up.test:{hp} HTTP/1.1"), login),
        ]
    );
    let shown = stdout(&inspect);
    assert!(
        shown.contains(&format!("http://tester:***@127.0.0.1:{up}")) && !shown.contains(":pw@"),
        "{shown}"
    );
    drop(w);
}
