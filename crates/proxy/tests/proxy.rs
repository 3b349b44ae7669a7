//! The proxy with real clients (curl, raw sockets) against a real upstream on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use paddock_policy::net::{Action, Rule, Scope, StoredRule};
use paddock_proxy::audit::AuditWriter;
use paddock_proxy::resolve::Resolver;
use paddock_proxy::rules::RuleSource;
use paddock_proxy::{ProxyConfig, ProxyHandle};
use paddock_store::{AuditQuery, AuditRow, Store};

/// An upstream that answers `METHOD PATH host=HOST` and, on `Upgrade`, echoes bytes.
fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let mut len = 0usize;
                    for l in head.lines() {
                        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    while buf.len() < end + 4 + len {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    let first = head.lines().next().unwrap_or("").to_owned();
                    let host = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("host: ")
                                .or_else(|| l.strip_prefix("Host: "))
                        })
                        .unwrap_or("-")
                        .to_owned();
                    if head.to_ascii_lowercase().contains("upgrade: websocket")
                        && !first.contains("/refuse")
                    {
                        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
                        let mut e = [0u8; 1024];
                        while let Ok(n) = s.read(&mut e) {
                            if n == 0 || s.write_all(&e[..n]).is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    let body = format!("{first} host={host}\n");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct Fixture {
    proxy: SocketAddr,
    up: SocketAddr,
    db: std::path::PathBuf,
    handle: Option<ProxyHandle>,
    writer: Option<AuditWriter>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(rules: &[(Action, &str)]) -> Fixture {
        let up = upstream();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let stored = rules
            .iter()
            .enumerate()
            .map(|(i, (a, t))| StoredRule {
                id: i as i64 + 1,
                scope: Scope::Sandbox("t".into()),
                source: "test".into(),
                rule: Rule::parse_target(*a, &t.replace("PORT", &up.port().to_string())).unwrap(),
            })
            .collect();
        let (writer, sink) = AuditWriter::start(Store::open(&db).unwrap()).unwrap();
        let mut over = HashMap::new();
        for n in ["allowed.test", "other.test", "rebind.test"] {
            over.insert(n.to_string(), vec!["127.0.0.1".parse().unwrap()]);
        }
        // A name that does not resolve.
        over.insert("gone.test".to_string(), vec![]);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = l.local_addr().unwrap();
        let handle = paddock_proxy::start(
            ProxyConfig {
                sandbox: "t".into(),
                rules: RuleSource::fixed(stored),
                audit: sink,
                resolver: Resolver::with_overrides(over),
                connect_timeout: Duration::from_secs(5),
                credentials: None,
                upstream: None,
                asks: None,
            },
            vec![paddock_proxy::Listener::Tcp(l)],
            1,
        )
        .unwrap();
        Fixture {
            proxy,
            up,
            db,
            handle: Some(handle),
            writer: Some(writer),
            _dir: dir,
        }
    }

    fn curl(&self, args: &[&str]) -> (String, String) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-i",
                "--max-time",
                "10",
                "-x",
                &format!("http://{}", self.proxy),
            ])
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).replace('\r', ""),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    fn raw(&self, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(self.proxy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.up.port())
    }

    /// Stops the proxy and returns every audit row.
    fn audit(mut self) -> Vec<AuditRow> {
        drop(self.handle.take());
        self.writer.take().unwrap().close();
        let store = Store::open(&self.db).unwrap();
        store.audit_rows(&AuditQuery::default()).unwrap()
    }
}

const ALLOW: Action = Action::Allow;
const DENY: Action = Action::Deny;

