//! The proxy service: CONNECT tunnels, plain HTTP forwarding and WebSocket upgrades, each
//! request decided on its own.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use paddock_policy::net::{
    Action, Decision, Host, Kind, ProxyUrl, StoredRule, Target, Tunnel, decide, decide_address,
    normalize_path, split_host_port, tunnel,
};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Mutex as AsyncMutex;

use crate::audit::{AuditSink, Record};
use crate::body::{Counted, CountedIo, Direction, Tally};
use crate::guard::Guarded;
use crate::resolve::Resolver;
use crate::rules::RuleSource;
use crate::splice::SpliceSocket;
use crate::upstream::{Route, UpstreamFailure};

type Body = BoxBody<Bytes, hyper::Error>;

/// The header every answer the proxy makes itself carries.
pub const DECISION_HEADER: &str = "x-paddock-decision";

/// What one proxy serves.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The sandbox these connections come from (for rules, audit and messages).
    pub sandbox: String,
    /// Its rules.
    pub rules: RuleSource,
    /// Where decisions go.
    pub audit: AuditSink,
    /// Name resolution.
    pub resolver: Resolver,
    /// How long to wait for an upstream connection.
    pub connect_timeout: Duration,
    /// Credentials bound to hosts: tunnels to those hosts are intercepted to inject them.
    pub credentials: Option<Arc<crate::intercept::Credentials>>,
    /// The host network's own proxy, which allowed connections go through (but those its
    /// `NO_PROXY` names).
    pub upstream: Option<paddock_policy::net::UpstreamProxy>,
    /// Who requests an `ask` rule holds are asked about (none: they are denied).
    pub asks: Option<crate::ask::Asker>,
}

/// How a held request came out.
pub(crate) enum Held {
    /// Allowed this once: the decision to go on with.
    Once(Decision),
    /// Allowed with a rule the approval made: decide again with the rules as they are now
    /// (the rule may cover less than the waiting request); the words say who approved.
    Granted(String),
    /// Denied (by the user, the timeout, or a bound): the decision to answer with.
    Denied(Decision),
}

/// Holds the request `target` an ask rule decided (`d`) until it is answered.
pub(crate) async fn hold(cfg: &ProxyConfig, target: &Target, d: &Decision, client: &str) -> Held {
    let started = Instant::now();
    let verdict = match &cfg.asks {
        Some(asks) => {
            asks.ask(crate::ask::Question::of(target, d.rule, client))
                .await
        }
        None => crate::ask::Verdict {
            allow: false,
            request: None,
            by: "this proxy, which has nobody to ask".into(),
            rule: None,
        },
    };
    let account = verdict.account(started.elapsed());
    match (verdict.allow, verdict.rule) {
        (false, _) => Held::Denied(Decision {
            action: Action::Deny,
            rule: d.rule,
            reason: format!("{}; {account}", d.reason),
        }),
        (true, None) => Held::Once(Decision {
            action: Action::Allow,
            rule: d.rule,
            reason: format!("{}; {account}, this once", d.reason),
        }),
        (true, Some(rule)) => Held::Granted(format!("{account} with rule {rule}")),
    }
}

/// The decision after an approval that made a rule: `d` (decided again with the new rules)
/// when it allows, else a denial saying the rule does not cover the request.
pub(crate) fn after_grant(d: Decision, account: &str, intercepts: bool) -> Decision {
    match d.action {
        Action::Allow => Decision {
            reason: format!("{}; {account}", d.reason),
            ..d
        },
        _ if intercepts => d,
        _ => Decision {
            action: Action::Deny,
            rule: d.rule,
            reason: format!("{account}, which does not cover this request: {}", d.reason),
        },
    }
}

/// What the proxy saw of a request, for the audit log.
#[derive(Clone, Copy)]
struct Seen<'a> {
    method: &'a str,
    host: &'a str,
    port: Option<u16>,
    path: Option<&'a str>,
}

struct Conn {
    cfg: Arc<ProxyConfig>,
    client: String,
    upstream: AsyncMutex<Option<Pooled>>,
}

