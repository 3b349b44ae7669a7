//! TLS interception, only for hosts that have a credential bound to them.
//!
//! The proxy answers the CONNECT, then terminates the client's TLS with a certificate for the
//! CONNECT host signed by the sandbox's own CA (its key stays on the host), checks that the SNI
//! and every request's Host name that same host, connects to the address the policy checked
//! (or through the upstream proxy, [`crate::upstream`]) with TLS verified against the system's
//! roots, and only then writes the credential into the request. An upstream whose certificate
//! does not verify gets no request at all (502). Every other host stays an opaque tunnel.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use paddock_policy::net::{Action, Host, Kind, Target, decide, normalize_path, split_host_port};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::audit::Record;
use crate::body::{Counted, Direction, Tally};
use crate::server::ProxyConfig;
use crate::upstream::Route;

type Body = BoxBody<Bytes, hyper::Error>;

/// A test-only setting of the host user (never of the sandbox): a PEM file of extra roots the
/// proxy trusts for upstreams, for tests against local servers with a test CA.
pub const TEST_UPSTREAM_CA_ENV: &str = "PADDOCK_TEST_UPSTREAM_CA";

/// The sandbox's certificate authority: made once per sandbox, its key kept on the host.
pub struct SandboxCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

impl std::fmt::Debug for SandboxCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SandboxCa")
    }
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn ca_params(sandbox: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Paddock");
    dn.push(
        DnType::CommonName,
        format!("Paddock sandbox CA ({sandbox})"),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl SandboxCa {
    /// The CA in `dir` (`ca.pem`, and `ca.key` readable by its owner only), made on first use.
    pub fn load_or_create(dir: &Path, sandbox: &str) -> std::io::Result<SandboxCa> {
        use std::os::unix::fs::OpenOptionsExt;
        let (pem_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if let (Ok(pem), Ok(key_pem)) = (
            std::fs::read_to_string(&pem_path),
            std::fs::read_to_string(&key_path),
        ) {
            let key = KeyPair::from_pem(&key_pem).map_err(io_err)?;
            // The same subject and key as the stored certificate: what signing needs.
            let cert = ca_params(sandbox).self_signed(&key).map_err(io_err)?;
            return Ok(SandboxCa { cert, key, pem });
        }
        std::fs::create_dir_all(dir)?;
        let key = KeyPair::generate().map_err(io_err)?;
        let cert = ca_params(sandbox).self_signed(&key).map_err(io_err)?;
        let pem = cert.pem();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)?;
        std::io::Write::write_all(&mut f, key.serialize_pem().as_bytes())?;
        std::fs::write(&pem_path, &pem)?;
        Ok(SandboxCa { cert, key, pem })
    }

    /// The CA of `sandbox` from its private key, as [`SandboxCa::key_pem`] gave it (the
    /// certificate is made again: same subject, same key, so what it signs chains to the one
    /// the sandbox trusts).
    pub fn from_key_pem(sandbox: &str, key_pem: &str) -> std::io::Result<SandboxCa> {
        let key = KeyPair::from_pem(key_pem).map_err(io_err)?;
        let cert = ca_params(sandbox).self_signed(&key).map_err(io_err)?;
        let pem = cert.pem();
        Ok(SandboxCa { cert, key, pem })
    }

    /// The CA's private key (PEM), for the proxy process.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The CA certificate (what the sandbox trusts).
    pub fn pem(&self) -> &str {
        &self.pem
    }
}

/// A credential's value: zeroed when dropped, never printed.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: String) -> Secret {
        Secret(zeroize::Zeroizing::new(value))
    }

    /// The value, to write into a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// How a bound credential goes into a request to its host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "put", rename_all = "snake_case", deny_unknown_fields)]
pub enum Put {
    /// The header is set to `prefix` + the value, replacing what the client sent.
    Header {
        /// The header's name.
        header: String,
        /// Written before the value (`Bearer `).
        prefix: String,
    },
    /// HTTP basic authentication with `user` and the value as the password.
    Basic {
        /// The user name.
        user: String,
    },
    /// Only the placeholder is replaced, wherever it appears in the request head.
    Placeholder,
}

/// One credential bound to one host: all the proxy gets of a secret (the supervisor reads the
/// secrets store and hands over these plain bindings).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The host (exact, lower case).
    pub host: String,
    /// The secret's name (for the audit log).
    pub name: String,
    /// How it goes in.
    pub put: Put,
    /// What the sandbox has instead of the value.
    pub placeholder: String,
    /// The value.
    pub value: Secret,
}

