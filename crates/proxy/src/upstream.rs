//! Connections through the host network's own proxy ([`UpstreamProxy`]).
//!
//! Paddock's rules decide first; only an allowed connection gets here. A tunnel (a CONNECT,
//! intercepted or not) is opened with a CONNECT to the upstream proxy; plain HTTP goes to it
//! in absolute form (see `server::forward`). The upstream proxy resolves names itself, so a
//! named destination is not resolved here; an address destination has passed Paddock's
//! address check before. The upstream proxy's own address needs no rule: the host's owner
//! chose it.

use std::net::SocketAddr;

use http::HeaderValue;
use paddock_policy::net::{Host, ProxyUrl, UpstreamProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::ProxyConfig;

/// The largest answer head read from the upstream proxy.
const MAX_HEAD: usize = 16 << 10;

/// Where an allowed connection goes.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// Straight to the checked addresses.
    Direct(Vec<SocketAddr>),
    /// Through the upstream proxy.
    Via(ProxyUrl),
}

/// Why the upstream proxy did not carry a connection. The messages go to the sandbox's
/// client (in a 502) and to the audit log; they never show the proxy's password.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamFailure {
    /// the upstream proxy could not be reached
    #[error("cannot reach the upstream proxy {proxy}: {why}")]
    Unreachable {
        /// The proxy (password hidden).
        proxy: String,
        /// What went wrong.
        why: String,
    },
    /// the upstream proxy answered the CONNECT with something other than 2xx
    #[error("the upstream proxy {proxy} refused CONNECT {target}: {status}")]
    Refused {
        /// The proxy (password hidden).
        proxy: String,
        /// What was asked for.
        target: String,
        /// Its status line.
        status: String,
    },
    /// the upstream proxy's answer was not HTTP
    #[error("the upstream proxy {proxy} gave no usable answer to CONNECT {target}: {why}")]
    BadAnswer {
        /// The proxy (password hidden).
        proxy: String,
        /// What was asked for.
        target: String,
        /// What was wrong.
        why: String,
    },
}

/// The proxy a connection to `host:port` takes, if any (`tunnel`: a CONNECT).
pub(crate) fn via(
    upstream: Option<&UpstreamProxy>,
    host: &Host,
    port: u16,
    tunnel: bool,
) -> Option<ProxyUrl> {
    upstream?.route(host, port, tunnel).cloned()
}

/// The `Proxy-Authorization` value for `proxy`, when its URL has a login.
pub(crate) fn authorization(proxy: &ProxyUrl) -> Option<HeaderValue> {
    let (user, password) = proxy.login()?;
    let token = crate::intercept::base64(format!("{user}:{password}").as_bytes());
    let mut v = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// A TCP connection to the upstream proxy itself.
pub(crate) async fn dial(
    cfg: &ProxyConfig,
    proxy: &ProxyUrl,
) -> Result<TcpStream, UpstreamFailure> {
    let unreachable = |why: String| UpstreamFailure::Unreachable {
        proxy: proxy.redacted(),
        why,
    };
    let ips = cfg
        .resolver
        .resolve(&proxy.host, proxy.port)
        .await
        .map_err(|e| unreachable(format!("cannot resolve {}: {e}", proxy.host)))?;
    let mut last = String::from("no address");
    for ip in ips {
        let a = SocketAddr::new(ip, proxy.port);
        match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("connecting to {a} timed out"),
        }
    }
    Err(unreachable(last))
}

/// A tunnel to `host:port` through `proxy`: its answer to a CONNECT was 2xx, and nothing of
/// the tunnel's own bytes has been read.
pub(crate) async fn tunnel(
    cfg: &ProxyConfig,
    proxy: &ProxyUrl,
    host: &Host,
    port: u16,
) -> Result<TcpStream, UpstreamFailure> {
    let mut s = dial(cfg, proxy).await?;
    let target = host.authority(port);
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = authorization(proxy).and_then(|v| v.to_str().map(str::to_owned).ok()) {
        req.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    req.push_str("\r\n");
    let bad = |why: String| UpstreamFailure::BadAnswer {
        proxy: proxy.redacted(),
        target: target.clone(),
        why,
    };
    let exchange = async {
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| bad(e.to_string()))?;
        // Byte by byte: what follows the head is the tunnel's, and stays in the socket.
        let mut head = Vec::with_capacity(256);
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err(bad(format!("a head longer than {MAX_HEAD} bytes")));
            }
            match s.read(&mut b).await {
                Ok(0) => return Err(bad("it closed the connection".into())),
                Ok(_) => head.push(b[0]),
                Err(e) => return Err(bad(e.to_string())),
            }
        }
        Ok(head)
    };
    let head = tokio::time::timeout(cfg.connect_timeout, exchange)
        .await
        .map_err(|_| bad("no answer in time".into()))??;
    let line: String = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let code = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("not an HTTP answer: {line:?}")))?;
    if !(200..300).contains(&code) {
        return Err(UpstreamFailure::Refused {
            proxy: proxy.redacted(),
            target,
            status: line,
        });
    }
    Ok(s)
}