/// One kept-alive upstream connection, reused by the same client connection for the same
/// canonical destination only.
struct Pooled {
    host: Host,
    port: u16,
    /// The address checked for it (none for a name the upstream proxy resolves).
    addr: Option<SocketAddr>,
    /// It goes to the upstream proxy.
    via: bool,
    sender: hyper::client::conn::http1::SendRequest<Body>,
}

/// Serves one accepted client connection until it closes.
pub async fn serve_connection<S: SpliceSocket>(cfg: Arc<ProxyConfig>, stream: S, client: String) {
    stream.accepted();
    let guarded = Guarded::new(stream);
    let violation = guarded.violation.clone();
    let conn = Arc::new(Conn {
        cfg: cfg.clone(),
        client: client.clone(),
        upstream: AsyncMutex::new(None),
    });
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(&conn, req).await) }
    });
    let result = http1::Builder::new()
        .half_close(false)
        .serve_connection(TokioIo::new(guarded), svc)
        .with_upgrades()
        .await;
    let found = violation.lock().ok().and_then(|v| *v);
    let reason = match (found, &result) {
        (Some(v), _) => Some(v.to_string()),
        (None, Err(e)) if e.is_parse() || e.is_parse_too_large() => {
            Some(format!("malformed request: {e}"))
        }
        _ => None,
    };
    if let Some(reason) = reason {
        cfg.audit.record(Record {
            sandbox: cfg.sandbox.clone(),
            client,
            method: "-".into(),
            host: "-".into(),
            port: None,
            path: None,
            action: "deny",
            rule: "protocol".into(),
            reason,
            status: Some(400),
        });
    }
}

async fn handle(conn: &Conn, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        connect(conn, req).await
    } else {
        forward(conn, req).await
    }
}