/// The credentials of one sandbox and what interception needs.
pub struct Credentials {
    ca: SandboxCa,
    leaf_key: KeyPair,
    by_host: HashMap<String, Vec<Binding>>,
    /// How upstreams are verified: made at the first intercepted connection (reading the
    /// system's roots takes milliseconds every sandbox start would pay, and most never
    /// intercept); `extra_roots` trusted besides.
    upstream: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
    extra_roots: Vec<CertificateDer<'static>>,
    client: rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
    servers: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
    /// Hosts whose refusal a client lately would not take over TLS (it does not trust the
    /// sandbox's CA), with when: their refusals go back to a 403 to the CONNECT for a while.
    untrusted: Mutex<Vec<(String, std::time::Instant)>>,
}

/// How long a host's refusals stay a 403 to the CONNECT after a client refused the
/// explaining certificate.
const UNTRUSTED_FOR: Duration = Duration::from_secs(600);
/// How many such hosts are remembered (the oldest is forgotten first).
const UNTRUSTED_MAX: usize = 256;

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("hosts", &self.by_host.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Credentials {
    /// Binds `bindings` for interception with `ca`. Upstreams are verified against the
    /// system's roots (plus [`TEST_UPSTREAM_CA_ENV`] when the host user sets it).
    pub fn new(ca: SandboxCa, bindings: Vec<Binding>) -> std::io::Result<Credentials> {
        let extra = match std::env::var(TEST_UPSTREAM_CA_ENV) {
            Ok(path) => Some(std::fs::read(&path)?),
            Err(_) => None,
        };
        Credentials::with_extra_roots(ca, bindings, extra.as_deref())
    }

    /// As [`Credentials::new`], with the certificates of `extra_pem` trusted as roots too (and
    /// no look at the environment): for tests against local servers with a test CA.
    pub fn with_extra_roots(
        ca: SandboxCa,
        bindings: Vec<Binding>,
        extra_pem: Option<&[u8]>,
    ) -> std::io::Result<Credentials> {
        let extra_roots = rustls_pemfile_certs(extra_pem.unwrap_or_default());
        // Checked now, so a bad extra root fails the start rather than the first request.
        let mut check = rustls::RootCertStore::empty();
        for c in &extra_roots {
            check.add(c.clone()).map_err(io_err)?;
        }
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(io_err)?;
        let mut by_host: HashMap<String, Vec<Binding>> = HashMap::new();
        for b in bindings {
            by_host
                .entry(b.host.to_ascii_lowercase())
                .or_default()
                .push(b);
        }
        Ok(Credentials {
            ca,
            leaf_key: KeyPair::generate().map_err(io_err)?,
            by_host,
            upstream: std::sync::OnceLock::new(),
            extra_roots,
            client,
            servers: Mutex::new(HashMap::new()),
            untrusted: Mutex::new(Vec::new()),
        })
    }

    /// The client configuration upstreams are verified with: the system's roots and the extra
    /// ones.
    fn upstream(&self) -> Arc<rustls::ClientConfig> {
        self.upstream
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
                for c in &self.extra_roots {
                    let _ = roots.add(c.clone());
                }
                let mut cfg = self
                    .client
                    .clone()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                Arc::new(cfg)
            })
            .clone()
    }

    /// Whether a refusal of a tunnel to `host` is explained over TLS: not when a client
    /// refused the explaining certificate for it in the last [`UNTRUSTED_FOR`].
    pub fn explains(&self, host: &str) -> bool {
        let mut list = self.untrusted.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|(_, at)| at.elapsed() < UNTRUSTED_FOR);
        !list.iter().any(|(h, _)| h == host)
    }

    fn not_trusted(&self, host: &str) {
        let mut list = self.untrusted.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|(h, _)| h != host);
        if list.len() >= UNTRUSTED_MAX {
            list.remove(0);
        }
        list.push((host.to_owned(), std::time::Instant::now()));
    }

    /// The credentials bound to `host`, if any (then its tunnels are intercepted).
    pub fn bound(&self, host: &str) -> Option<&[Binding]> {
        self.by_host.get(host).map(Vec::as_slice)
    }

    /// A TLS server configuration presenting a certificate for `host`.
    fn server_for(&self, host: &str) -> std::io::Result<Arc<rustls::ServerConfig>> {
        let mut cache = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(host) {
            return Ok(c.clone());
        }
        let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(io_err)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = params
            .signed_by(&self.leaf_key, &self.ca.cert, &self.ca.key)
            .map_err(io_err)?;
        let chain = vec![leaf.der().clone(), self.ca.cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let provider = provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(io_err)?;
        let resolver = OnlyHost {
            host: host.to_owned(),
            key: Arc::new(rustls::sign::CertifiedKey::new(chain, signing)),
        };
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io_err)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        cache.insert(host.to_owned(), cfg.clone());
        Ok(cfg)
    }
}

