//! What the proxy's integration tests share: a proxy on loopback with fixed rules, a test CA
//! and TLS origins, and `curl` driven through the proxy.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use paddock_policy::net::{Action, Rule, Scope, StoredRule};
use paddock_proxy::audit::AuditWriter;
use paddock_proxy::intercept::{Binding, Credentials, Put, SandboxCa, Secret};
use paddock_proxy::resolve::Resolver;
use paddock_proxy::rules::RuleSource;
use paddock_proxy::{ProxyConfig, ProxyHandle};
use paddock_store::{AuditQuery, AuditRow, Store};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The header the test secret is injected as, and its value.
pub const SECRET_HEADER: &str = "x-test-key";
pub const SECRET_VALUE: &str = "the-real-secret";

/// `curl` must exist and speak HTTP/2: a test that needs it fails rather than skips.
pub fn curl_with_http2() {
    let out = Command::new("curl")
        .arg("-V")
        .output()
        .expect("curl is needed by these tests");
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.lines()
            .any(|l| l.starts_with("Features:") && l.contains("HTTP2")),
        "this curl has no HTTP/2: {v}"
    );
}

/// A test CA and a certificate for `names` signed by it: (ca.pem path, chain, key).
pub struct TestTls {
    pub ca_pem: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TestTls {
    pub fn new(dir: &Path, names: &[&str]) -> TestTls {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "paddock test upstream CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        let ca_pem = dir.join("upstream-ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.pem().as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        TestTls {
            ca_pem,
            server: Arc::new(cfg),
        }
    }
}

/// Reads one request head (up to the blank line) from `r`; `None` at the end.
pub fn read_head(r: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match r.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// How a TLS origin ends its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// No Content-Length: the body ends when the connection does (TLS close_notify, then TCP).
    Close,
    /// As `Close`, but the TCP connection ends without a TLS close_notify.
    CloseWithoutNotify,
    /// A Content-Length larger than what is sent before closing (with close_notify).
    Short,
    /// No Content-Length; half the body, then a TCP reset.
    Reset,
}

/// The body a TLS origin sends: `len` bytes of a repeating pattern.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"0123456789abcdef"[i % 16]).collect()
}

/// An HTTPS origin on 127.0.0.1 that answers every request (HTTP/1.1) with `len` bytes and
/// ends as `ending` says, one request per connection. It records each request head.
pub fn tls_origin(
    tls: &TestTls,
    ending: Ending,
    len: usize,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let cfg = tls.server.clone();
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let cfg = cfg.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s);
                let Some(head) = read_head(&mut tls) else {
                    return;
                };
                log.lock().unwrap().push(head);
                let body = pattern(len);
                let resp = match ending {
                    Ending::Short => format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        len * 2
                    ),
                    _ => "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                        .to_owned(),
                };
                if tls.write_all(resp.as_bytes()).is_err() {
                    return;
                }
                let body = if ending == Ending::Reset {
                    &body[..len / 2]
                } else {
                    &body[..]
                };
                // In pieces, so the proxy sees the body arrive over time.
                for chunk in body.chunks(16 * 1024) {
                    if tls.write_all(chunk).and_then(|()| tls.flush()).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                if ending == Ending::Reset {
                    std::thread::sleep(Duration::from_millis(100));
                    rustix::net::sockopt::set_socket_linger(&tls.sock, Some(Duration::ZERO))
                        .unwrap();
                    return;
                }
                if ending != Ending::CloseWithoutNotify {
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
                let _ = tls.sock.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, seen)
}

/// A plain HTTP origin on 127.0.0.1 that answers `origin saw: REQUEST-LINE` and records each
/// request head.
pub fn http_origin() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                while let Some(head) = read_head(&mut s) {
                    let first = head.lines().next().unwrap_or("").to_owned();
                    log.lock().unwrap().push(head);
                    let body = format!("origin saw: {first}\n");
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
    (addr, seen)
}