fn text(status: StatusCode, decision: &str, msg: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(decision) {
        h.insert(HeaderName::from_static(DECISION_HEADER), v);
    }
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A 403 with `msg` as its body, and a reason phrase (HTTP/1.1) that names the fix: many
/// clients print the status line's phrase, not the body.
pub(crate) fn forbidden(decision: &str, msg: String, fix: &str) -> Response<Body> {
    let mut r = text(StatusCode::FORBIDDEN, decision, msg);
    let fix = fix.split("   #").next().unwrap_or(fix).trim();
    let rule = decision.strip_prefix("deny; ").unwrap_or(decision);
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(format!(
        "Forbidden by Paddock ({rule}); to allow it: {fix}"
    )) {
        r.extensions_mut().insert(phrase);
    }
    r
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

impl Conn {
    fn record(
        &self,
        seen: Seen<'_>,
        d: &Decision,
        rule: Option<&str>,
        status: u16,
    ) -> crate::audit::Entry {
        self.cfg.audit.record(Record {
            sandbox: self.cfg.sandbox.clone(),
            client: self.client.clone(),
            method: seen.method.into(),
            host: seen.host.into(),
            port: seen.port,
            path: seen.path.map(Into::into),
            action: match d.action {
                Action::Allow => "allow",
                Action::Ask | Action::Deny => "deny",
            },
            rule: rule.map(Into::into).unwrap_or_else(|| {
                d.rule
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "default".into())
            }),
            reason: d.reason.clone(),
            status: (status != 0).then_some(status),
        })
    }

    /// A 400 for a request the proxy cannot read, audited.
    fn bad_request(
        &self,
        method: &str,
        host: &str,
        path: Option<&str>,
        why: String,
    ) -> Response<Body> {
        let d = Decision {
            action: Action::Deny,
            rule: None,
            reason: why.clone(),
        };
        self.record(
            Seen {
                method,
                host,
                port: None,
                path,
            },
            &d,
            Some("protocol"),
            400,
        );
        text(
            StatusCode::BAD_REQUEST,
            "deny; rule=protocol",
            format!("paddock: bad request: {why}\n"),
        )
    }

    /// A 502 for an allowed destination that could not be reached, audited.
    fn unreachable(&self, seen: Seen<'_>, d: &Decision, e: &std::io::Error) -> Response<Body> {
        self.record(seen, d, None, 502);
        text(
            StatusCode::BAD_GATEWAY,
            &d.header(),
            format!(
                "paddock: cannot connect to {}:{}: {e}\n",
                seen.host,
                seen.port.unwrap_or_default()
            ),
        )
    }

    /// A 502 for an allowed destination the upstream proxy did not carry, audited with why.
    fn upstream_failed(&self, seen: Seen<'_>, d: &Decision, e: &UpstreamFailure) -> Response<Body> {
        let noted = Decision {
            reason: format!("{}; {e}", d.reason),
            ..d.clone()
        };
        self.record(seen, &noted, None, 502);
        text(
            StatusCode::BAD_GATEWAY,
            &d.header(),
            format!("paddock: {e}\n"),
        )
    }

    /// Where an allowed `target` goes: through `via`, or to its checked addresses. An
    /// address target is checked either way; a name is resolved only when it goes direct
    /// (the upstream proxy resolves it). `Err` is the audited answer to send instead.
    /// `connect`: the CONNECT request, whose refusal is explained over TLS ([`Conn::refused`]).
    async fn route(
        &self,
        rules: &[StoredRule],
        method: &str,
        target: &Target,
        path: Option<&str>,
        via: Option<ProxyUrl>,
        connect: Option<&mut Request<Incoming>>,
    ) -> Result<Route, Response<Body>> {
        if let Some(p) = &via
            && target.host.ip().is_none()
        {
            return Ok(Route::Via(p.clone()));
        }
        let addrs = self.addresses(rules, method, target, path, connect).await?;
        Ok(match via {
            Some(p) => Route::Via(p),
            None => Route::Direct(addrs),
        })
    }

    /// What a denial of `target` says: the `x-paddock-decision` header, and the command that
    /// would allow it.
    fn denial(&self, target: &Target, d: &Decision, rule: Option<&str>) -> (String, String) {
        let sb = &self.cfg.sandbox;
        let port = if target.port == target.kind.default_port() {
            String::new()
        } else {
            format!(" --port {}", target.port)
        };
        let fix = match (rule, d.rule) {
            (Some("ask"), _) => format!(
                "paddock policy allow {}{port} --sandbox {sb}   # or approve it when it is asked again",
                target.host
            ),
            (Some("address"), _) => match target.host.ip() {
                Some(ip) => format!(
                    "paddock policy allow {ip} --port {} --sandbox {sb}",
                    target.port
                ),
                None => format!(
                    "paddock policy allow {} --port {} --sandbox {sb}   # plus the address range it resolves to",
                    target.host, target.port
                ),
            },
            (_, Some(id)) => format!("paddock policy rm {id}   # an explicit deny rule decided"),
            (_, None) => format!("paddock policy allow {}{port} --sandbox {sb}", target.host),
        };
        let header = match rule {
            Some(r) => format!("deny; rule={r}"),
            None => d.header(),
        };
        (header, fix)
    }

    /// A 403 that says which rule decided and how to change it, audited.
    fn denied(
        &self,
        method: &str,
        target: &Target,
        path: Option<&str>,
        d: &Decision,
        rule: Option<&str>,
    ) -> Response<Body> {
        let host = target.host.to_string();
        self.record(
            Seen {
                method,
                host: &host,
                port: Some(target.port),
                path,
            },
            d,
            rule,
            403,
        );
        let (header, fix) = self.denial(target, d, rule);
        forbidden(
            &header,
            format!(
                "paddock: {} {}:{} denied: {}\nto allow it: {fix}\n",
                method, target.host, target.port, d.reason
            ),
            &fix,
        )
    }

    /// Refuses a CONNECT, audited. With the sandbox's CA, and unless a client refused its
    /// certificate for this host lately, the tunnel is opened to a TLS session under that CA
    /// whose every request is answered with the 403 that explains the refusal (curl and most
    /// clients print that, where a refused CONNECT shows them only a status); else a 403 to the
    /// CONNECT, whose status line's phrase says what to do. An HTTP/1.0 CONNECT (Python's
    /// `http.client`: pip, requests, urllib) gets that 403 too: those clients print a refused
    /// CONNECT's status line, and pip would print nothing of a 403 from an index.
    fn refused(
        &self,
        req: &mut Request<Incoming>,
        target: &Target,
        d: &Decision,
        rule: Option<&str>,
    ) -> Response<Body> {
        let host = target.host.to_string();
        let creds = match &self.cfg.credentials {
            Some(c) if c.explains(&host) && req.version() != Version::HTTP_10 => c.clone(),
            _ => return self.denied("CONNECT", target, None, d, rule),
        };
        self.record(
            Seen {
                method: "CONNECT",
                host: &host,
                port: Some(target.port),
                path: None,
            },
            d,
            rule,
            403,
        );
        let (header, fix) = self.denial(target, d, rule);
        let on_upgrade = hyper::upgrade::on(req);
        let (reason, authority) = (d.reason.clone(), target.host.authority(target.port));
        let answer = move |method: &str, path: &str| {
            forbidden(
                &header,
                format!(
                    "paddock: {method} https://{authority}{path} denied: {reason}\nto allow it: {fix}\n"
                ),
                &fix,
            )
        };
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                crate::intercept::explain(creds, TokioIo::new(upgraded), host, answer).await;
            }
        });
        Response::new(empty())
    }

    /// Resolves an allowed target and picks the addresses the rules allow, in order. `Err` is
    /// the audited answer to send instead.
    async fn addresses(
        &self,
        rules: &[StoredRule],
        method: &str,
        target: &Target,
        path: Option<&str>,
        connect: Option<&mut Request<Incoming>>,
    ) -> Result<Vec<SocketAddr>, Response<Body>> {
        let ips: Vec<IpAddr> = match self.cfg.resolver.resolve(&target.host, target.port).await {
            Ok(a) => a,
            Err(e) => {
                // Not a decision of the rules, which allowed the name: a failure, logged and
                // answered as one.
                let why = format!("cannot resolve {}: {e}", target.host);
                self.cfg.audit.record(Record {
                    sandbox: self.cfg.sandbox.clone(),
                    client: self.client.clone(),
                    method: method.into(),
                    host: target.host.to_string(),
                    port: Some(target.port),
                    path: path.map(Into::into),
                    action: "fail",
                    rule: "resolve".into(),
                    reason: why.clone(),
                    status: Some(502),
                });
                let mut r = text(
                    StatusCode::BAD_GATEWAY,
                    "fail; rule=resolve",
                    format!("paddock: {why} (the rules allow it; the name does not resolve)\n"),
                );
                if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(format!(
                    "Bad Gateway: Paddock cannot resolve {}",
                    target.host
                )) {
                    r.extensions_mut().insert(phrase);
                }
                return Err(r);
            }
        };
        let mut first_refusal = None;
        let mut ok = Vec::new();
        for ip in ips {
            let d = decide_address(rules, Some(&target.host), ip, target.port, &target.kind);
            match d.action {
                Action::Allow => ok.push(SocketAddr::new(ip, target.port)),
                Action::Ask | Action::Deny => {
                    first_refusal.get_or_insert(d);
                }
            }
        }
        match (ok.is_empty(), first_refusal) {
            (false, _) => Ok(ok),
            (true, Some(d)) => Err(match connect {
                Some(req) => self.refused(req, target, &d, Some("address")),
                None => self.denied(method, target, path, &d, Some("address")),
            }),
            (true, None) => {
                Err(self.bad_request(method, &target.host.to_string(), path, "no address".into()))
            }
        }
    }

    async fn dial(&self, addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to {a} timed out"),
                    )
                }
            }
        }
        Err(last)
    }
}