#[test]
fn allowed_denied_and_audited_once() {
    let f = Fixture::new(&[(ALLOW, "allowed.test:PORT"), (ALLOW, "127.0.0.1")]);
    let (ok, _) = f.curl(&[&f.url("allowed.test", "/hello?x=1")]);
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains(&format!(
            "GET /hello?x=1 HTTP/1.1 host=allowed.test:{}",
            f.up.port()
        )),
        "{ok}"
    );
    assert!(ok.contains("x-paddock-decision: allow; rule=1"), "{ok}");

    let (denied, _) = f.curl(&[&f.url("other.test", "/")]);
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(
        denied.contains("x-paddock-decision: deny; rule=default"),
        "{denied}"
    );
    assert!(
        denied.contains(&format!(
            "paddock policy allow other.test --port {} --sandbox t",
            f.up.port()
        )),
        "{denied}"
    );

    // Upper case and a trailing dot are the same host.
    let (ok2, _) = f.curl(&[&f.url("ALLOWED.test.", "/")]);
    assert!(ok2.starts_with("HTTP/1.1 200"), "{ok2}");

    // CONNECT to the same host and port works; the tunnel carries plain HTTP.
    let (tunnel, err) = f.curl(&["-p", &f.url("allowed.test", "/t")]);
    assert!(tunnel.contains("GET /t HTTP/1.1"), "{tunnel} {err}");

    let rows = f.audit();
    let got: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.host.clone(),
                r.action.clone(),
                r.rule.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "GET".into(),
                "allowed.test".into(),
                "allow".into(),
                "1".into()
            ),
            (
                "GET".into(),
                "other.test".into(),
                "deny".into(),
                "default".into()
            ),
            (
                "GET".into(),
                "allowed.test".into(),
                "allow".into(),
                "1".into()
            ),
            (
                "CONNECT".into(),
                "allowed.test".into(),
                "allow".into(),
                "1".into()
            ),
        ]
    );
    assert!(rows[0].bytes_down > 0, "{:?}", rows[0]);
    assert_eq!(rows[0].status, Some(200));
    assert_eq!(rows[1].status, Some(403));
    assert!(
        rows[3].bytes_up > 0 && rows[3].bytes_down > 0,
        "{:?}",
        rows[3]
    );
}

#[test]
fn rebinding_to_loopback_is_refused_without_an_address_rule() {
    let f = Fixture::new(&[(ALLOW, "rebind.test:PORT")]);
    let (r, _) = f.curl(&[&f.url("rebind.test", "/")]);
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("x-paddock-decision: deny; rule=address"), "{r}");
    let (c, _) = f.curl(&["-p", &f.url("rebind.test", "/")]);
    assert!(c.contains("403"), "{c}");
    // IP literal spellings of loopback are loopback.
    for h in [
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "[::ffff:7f00:1]",
    ] {
        let (r, _) = f.curl(&["--path-as-is", &format!("http://{h}:{}/", f.up.port())]);
        assert!(r.starts_with("HTTP/1.1 403"), "{h}: {r}");
    }
    let rows = f.audit();
    assert_eq!(rows.len(), 7, "{rows:#?}");
    assert!(
        rows[2..]
            .iter()
            .all(|r| r.host == "127.0.0.1" && r.action == "deny"),
        "{rows:#?}"
    );
}

/// A name the rules allow that does not resolve is a failure, not a denial: so answered and
/// so logged, plain and CONNECT alike.
#[test]
fn a_name_that_does_not_resolve_is_a_failure_not_a_denial() {
    let f = Fixture::new(&[(ALLOW, "gone.test:any")]);
    let (r, _) = f.curl(&[&f.url("gone.test", "/x")]);
    assert!(
        r.starts_with("HTTP/1.1 502 Bad Gateway: Paddock cannot resolve gone.test")
            && r.contains("x-paddock-decision: fail; rule=resolve")
            && r.contains("paddock: cannot resolve gone.test: no addresses (the rules allow it; the name does not resolve)"),
        "{r}"
    );
    let (_, err) = f.curl(&["https://gone.test/"]);
    assert!(err.contains("CONNECT tunnel failed, response 502"), "{err}");
    let rows = f.audit();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in &rows {
        assert_eq!(
            (r.action.as_str(), r.rule.as_str(), r.status),
            ("fail", "resolve", Some(502)),
            "{r:#?}"
        );
        assert_eq!(r.reason, "cannot resolve gone.test: no addresses");
    }
}

#[test]
fn explicit_deny_wins_and_ports_must_be_named() {
    let f = Fixture::new(&[
        (ALLOW, "**:any"),
        (ALLOW, "127.0.0.1"),
        (DENY, "other.test:any"),
        (ALLOW, "allowed.test"),
    ]);
    let (r, _) = f.curl(&[&f.url("other.test", "/")]);
    assert!(r.contains("deny; rule=3"), "{r}");
    assert!(r.contains("paddock policy rm 3"), "{r}");
    let (r, _) = f.curl(&[&f.url("allowed.test", "/")]);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    drop(f);

    let f = Fixture::new(&[(ALLOW, "allowed.test"), (ALLOW, "127.0.0.1")]);
    let (r, _) = f.curl(&[&f.url("allowed.test", "/")]);
    assert!(
        r.starts_with("HTTP/1.1 403"),
        "port not named must be denied: {r}"
    );
}