/// A secret bound to `host` (injected as [`SECRET_HEADER`]), with the sandbox's CA in `dir`
/// and `upstream_ca` trusted for upstreams.
pub fn credentials(dir: &Path, host: &str, upstream_ca: &Path) -> (Arc<Credentials>, PathBuf) {
    let ca = SandboxCa::load_or_create(&dir.join("sandbox-ca"), "t").unwrap();
    let sandbox_ca = dir.join("sandbox-ca.pem");
    std::fs::write(&sandbox_ca, ca.pem()).unwrap();
    let entry = Binding {
        host: host.into(),
        name: "test".into(),
        put: Put::Header {
            header: SECRET_HEADER.into(),
            prefix: String::new(),
        },
        placeholder: "paddock-placeholder-test".into(),
        value: Secret::new(SECRET_VALUE.into()),
    };
    let extra = std::fs::read(upstream_ca).unwrap();
    let creds = Credentials::with_extra_roots(ca, vec![entry], Some(&extra)).unwrap();
    (Arc::new(creds), sandbox_ca)
}

/// A running proxy with fixed rules and its audit log.
pub struct Proxy {
    pub addr: SocketAddr,
    db: PathBuf,
    handle: Option<ProxyHandle>,
    writer: Option<AuditWriter>,
}

/// What a test proxy is started with.
pub struct Setup<'a> {
    pub dir: &'a Path,
    pub rules: &'a [(Action, String)],
    /// Names answered locally (everything else goes to the system resolver).
    pub names: &'a [(&'a str, IpAddr)],
    pub credentials: Option<Arc<Credentials>>,
}

impl Proxy {
    pub fn start(s: Setup<'_>) -> Proxy {
        Proxy::start_with(s, |_| {})
    }

    /// Starts the proxy after `adjust` has seen its configuration.
    pub fn start_with(s: Setup<'_>, adjust: impl FnOnce(&mut ProxyConfig)) -> Proxy {
        let db = s.dir.join("state.db");
        let stored = s
            .rules
            .iter()
            .enumerate()
            .map(|(i, (a, t))| StoredRule {
                id: i as i64 + 1,
                scope: Scope::Sandbox("t".into()),
                source: "test".into(),
                rule: Rule::parse_target(*a, t).unwrap(),
            })
            .collect();
        let (writer, sink) = AuditWriter::start(Store::open(&db).unwrap()).unwrap();
        let over: HashMap<String, Vec<IpAddr>> = s
            .names
            .iter()
            .map(|(n, a)| (n.to_string(), vec![*a]))
            .collect();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut cfg = ProxyConfig {
            sandbox: "t".into(),
            rules: RuleSource::fixed(stored),
            audit: sink,
            resolver: Resolver::with_overrides(over),
            connect_timeout: Duration::from_secs(5),
            credentials: s.credentials,
            upstream: None,
            asks: None,
        };
        adjust(&mut cfg);
        let handle = paddock_proxy::start(cfg, vec![paddock_proxy::Listener::Tcp(l)], 2).unwrap();
        Proxy {
            addr,
            db,
            handle: Some(handle),
            writer: Some(writer),
        }
    }

    /// Runs curl through the proxy: (exit code, body or headers as asked, stderr).
    pub fn curl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-x",
                &format!("http://{}", self.addr),
            ])
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).replace('\r', ""),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Sends `bytes` to the proxy and reads until it closes.
    pub fn raw(&self, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Stops the proxy and returns every audit row.
    pub fn audit(mut self) -> Vec<AuditRow> {
        drop(self.handle.take());
        self.writer.take().unwrap().close();
        let store = Store::open(&self.db).unwrap();
        store.audit_rows(&AuditQuery::default()).unwrap()
    }
}

pub fn allow(t: impl Into<String>) -> (Action, String) {
    (Action::Allow, t.into())
}

pub fn deny(t: impl Into<String>) -> (Action, String) {
    (Action::Deny, t.into())
}