async fn connect(conn: &Conn, mut req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let Some(auth) = req.uri().authority().map(|a| a.as_str().to_owned()) else {
        return conn.bad_request("CONNECT", "-", None, "CONNECT needs host:port".into());
    };
    let (h, port) = match split_host_port(&auth) {
        Ok((h, Some(p))) => (h, p),
        _ => {
            return conn.bad_request(
                "CONNECT",
                &auth,
                None,
                format!("CONNECT target {auth:?} is not host:port"),
            );
        }
    };
    let host = match Host::parse(h) {
        Ok(h) => h,
        Err(e) => return conn.bad_request("CONNECT", h, None, e.to_string()),
    };
    let target = Target {
        host,
        port,
        kind: Kind::Connect,
    };
    // With the sandbox's CA the proxy can open a tunnel to decide each request inside (a rule
    // limits methods or paths on the host), and explain a refusal over TLS.
    let can_intercept = conn.cfg.credentials.is_some();
    let mut rules = conn.cfg.rules.current();
    let mut t = tunnel(&rules, &target, can_intercept);
    if let Tunnel::Ask(d) = &t {
        t = match hold(&conn.cfg, &target, d, &conn.client).await {
            Held::Once(d) => Tunnel::Open(d),
            Held::Denied(d) => return conn.refused(&mut req, &target, &d, Some("ask")),
            Held::Granted(account) => {
                rules = conn.cfg.rules.current();
                match tunnel(&rules, &target, can_intercept) {
                    Tunnel::Open(d) => Tunnel::Open(after_grant(d, &account, false)),
                    Tunnel::Inspect(d) => Tunnel::Inspect(after_grant(d, &account, false)),
                    // The rule the user made does not cover this tunnel: refused as a held
                    // request is, saying so.
                    Tunnel::Ask(d) | Tunnel::Refuse(d) => {
                        let d = after_grant(d, &account, false);
                        return conn.refused(&mut req, &target, &d, Some("ask"));
                    }
                }
            }
        };
    }
    let (d, inspect) = match t {
        Tunnel::Open(d) => (d, false),
        Tunnel::Inspect(d) => (d, true),
        Tunnel::Ask(d) | Tunnel::Refuse(d) => return conn.refused(&mut req, &target, &d, None),
    };
    let via = crate::upstream::via(conn.cfg.upstream.as_ref(), &target.host, port, true);
    let route = match conn
        .route(&rules, "CONNECT", &target, None, via, Some(&mut req))
        .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let host = target.host.to_string();
    let d = noted_route(d, &route);
    if let Some(creds) = conn.cfg.credentials.clone()
        && (inspect || creds.bound(&host).is_some())
    {
        return intercept(conn, req, creds, host, port, route, &d, inspect);
    }
    let seen = Seen {
        method: "CONNECT",
        host: &host,
        port: Some(port),
        path: None,
    };
    let upstream = match &route {
        Route::Direct(addrs) => match conn.dial(addrs).await {
            Ok(s) => s,
            Err(e) => return conn.unreachable(seen, &d, &e),
        },
        Route::Via(p) => match crate::upstream::tunnel(&conn.cfg, p, &target.host, port).await {
            Ok(s) => s,
            Err(e) => return conn.upstream_failed(seen, &d, &e),
        },
    };
    let entry = conn.record(seen, &d, None, 200);
    let tally = Tally::new(conn.cfg.audit.clone(), entry, started);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let mut upstream = upstream;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        // The client's own socket, when hyper hands it back: then the kernel moves the bytes.
        let upgraded = match upgraded.downcast::<TokioIo<Guarded<TcpStream>>>() {
            Ok(parts) => {
                let client = parts.io.into_inner().into_inner();
                return crate::splice::tunnel(client, &parts.read_buf, upstream, &tally).await;
            }
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<Guarded<UnixStream>>>() {
            Ok(parts) => {
                let client = parts.io.into_inner().into_inner();
                crate::splice::tunnel(client, &parts.read_buf, upstream, &tally).await;
            }
            Err(upgraded) => {
                let mut client = CountedIo::new(TokioIo::new(upgraded), tally);
                copy_both(&mut client, &mut upstream).await;
            }
        }
    });
    let mut r = Response::new(empty());
    if let Ok(v) = HeaderValue::from_str(&d.header()) {
        r.headers_mut()
            .insert(HeaderName::from_static(DECISION_HEADER), v);
    }
    r
}

