//! Credential injection benchmark: HTTPS requests through Paddock's intercepting proxy (TLS
//! terminated, a header injected, TLS again to the upstream) against Paddock's opaque CONNECT
//! tunnel and against other intercepting proxies on loopback (`--peer NAME=ADDR=CA.pem`, e.g.
//! mitmproxy started by `scripts/bench-credentials.sh` with an addon that sets the same header).
//!
//! Everything stays on 127.0.0.1; the upstream (`localhost`, in this process) checks that each
//! request carries the header where one is injected. For every route: added latency of
//! keep-alive GETs of a 100-byte answer (sequential, one connection), request throughput (4
//! connections at once) and the transfer rate of one large answer.
//!
//! Arguments (after `cargo bench -p paddock-proxy --bench intercept --`): `--peer NAME=ADDR=CA`
//! (repeatable), `--tls-dir DIR` (ca.pem, server.pem, server.key for the upstream; generated
//! when absent), `--upstream-port P`, `--requests N` (2000), `--bytes N` (256 MiB). Without
//! `--bench` it only smoke-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use paddock_policy::net::{Action, Rule, Scope, StoredRule};
use paddock_proxy::ProxyConfig;
use paddock_proxy::audit::AuditWriter;
use paddock_proxy::intercept::{
    Binding, Credentials, Put, SandboxCa, Secret, TEST_UPSTREAM_CA_ENV,
};
use paddock_proxy::resolve::Resolver;
use paddock_proxy::rules::RuleSource;
use paddock_store::Store;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NAME: &str = "localhost";
const HEADER: &str = "x-api-key";
const VALUE: &str = "bench-secret-value";
const SMALL: usize = 100;