/// Presents the certificate only to a client that asks for its host by name (SNI): a client
/// that names another host (domain fronting) or none fails the handshake.
#[derive(Debug)]
struct OnlyHost {
    host: String,
    key: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for OnlyHost {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        (hello.server_name() == Some(self.host.as_str())).then(|| self.key.clone())
    }
}

/// The certificates in a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// One intercepted tunnel.
struct Tunnel {
    cfg: Arc<ProxyConfig>,
    creds: Arc<Credentials>,
    client: String,
    host: String,
    port: u16,
    /// Where its connections go (the checked addresses, or the upstream proxy).
    route: Route,
    rule: String,
    /// Connections to the host between requests. An HTTP/2 client sends requests at once on
    /// one tunnel; each goes on a connection that is free (HTTP/1.1 carries one exchange at a
    /// time), so a long response (a model's event stream) holds up no other request.
    idle: std::sync::Mutex<Vec<Upstream>>,
}

/// A connection to the tunnel's host.
type Upstream = hyper::client::conn::http1::SendRequest<Body>;

/// Idle connections a tunnel keeps (more are opened while requests overlap, then closed).
const IDLE_KEPT: usize = 4;

fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut r = Response::new(
        http_body_util::Full::new(Bytes::from(msg))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Tunnel {
    fn audit(&self, method: &str, path: Option<&str>, deny: bool, reason: String, status: u16) {
        let rule = if deny {
            "credentials".into()
        } else {
            self.rule.clone()
        };
        self.audit_rule(method, path, deny, rule, reason, Some(status));
    }

    /// Records a decision; `status` is `None` when the exchange's end fills it in (see
    /// [`Tally`]).
    fn audit_rule(
        &self,
        method: &str,
        path: Option<&str>,
        deny: bool,
        rule: String,
        reason: String,
        status: Option<u16>,
    ) -> crate::audit::Entry {
        self.cfg.audit.record(Record {
            sandbox: self.cfg.sandbox.clone(),
            client: self.client.clone(),
            method: method.into(),
            host: self.host.clone(),
            port: Some(self.port),
            path: path.map(str::to_owned),
            action: if deny { "deny" } else { "allow" },
            rule,
            reason,
            status,
        })
    }

    /// The authority a request names (Host header, or the absolute URI's), as host and port.
    /// The host and port the request names: its authority (an absolute URI, or HTTP/2's
    /// `:authority`) and every `Host` header, which must all agree (a `Host` that differs from
    /// the authority would route the request elsewhere behind a shared front).
    fn named(&self, req: &Request<Incoming>) -> Result<(Host, u16), String> {
        let mut names: Vec<String> = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .into_iter()
            .collect();
        for v in req.headers().get_all(header::HOST) {
            names.push(
                v.to_str()
                    .map_err(|_| "a Host header is not text")?
                    .to_owned(),
            );
        }
        let mut found: Option<(Host, u16)> = None;
        for raw in &names {
            let (h, p) = split_host_port(raw).map_err(|e| e.to_string())?;
            let named = (Host::parse(h).map_err(|e| e.to_string())?, p.unwrap_or(443));
            match &found {
                Some(f) if *f != named => {
                    return Err(format!(
                        "the request names both {}:{} and {}:{}",
                        f.0, f.1, named.0, named.1
                    ));
                }
                Some(_) => {}
                None => found = Some(named),
            }
        }
        found.ok_or_else(|| "the request has no Host header".to_owned())
    }

    /// A free connection to the host: an idle one that is ready, or a new one.
    async fn free_upstream(&self) -> Result<Upstream, (StatusCode, String)> {
        let reused = {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            idle.retain(|s| !s.is_closed());
            idle.iter()
                .position(Upstream::is_ready)
                .map(|i| idle.swap_remove(i))
        };
        match reused {
            Some(s) => Ok(s),
            None => self.connect().await,
        }
    }

    /// Keeps `sender` for a later request, once its exchange is done (it is taken only when
    /// ready again).
    fn keep(&self, sender: Upstream) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.retain(|s| !s.is_closed());
        if !sender.is_closed() && idle.len() < IDLE_KEPT {
            idle.push(sender);
        }
    }

    /// A new connection to the host (TCP to the checked addresses or a tunnel through the
    /// upstream proxy, TLS verified).
    async fn connect(&self) -> Result<Upstream, (StatusCode, String)> {
        let addrs = match &self.route {
            Route::Direct(addrs) => addrs,
            Route::Via(p) => {
                let host = Host::parse(&self.host).map_err(|e| {
                    (
                        StatusCode::BAD_GATEWAY,
                        format!("paddock: {}: {e}\n", self.host),
                    )
                })?;
                let tcp = crate::upstream::tunnel(&self.cfg, p, &host, self.port)
                    .await
                    .map_err(|e| (StatusCode::BAD_GATEWAY, format!("paddock: {e}\n")))?;
                return self.over_tls(tcp).await;
            }
        };
        let mut tcp = None;
        let mut last = None;
        for a in addrs {
            match tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => last = Some("timed out".into()),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            (
                StatusCode::BAD_GATEWAY,
                format!(
                    "paddock: cannot connect to {}:{}: {}\n",
                    self.host,
                    self.port,
                    last.unwrap_or_default()
                ),
            )
        })?;
        let _ = tcp.set_nodelay(true);
        self.over_tls(tcp).await
    }

    /// TLS to the host over `tcp`, verified, and HTTP/1.1 over that.
    async fn over_tls(&self, tcp: TcpStream) -> Result<Upstream, (StatusCode, String)> {
        let name = ServerName::try_from(self.host.clone()).map_err(|e| {
            (
                StatusCode::BAD_GATEWAY,
                format!("paddock: {}: {e}\n", self.host),
            )
        })?;
        let tls = tokio_rustls::TlsConnector::from(self.creds.upstream())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                (
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "paddock: the TLS certificate of {} could not be verified ({e}); nothing was sent to it\n",
                        self.host
                    ),
                )
            })?;
        // An answer that ends with its connection ends there, close_notify or not.
        let tls = crate::tls_end::EndAtClose::new(tls);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| {
                (
                    StatusCode::BAD_GATEWAY,
                    format!("paddock: {}: {e}\n", self.host),
                )
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = std::time::Instant::now();
        let method = req.method().as_str().to_owned();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        // The request must name the host the tunnel was opened (and the certificate made) for.
        match self.named(&req) {
            Ok((h, p)) if h.to_string() == self.host && p == self.port => {}
            Ok((h, p)) => {
                let why = format!(
                    "the request names {h}:{p} inside a tunnel to {}:{}; nothing was sent",
                    self.host, self.port
                );
                self.audit(&method, Some(&path), true, why.clone(), 421);
                return text(StatusCode::MISDIRECTED_REQUEST, format!("paddock: {why}\n"));
            }
            Err(e) => {
                let why = format!("bad request authority: {e}");
                self.audit(&method, Some(&path), true, why.clone(), 400);
                return text(StatusCode::BAD_REQUEST, format!("paddock: {why}\n"));
            }
        }
        // Each request is decided on its own, now that its method and path are visible.
        let Ok(host) = Host::parse(&self.host) else {
            return text(StatusCode::BAD_GATEWAY, "paddock: bad host\n".into());
        };
        let target = Target {
            host,
            port: self.port,
            kind: Kind::Https {
                method: method.clone(),
                path: normalize_path(req.uri().path()),
            },
        };
        let mut d = decide(&self.cfg.rules.current(), &target);
        let asked = d.action == Action::Ask;
        if asked {
            d = match crate::server::hold(&self.cfg, &target, &d, &self.client).await {
                crate::server::Held::Once(d) | crate::server::Held::Denied(d) => d,
                crate::server::Held::Granted(account) => crate::server::after_grant(
                    decide(&self.cfg.rules.current(), &target),
                    &account,
                    false,
                ),
            };
        }
        let rule = d
            .rule
            .map(|r| r.to_string())
            .unwrap_or_else(|| "default".into());
        if d.action != Action::Allow {
            self.audit_rule(
                &method,
                Some(&path),
                true,
                rule,
                d.reason.clone(),
                Some(403),
            );
            let sb = &self.cfg.sandbox;
            let fix = match d.rule {
                Some(id) if !asked => {
                    format!("paddock policy rm {id}   # an explicit deny rule decided")
                }
                _ => format!(
                    "paddock policy allow {}{} --method {method} --path '{}' --sandbox {sb}",
                    target.host,
                    if self.port == 443 {
                        String::new()
                    } else {
                        format!(" --port {}", self.port)
                    },
                    req.uri().path()
                ),
            };
            return crate::server::forbidden(
                &d.header(),
                format!(
                    "paddock: {method} https://{}{path} denied: {}\nto allow it: {fix}\n",
                    target.host.authority(self.port),
                    d.reason
                ),
                &fix,
            );
        }
        let mut sender = match self.free_upstream().await {
            Ok(s) => s,
            Err((status, msg)) => {
                self.audit(
                    &method,
                    Some(&path),
                    true,
                    msg.trim().to_owned(),
                    status.as_u16(),
                );
                return text(status, msg);
            }
        };
        let (mut parts, body) = req.into_parts();
        let bound = self.creds.bound(&self.host).unwrap_or(&[]);
        let mut used: Vec<&str> = Vec::new();
        for b in bound {
            if inject(&mut parts, b) {
                used.push(&b.name);
            }
        }
        // Origin form and HTTP/1.1 upstream (the client may speak HTTP/2), with the one Host
        // that was checked.
        parts.uri = Uri::try_from(path.as_str()).unwrap_or_else(|_| Uri::from_static("/"));
        parts.version = http::Version::HTTP_11;
        let authority = if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        if let Ok(v) = HeaderValue::from_str(&authority) {
            parts.headers.insert(header::HOST, v);
        }
        // Recorded now, its bytes each way, duration and status filled in when the exchange ends.
        let reason = if used.is_empty() {
            format!("{}; intercepted, no credential applied", d.reason)
        } else {
            format!("{}; credential {} injected", d.reason, used.join(", "))
        };
        let entry = self.audit_rule(&method, Some(&path), false, rule, reason, None);
        let tally = Tally::new(self.cfg.audit.clone(), entry, started);
        let set_status = |code: u16| {
            if let Ok(mut s) = tally.status.lock() {
                *s = Some(code);
            }
        };
        let upstream_req = Request::from_parts(
            parts,
            Counted::new(body, Some(tally.clone()), Direction::Up).boxed(),
        );
        let sent = match sender.ready().await {
            Ok(()) => sender.send_request(upstream_req).await,
            Err(e) => Err(e),
        };
        self.keep(sender);
        match sent {
            Ok(resp) => {
                set_status(resp.status().as_u16());
                resp.map(|b| Counted::new(b, Some(tally), Direction::Down).boxed())
            }
            Err(e) => {
                set_status(502);
                text(
                    StatusCode::BAD_GATEWAY,
                    format!("paddock: {}: {e}\n", self.host),
                )
            }
        }
    }
}