/// `d`, its reason saying when the connection goes through the upstream proxy.
fn noted_route(d: Decision, route: &Route) -> Decision {
    match route {
        Route::Direct(_) => d,
        Route::Via(p) => Decision {
            reason: format!("{}; through the upstream proxy {}", d.reason, p.redacted()),
            ..d
        },
    }
}

/// Answers a CONNECT to a host with a bound credential, or one whose requests are decided
/// each on its own (`inspect`: `d` is then the tunnel's decision as [`tunnel`] made it), and
/// intercepts the tunnel.
#[allow(clippy::too_many_arguments)]
fn intercept(
    conn: &Conn,
    mut req: Request<Incoming>,
    creds: Arc<crate::intercept::Credentials>,
    host: String,
    port: u16,
    route: Route,
    d: &Decision,
    inspect: bool,
) -> Response<Body> {
    let rule = d
        .rule
        .map(|r| r.to_string())
        .unwrap_or_else(|| "default".into());
    let seen = Seen {
        method: "CONNECT",
        host: &host,
        port: Some(port),
        path: None,
    };
    let noted = match inspect {
        true => d.clone(),
        false => Decision {
            reason: format!(
                "intercepted (a credential applies to this host); {}",
                d.reason
            ),
            ..d.clone()
        },
    };
    conn.record(seen, &noted, None, 200);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let cfg = conn.cfg.clone();
    let client = conn.client.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        crate::intercept::serve(
            cfg,
            creds,
            TokioIo::new(upgraded),
            client,
            host,
            port,
            route,
            rule,
        )
        .await;
    });
    let mut r = Response::new(empty());
    if let Ok(v) = HeaderValue::from_str(&d.header()) {
        r.headers_mut()
            .insert(HeaderName::from_static(DECISION_HEADER), v);
    }
    r
}