#[test]
fn host_header_mismatch_and_smuggling_shapes_get_400() {
    let f = Fixture::new(&[(ALLOW, "allowed.test:PORT"), (ALLOW, "127.0.0.1")]);
    let p = f.up.port();
    let cases: Vec<String> = vec![
        format!("GET http://allowed.test:{p}/ HTTP/1.1\r\nHost: other.test:{p}\r\n\r\n"),
        format!(
            "GET http://allowed.test:{p}/ HTTP/1.1\r\nHost: allowed.test:{p}\r\nHost: allowed.test:{p}\r\n\r\n"
        ),
        format!("GET http://allowed.test:{p}/ HTTP/1.1\nHost: allowed.test:{p}\n\n"),
        format!(
            "GET http://allowed.test:{p}/ HTTP/1.1\r\nHost: allowed.test:{p}\r\nX: a\r\n  b\r\n\r\n"
        ),
        format!(
            "POST http://allowed.test:{p}/ HTTP/1.1\r\nHost: allowed.test:{p}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!(
            "POST http://allowed.test:{p}/ HTTP/1.1\r\nHost: allowed.test:{p}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
        ),
        format!("GET http://user@allowed.test:{p}/ HTTP/1.1\r\nHost: allowed.test:{p}\r\n\r\n"),
        "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n".to_string(),
        format!("GET http://allowed.test%00.evil:{p}/ HTTP/1.1\r\n\r\n"),
    ];
    for c in &cases {
        let r = f.raw(c.as_bytes());
        assert!(r.starts_with("HTTP/1.1 400"), "{c:?} -> {r:?}");
    }
    // A good request then a bad one on the same keep-alive connection: the first is answered,
    // the second refused.
    let two = format!(
        "GET http://allowed.test:{p}/one HTTP/1.1\r\nHost: allowed.test:{p}\r\n\r\nGET http://allowed.test:{p}/two HTTP/1.1\nHost: allowed.test:{p}\n\n"
    );
    let r = f.raw(two.as_bytes());
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("GET /one") && r.contains("HTTP/1.1 400"),
        "{r}"
    );
    let rows = f.audit();
    assert_eq!(
        rows.iter().filter(|r| r.status == Some(400)).count(),
        cases.len() + 1,
        "{rows:#?}"
    );
    assert_eq!(
        rows.iter().filter(|r| r.action == "allow").count(),
        1,
        "{rows:#?}"
    );
}

#[test]
fn keep_alive_requests_are_decided_each() {
    let f = Fixture::new(&[(ALLOW, "allowed.test:PORT"), (ALLOW, "127.0.0.1")]);
    let p = f.up.port();
    let two = format!(
        "GET http://allowed.test:{p}/a HTTP/1.1\r\nHost: allowed.test:{p}\r\n\r\nGET http://other.test:{p}/b HTTP/1.1\r\nHost: other.test:{p}\r\n\r\n"
    );
    let r = f.raw(two.as_bytes());
    assert!(r.contains("GET /a") && r.contains("HTTP/1.1 403"), "{r}");
    assert!(!r.contains("GET /b"), "{r}");
}

#[test]
fn websocket_upgrade_on_the_allowed_host() {
    let f = Fixture::new(&[(ALLOW, "allowed.test:PORT"), (ALLOW, "127.0.0.1")]);
    let p = f.up.port();
    let mut s = TcpStream::connect(f.proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET http://allowed.test:{p}/ws HTTP/1.1\r\nHost: allowed.test:{p}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").as_bytes()).unwrap();
    let mut b = [0u8; 1024];
    let n = s.read(&mut b).unwrap();
    let head = String::from_utf8_lossy(&b[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping-through-tunnel").unwrap();
    let n = s.read(&mut b).unwrap();
    assert_eq!(&b[..n], b"ping-through-tunnel");
}

#[test]
fn an_upgrade_the_upstream_refuses_ends_the_connection() {
    // The framing check stops at an upgrade request; if the upstream answers without switching,
    // the proxy must not go on reading unchecked requests from that connection.
    let f = Fixture::new(&[(ALLOW, "allowed.test:PORT"), (ALLOW, "127.0.0.1")]);
    let p = f.up.port();
    let r = f.raw(
        format!(
            "GET http://allowed.test:{p}/refuse HTTP/1.1\r\nHost: allowed.test:{p}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\
             POST http://allowed.test:{p}/smuggled HTTP/1.1\r\nHost: allowed.test:{p}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    assert!(!r.contains("/smuggled"), "{r}");
}