/// Writes credential `b` into the request head; true when the request now carries it.
fn inject(parts: &mut http::request::Parts, b: &Binding) -> bool {
    let mut carried = false;
    // The placeholder, wherever the client put it (headers, path, query).
    let value = b.value.expose();
    for v in parts.headers.values_mut() {
        if let Ok(s) = v.to_str()
            && s.contains(&b.placeholder)
            && let Ok(nv) = HeaderValue::from_str(&s.replace(&b.placeholder, value))
        {
            *v = nv;
            carried = true;
        }
    }
    if let Some(pq) = parts.uri.path_and_query()
        && pq.as_str().contains(&b.placeholder)
        && let Ok(u) = Uri::try_from(pq.as_str().replace(&b.placeholder, value))
    {
        parts.uri = u;
        carried = true;
    }
    match &b.put {
        Put::Header { header, prefix } => {
            if let (Ok(name), Ok(v)) = (
                HeaderName::try_from(header.as_str()),
                HeaderValue::from_str(&format!("{prefix}{value}")),
            ) {
                parts.headers.remove(&name);
                parts.headers.insert(name, v);
                carried = true;
            }
        }
        Put::Basic { user } => {
            let token = base64(format!("{user}:{value}").as_bytes());
            if let Ok(v) = HeaderValue::from_str(&format!("Basic {token}")) {
                parts.headers.insert(header::AUTHORIZATION, v);
                carried = true;
            }
        }
        Put::Placeholder => {}
    }
    carried
}