/// Copies both ways until both sides are done.
async fn copy_both<A, B>(a: &mut A, b: &mut B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::io::copy_bidirectional_with_sizes(a, b, 64 * 1024, 64 * 1024).await;
}

/// Headers that belong to one hop only.
const HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty() && s != "upgrade")
        .collect();
    for n in named {
        headers.remove(n.as_str());
    }
    for h in HOP {
        if keep_upgrade && (*h == "connection" || *h == "upgrade") {
            continue;
        }
        headers.remove(*h);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The canonical destination of a plain-HTTP request, refusing a Host header that disagrees.
fn http_target(req: &Request<Incoming>) -> Result<(Host, u16), String> {
    let uri: &Uri = req.uri();
    if uri.scheme().is_none() {
        return Err(
            "this is a proxy: send an absolute URI (http://host/path) or use CONNECT".into(),
        );
    }
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "scheme {:?} is not proxied; use CONNECT for TLS",
            uri.scheme_str().unwrap_or("")
        ));
    }
    let auth = uri.authority().ok_or("the URI has no host")?;
    if auth.as_str().contains('@') {
        return Err("user information in the URI is refused".into());
    }
    let (h, p) = split_host_port(auth.as_str()).map_err(|e| e.to_string())?;
    let host = Host::parse(h).map_err(|e| e.to_string())?;
    let port = p.unwrap_or(80);
    let hosts: Vec<&HeaderValue> = req.headers().get_all(header::HOST).iter().collect();
    match hosts.as_slice() {
        [] => {}
        [one] => {
            let s = one.to_str().map_err(|_| "the Host header is not text")?;
            let (hh, hp) = split_host_port(s).map_err(|e| format!("Host header: {e}"))?;
            let hhost = Host::parse(hh).map_err(|e| format!("Host header: {e}"))?;
            if hhost != host || hp.unwrap_or(80) != port {
                return Err(format!(
                    "the Host header ({hhost}:{}) disagrees with the request URI ({host}:{port})",
                    hp.unwrap_or(80)
                ));
            }
        }
        _ => return Err("more than one Host header".into()),
    }
    Ok((host, port))
}