struct Opts {
    peers: Vec<(String, SocketAddr, PathBuf)>,
    tls_dir: Option<PathBuf>,
    upstream_port: u16,
    requests: usize,
    bytes: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        peers: vec![],
        tls_dir: None,
        upstream_port: 0,
        requests: 2000,
        bytes: 256 << 20,
    };
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        o.requests = 20;
        o.bytes = 4 << 20;
    }
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--peer" => {
                let v = val();
                let mut parts = v.splitn(3, '=');
                let (n, addr, ca) = (
                    parts.next().unwrap().to_owned(),
                    parts.next().expect("--peer NAME=ADDR=CA").parse().unwrap(),
                    PathBuf::from(parts.next().expect("--peer NAME=ADDR=CA")),
                );
                o.peers.push((n, addr, ca));
            }
            "--tls-dir" => o.tls_dir = Some(PathBuf::from(val())),
            "--upstream-port" => o.upstream_port = val().parse().unwrap(),
            "--requests" => o.requests = val().parse().unwrap(),
            "--bytes" => o.bytes = val().parse().unwrap(),
            _ => {}
        }
    }
    o
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ca.pem, server.pem, server.key in `dir` (made when missing).
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    if paths.0.exists() {
        return paths;
    }
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "paddock bench CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![NAME.to_owned()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// The upstream: HTTPS on 127.0.0.1; `/small` is 100 bytes, `/big/N` is N bytes. Counts the
/// requests that carried the injected header.
async fn upstream(port: u16, cert: &Path, key: &Path, injected: Arc<AtomicU64>) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let injected = injected.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let injected = injected.clone();
                        async move {
                            if req.headers().get(HEADER).is_some_and(|v| v == VALUE) {
                                injected.fetch_add(1, Ordering::Relaxed);
                            }
                            let n = req
                                .uri()
                                .path()
                                .strip_prefix("/big/")
                                .and_then(|n| n.parse::<usize>().ok())
                                .unwrap_or(SMALL);
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(vec![b'x'; n]),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// A route: straight to the upstream, or through a proxy whose tunnels the client trusts `ca`
/// for.
#[derive(Clone)]
struct Route {
    name: String,
    proxy: Option<SocketAddr>,
    ca: PathBuf,
    injects: bool,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn open(route: &Route, up: SocketAddr) -> Sender {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&route.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut tcp = TcpStream::connect(route.proxy.unwrap_or(up)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    if route.proxy.is_some() {
        let req = format!(
            "CONNECT {NAME}:{p} HTTP/1.1\r\nHost: {NAME}:{p}\r\n\r\n",
            p = up.port()
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
            "{}: CONNECT refused: {}",
            route.name,
            String::from_utf8_lossy(&head)
        );
    }
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(NAME).unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn get(s: &mut Sender, path: &str, port: u16) -> usize {
    s.ready().await.unwrap();
    let req = hyper::Request::get(path)
        .header("host", format!("{NAME}:{port}"))
        .body(Empty::new())
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut body = resp.into_body();
    let mut n = 0;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            n += d.len();
        }
    }
    n
}

struct Row {
    name: String,
    p50: f64,
    p99: f64,
    rps: f64,
    mbps: f64,
    injects: bool,
    injected_ok: bool,
}

async fn measure(route: &Route, up: SocketAddr, o: &Opts, injected: &AtomicU64) -> Row {
    // Latency: one connection, sequential.
    let mut s = open(route, up).await;
    for _ in 0..o.requests / 10 {
        get(&mut s, "/small", up.port()).await;
    }
    let before = injected.load(Ordering::Relaxed);
    let mut lat = Vec::with_capacity(o.requests);
    for _ in 0..o.requests {
        let t = Instant::now();
        get(&mut s, "/small", up.port()).await;
        lat.push(t.elapsed());
    }
    let carried = injected.load(Ordering::Relaxed) - before;
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    // Throughput: 4 connections at once.
    let conns = 4;
    let per = o.requests;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let route = route.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = open(&route, up).await;
            for _ in 0..per {
                get(&mut s, "/small", up.port()).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rps = (conns * per) as f64 / t.elapsed().as_secs_f64();
    // One large answer.
    let mut s = open(route, up).await;
    let t = Instant::now();
    let n = get(&mut s, &format!("/big/{}", o.bytes), up.port()).await;
    let mbps = n as f64 / t.elapsed().as_secs_f64() / 1e6;
    Row {
        name: route.name.clone(),
        p50: pct(0.5),
        p99: pct(0.99),
        rps,
        mbps,
        injects: route.injects,
        injected_ok: !route.injects || carried == o.requests as u64,
    }
}

fn paddock(
    dir: &Path,
    up: SocketAddr,
    creds: Option<Arc<Credentials>>,
) -> (SocketAddr, paddock_proxy::ProxyHandle, AuditWriter) {
    let rules = vec![
        Rule::parse_target(Action::Allow, &format!("{NAME}:{}", up.port())).unwrap(),
        Rule::parse_target(Action::Allow, "127.0.0.1").unwrap(),
    ];
    let scope = Scope::Sandbox("bench".into());
    let source = RuleSource::fixed(
        rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| StoredRule {
                id: i as i64 + 1,
                scope: scope.clone(),
                source: "user".into(),
                rule,
            })
            .collect(),
    );
    let db = dir.join(format!("audit-{}.db", creds.is_some()));
    let (writer, audit) = AuditWriter::start(Store::open(&db).unwrap()).unwrap();
    let over: HashMap<String, Vec<IpAddr>> =
        HashMap::from([(NAME.to_owned(), vec![IpAddr::from([127, 0, 0, 1])])]);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let handle = paddock_proxy::start(
        ProxyConfig {
            sandbox: "bench".into(),
            rules: source,
            audit,
            resolver: Resolver::with_overrides(over),
            connect_timeout: Duration::from_secs(15),
            credentials: creds,
            upstream: None,
            asks: None,
        },
        vec![paddock_proxy::Listener::Tcp(l)],
        2,
    )
    .unwrap();
    (addr, handle, writer)
}

fn main() {
    let o = opts();
    let tmp = tempfile::tempdir().unwrap();
    let tls_dir = o.tls_dir.clone().unwrap_or_else(|| tmp.path().join("tls"));
    let (ca, cert, key) = tls_files(&tls_dir);
    // SAFETY: set before any other thread of this process exists.
    unsafe { std::env::set_var(TEST_UPSTREAM_CA_ENV, &ca) };
    let sandbox_ca = SandboxCa::load_or_create(&tmp.path().join("sandbox-ca"), "bench").unwrap();
    std::fs::write(tmp.path().join("sandbox-ca.pem"), sandbox_ca.pem()).unwrap();
    let creds = Credentials::new(
        sandbox_ca,
        vec![Binding {
            host: NAME.into(),
            name: "bench".into(),
            put: Put::Header {
                header: HEADER.into(),
                prefix: String::new(),
            },
            placeholder: "paddock-placeholder-bench".into(),
            value: Secret::new(VALUE.into()),
        }],
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let injected = Arc::new(AtomicU64::new(0));
    let up = rt.block_on(upstream(o.upstream_port, &cert, &key, injected.clone()));
    let (tunnel_addr, tunnel_h, tunnel_w) = paddock(tmp.path(), up, None);
    let (mitm_addr, mitm_h, mitm_w) = paddock(tmp.path(), up, Some(Arc::new(creds)));
    let mut routes = vec![
        Route {
            name: "direct".into(),
            proxy: None,
            ca: ca.clone(),
            injects: false,
        },
        Route {
            name: "paddock, opaque tunnel".into(),
            proxy: Some(tunnel_addr),
            ca: ca.clone(),
            injects: false,
        },
        Route {
            name: "paddock, intercepting + injecting".into(),
            proxy: Some(mitm_addr),
            ca: tmp.path().join("sandbox-ca.pem"),
            injects: true,
        },
    ];
    for (name, addr, ca) in &o.peers {
        routes.push(Route {
            name: format!("{name}, intercepting + injecting"),
            proxy: Some(*addr),
            ca: ca.clone(),
            injects: true,
        });
    }
    let rows: Vec<Row> = routes
        .iter()
        .map(|r| rt.block_on(measure(r, up, &o, &injected)))
        .collect();
    tunnel_h.stop();
    mitm_h.stop();
    tunnel_w.close();
    mitm_w.close();
    let direct_p50 = rows[0].p50;
    println!(
        "| route | p50 ms | p99 ms | p50 added ms | requests/s (4 connections) | MB/s (one {} MiB answer) | header injected |",
        o.bytes >> 20
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} | {} |",
            r.name,
            r.p50,
            r.p99,
            r.p50 - direct_p50,
            r.rps,
            r.mbps,
            match (r.injects, r.injected_ok) {
                (false, _) => "–",
                (true, true) => "every request",
                (true, false) => "NO",
            }
        );
    }
    assert!(rows.iter().all(|r| r.injected_ok), "a route did not inject");
}