pub(crate) fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                out.push(T[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Serves a refused tunnel: TLS with the client under the sandbox's CA for `host`, and every
/// request inside answered by `answer(method, path)` (the 403 that explains the refusal);
/// nothing goes upstream. A client that refuses the certificate makes `host`'s next refusals a
/// 403 to the CONNECT ([`Credentials::explains`]).
pub(crate) async fn explain<S, F>(creds: Arc<Credentials>, client_io: S, host: String, answer: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(&str, &str) -> Response<Body> + Send + Sync + 'static,
{
    let Ok(server) = creds.server_for(&host) else {
        return;
    };
    let accepted = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_rustls::TlsAcceptor::from(server).accept(client_io),
    )
    .await;
    let tls = match accepted {
        Ok(Ok(t)) => t,
        Ok(Err(_)) => return creds.not_trusted(&host),
        Err(_) => return,
    };
    let answer = Arc::new(answer);
    let svc = service_fn(move |req: Request<Incoming>| {
        let answer = answer.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into());
            Ok::<_, std::convert::Infallible>(answer(req.method().as_str(), &path))
        }
    });
    let served = tokio::time::timeout(Duration::from_secs(30), async move {
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        } else {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        }
    });
    let _ = served.await;
}

/// Serves one intercepted tunnel: TLS with the client, then each request on to the host.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<S>(
    cfg: Arc<ProxyConfig>,
    creds: Arc<Credentials>,
    client_io: S,
    client: String,
    host: String,
    port: u16,
    route: Route,
    rule: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tunnel = Arc::new(Tunnel {
        cfg,
        creds,
        client,
        host,
        port,
        route,
        rule,
        idle: std::sync::Mutex::new(Vec::new()),
    });
    let server = match tunnel.creds.server_for(&tunnel.host) {
        Ok(s) => s,
        Err(e) => {
            tunnel.audit(
                "CONNECT",
                None,
                true,
                format!("cannot make a certificate: {e}"),
                502,
            );
            return;
        }
    };
    let accepted = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_rustls::TlsAcceptor::from(server).accept(client_io),
    )
    .await;
    let tls = match accepted {
        Ok(Ok(t)) => t,
        _ => return,
    };
    // The client must ask for the host the tunnel is for (SNI), or it gets nothing.
    let sni = tls.get_ref().1.server_name().map(str::to_owned);
    if sni.as_deref() != Some(tunnel.host.as_str()) {
        tunnel.audit(
            "CONNECT",
            None,
            true,
            format!(
                "TLS server name {:?} differs from the CONNECT target {}; nothing was sent",
                sni.unwrap_or_default(),
                tunnel.host
            ),
            421,
        );
        return;
    }
    let t = tunnel.clone();
    let svc = service_fn(move |req| {
        let t = t.clone();
        async move { Ok::<_, std::convert::Infallible>(t.handle(req).await) }
    });
    // HTTP/2 when the client asked for it (ALPN); each stream is a request decided on its own.
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), svc)
            .await;
    } else {
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(tls), svc)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"x-access-token:abc"), "eC1hY2Nlc3MtdG9rZW46YWJj");
    }

    #[test]
    fn injection_sets_headers_and_replaces_placeholders() {
        let b = Binding {
            host: "api.openai.com".into(),
            name: "openai".into(),
            put: Put::Header {
                header: "authorization".into(),
                prefix: "Bearer ".into(),
            },
            value: Secret::new("sk-real".into()),
            placeholder: "PH-1".into(),
        };
        let (mut parts, _) = Request::builder()
            .uri("/v1/x?key=PH-1")
            .header("authorization", "Bearer PH-1")
            .header("x-other", "keep PH-1 here")
            .body(())
            .unwrap()
            .into_parts();
        assert!(inject(&mut parts, &b));
        assert_eq!(parts.headers["authorization"], "Bearer sk-real");
        assert_eq!(parts.headers.get_all("authorization").iter().count(), 1);
        assert_eq!(parts.headers["x-other"], "keep sk-real here");
        assert_eq!(parts.uri, "/v1/x?key=sk-real");
        let none = Binding {
            put: Put::Placeholder,
            ..b
        };
        let (mut parts, _) = Request::builder().uri("/").body(()).unwrap().into_parts();
        assert!(!inject(&mut parts, &none));
    }
}