async fn forward(conn: &Conn, mut req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let (host, port) = match http_target(&req) {
        Ok(t) => t,
        Err(why) => {
            let h = req.uri().host().unwrap_or("-").to_owned();
            return conn.bad_request(&method, &h, Some(&path), why);
        }
    };
    let target = Target {
        host,
        port,
        kind: Kind::Http {
            method: method.clone(),
            path: normalize_path(&path),
        },
    };
    // One read of the rules per request: the decision and the address check agree.
    let mut rules = conn.cfg.rules.current();
    let mut d = decide(&rules, &target);
    if d.action == Action::Ask {
        d = match hold(&conn.cfg, &target, &d, &conn.client).await {
            Held::Once(d) => d,
            Held::Denied(d) => return conn.denied(&method, &target, Some(&path), &d, Some("ask")),
            Held::Granted(account) => {
                rules = conn.cfg.rules.current();
                let d = after_grant(decide(&rules, &target), &account, false);
                if d.action != Action::Allow {
                    // The rule the user made does not cover this request.
                    return conn.denied(&method, &target, Some(&path), &d, Some("ask"));
                }
                d
            }
        };
    }
    if d.action != Action::Allow {
        return conn.denied(&method, &target, Some(&path), &d, None);
    }
    let upgrade = is_upgrade(req.headers());
    let host_s = target.host.to_string();

    // The request as it goes upstream: origin-form, canonical Host, no hop-by-hop headers.
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop(&mut parts.headers, upgrade);
    let authority = if port == 80 {
        match &target.host {
            Host::Ip(IpAddr::V6(a)) => format!("[{a}]"),
            h => h.to_string(),
        }
    } else {
        target.host.authority(port)
    };
    let Ok(host_value) = HeaderValue::from_str(&authority) else {
        return conn.bad_request(&method, &host_s, Some(&path), "unusable host".into());
    };
    parts.headers.insert(header::HOST, host_value);
    parts.version = Version::HTTP_11;
    // Through an upstream proxy: absolute form, with its login; else origin form.
    let via = crate::upstream::via(conn.cfg.upstream.as_ref(), &target.host, port, false);
    let uri = match &via {
        Some(p) => {
            if let Some(v) = crate::upstream::authorization(p) {
                parts.headers.insert(header::PROXY_AUTHORIZATION, v);
            }
            format!("http://{authority}{pq}")
        }
        None => pq,
    };
    parts.uri = match uri.parse() {
        Ok(u) => u,
        Err(_) => return conn.bad_request(&method, &host_s, Some(&path), "unusable path".into()),
    };
    let seen = Seen {
        method: &method,
        host: &host_s,
        port: Some(port),
        path: Some(&path),
    };

    let mut sender = match take_pooled(conn, &rules, &target, via.is_some()).await {
        Some(s) => s,
        None => {
            let route = match conn
                .route(&rules, &method, &target, Some(&path), via.clone(), None)
                .await
            {
                Ok(r) => r,
                Err(resp) => return resp,
            };
            match open_upstream(conn, &target, &route, upgrade).await {
                Ok(s) => s,
                Err(Unreached::Direct(e)) => return conn.unreachable(seen, &d, &e),
                Err(Unreached::Upstream(e)) => return conn.upstream_failed(seen, &d, &e),
            }
        }
    };
    let d = match &via {
        Some(p) => noted_route(d, &Route::Via(p.clone())),
        None => d,
    };
    let entry = conn.record(seen, &d, None, 0);
    let tally = Tally::new(conn.cfg.audit.clone(), entry, started);
    let body = Counted::new(body, Some(tally.clone()), Direction::Up).boxed();
    let upstream_req = Request::from_parts(parts, body);
    let mut resp = match sender.sender.send_request(upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            if let Ok(mut s) = tally.status.lock() {
                *s = Some(502);
            }
            return text(
                StatusCode::BAD_GATEWAY,
                &d.header(),
                format!("paddock: upstream {host_s}:{port} failed: {e}\n"),
            );
        }
    };
    if let Some(p) = &via
        && resp.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED
    {
        // The upstream proxy's login is the host's business, not the sandbox's.
        if let Ok(mut s) = tally.status.lock() {
            *s = Some(502);
        }
        return text(
            StatusCode::BAD_GATEWAY,
            &d.header(),
            format!(
                "paddock: the upstream proxy {} wants a login (407); give it in its URL (http://user:password@host:port)\n",
                p.redacted()
            ),
        );
    }
    if let Ok(mut s) = tally.status.lock() {
        *s = Some(resp.status().as_u16());
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_up) = client_upgrade {
            let server_up = hyper::upgrade::on(&mut resp);
            let t = tally.clone();
            tokio::spawn(async move {
                if let (Ok(c), Ok(s)) = (client_up.await, server_up.await) {
                    let (mut c, mut s) = (CountedIo::new(TokioIo::new(c), t), TokioIo::new(s));
                    copy_both(&mut c, &mut s).await;
                }
            });
        }
    } else if !upgrade {
        put_pooled(conn, sender).await;
    }
    let (mut parts, body) = resp.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    strip_hop(&mut parts.headers, switching);
    if upgrade && !switching {
        // The client asked to upgrade and the upstream said no: end the connection after this
        // answer, because the framing check stopped looking at it when the upgrade was asked.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Ok(v) = HeaderValue::from_str(&d.header()) {
        parts
            .headers
            .insert(HeaderName::from_static(DECISION_HEADER), v);
    }
    Response::from_parts(
        parts,
        Counted::new(body, Some(tally), Direction::Down).boxed(),
    )
}

async fn take_pooled(
    conn: &Conn,
    rules: &[StoredRule],
    target: &Target,
    via: bool,
) -> Option<Pooled> {
    let mut slot = conn.upstream.lock().await;
    let p = slot.take()?;
    if p.host != target.host || p.port != target.port || p.via != via || p.sender.is_closed() {
        return None;
    }
    // Re-check the address against the current rules: they may have changed.
    if let Some(addr) = p.addr
        && decide_address(
            rules,
            Some(&target.host),
            addr.ip(),
            target.port,
            &target.kind,
        )
        .action
            != Action::Allow
    {
        return None;
    }
    let mut p = p;
    p.sender.ready().await.ok()?;
    Some(p)
}

async fn put_pooled(conn: &Conn, p: Pooled) {
    *conn.upstream.lock().await = Some(p);
}

/// Why no connection for a plain-HTTP request was made.
enum Unreached {
    /// The destination's addresses.
    Direct(std::io::Error),
    /// The upstream proxy.
    Upstream(UpstreamFailure),
}

async fn open_upstream(
    conn: &Conn,
    target: &Target,
    route: &Route,
    upgrade: bool,
) -> Result<Pooled, Unreached> {
    let (stream, addr) = match route {
        Route::Direct(addrs) => {
            let stream = conn.dial(addrs).await.map_err(Unreached::Direct)?;
            let addr = stream.peer_addr().map_err(Unreached::Direct)?;
            (stream, Some(addr))
        }
        Route::Via(p) => {
            let stream = crate::upstream::dial(&conn.cfg, p)
                .await
                .map_err(Unreached::Upstream)?;
            // An address destination stays checked when the connection is reused.
            let addr = target.host.ip().map(|ip| SocketAddr::new(ip, target.port));
            (stream, addr)
        }
    };
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| Unreached::Direct(std::io::Error::other(e)))?;
    if upgrade {
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
    } else {
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    Ok(Pooled {
        host: target.host.clone(),
        port: target.port,
        addr,
        via: matches!(route, Route::Via(_)),
        sender,
    })
}
