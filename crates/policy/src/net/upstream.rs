//! An upstream proxy: where the egress proxy sends what the rules allowed, on networks whose
//! way out is a proxy of their own (a company's proxy or DLP).
//!
//! The settings come from the host user's `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (lower
//! case first, as curl reads them) or from one URL given on the command line. Only `http://`
//! proxies are understood (TLS to the proxy is not); `user:password@` becomes a
//! `Proxy-Authorization: Basic` header. Paddock's own rules decide first: an upstream proxy
//! only changes where an allowed connection goes.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::host::{Host, split_host_port};

/// Why an upstream proxy setting cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// an `https://` proxy (TLS to the proxy) is not supported
    #[error(
        "upstream proxy {0}: TLS to the proxy (https://) is not supported; give its http:// address"
    )]
    Https(String),
    /// a scheme other than `http://`
    #[error("upstream proxy {0}: only http:// proxies are supported")]
    Scheme(String),
    /// the URL does not read as `http://[user:password@]host[:port]`
    #[error("upstream proxy {url}: {why}; expected http://[user:password@]host[:port]")]
    Bad {
        /// The URL, its password hidden.
        url: String,
        /// What is wrong.
        why: String,
    },
}

/// The port of a proxy URL that names none (curl's).
pub const DEFAULT_PROXY_PORT: u16 = 1080;

/// An `http://` proxy: where it is and how to log in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProxyUrl {
    /// Its host.
    pub host: Host,
    /// Its port.
    pub port: u16,
    login: Option<(String, String)>,
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `raw` with anything before an `@` hidden (it may hold a password).
fn hide_login(raw: &str) -> String {
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), raw),
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}***@{host}"),
        None => raw.to_owned(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ProxyUrl {
    /// Reads `http://[user:password@]host[:port][/]` (the scheme may be left out, as curl
    /// allows).
    pub fn parse(raw: &str) -> Result<ProxyUrl, UpstreamError> {
        let shown = hide_login(raw.trim());
        let bad = |why: &str| UpstreamError::Bad {
            url: shown.clone(),
            why: why.to_owned(),
        };
        let raw = raw.trim();
        let rest = match raw.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => rest,
            Some((s, _)) if s.eq_ignore_ascii_case("https") => {
                return Err(UpstreamError::Https(shown));
            }
            Some(_) => return Err(UpstreamError::Scheme(shown)),
            None => raw,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a proxy URL has no path"));
        }
        let (login, authority) = match rest.rsplit_once('@') {
            Some((userinfo, authority)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user"))?;
                let password =
                    percent_decode(password).ok_or_else(|| bad("bad %-escape in the password"))?;
                if user.is_empty() {
                    return Err(bad("the user is empty"));
                }
                (Some((user, password)), authority)
            }
            None => (None, rest),
        };
        let (h, port) = split_host_port(authority).map_err(|e| bad(&e.to_string()))?;
        let host = Host::parse(h).map_err(|e| bad(&e.to_string()))?;
        Ok(ProxyUrl {
            host,
            port: port.unwrap_or(DEFAULT_PROXY_PORT),
            login,
        })
    }

    /// The user and password, if the URL has them.
    pub fn login(&self) -> Option<(&str, &str)> {
        self.login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// `host:port`.
    pub fn authority(&self) -> String {
        self.host.authority(self.port)
    }

    /// The URL with its password hidden (for messages, the audit log and `inspect`).
    pub fn redacted(&self) -> String {
        match &self.login {
            Some((u, _)) => format!("http://{}:***@{}", percent_encode(u), self.authority()),
            None => format!("http://{}", self.authority()),
        }
    }
}

impl TryFrom<String> for ProxyUrl {
    type Error = UpstreamError;
    fn try_from(s: String) -> Result<ProxyUrl, UpstreamError> {
        ProxyUrl::parse(&s)
    }
}

impl From<ProxyUrl> for String {
    fn from(u: ProxyUrl) -> String {
        match &u.login {
            Some((user, pass)) => format!(
                "http://{}:{}@{}",
                percent_encode(user),
                percent_encode(pass),
                u.authority()
            ),
            None => format!("http://{}", u.authority()),
        }
    }
}

/// One `NO_PROXY` entry: destinations that go direct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NoProxy {
    /// `*`: everything.
    All,
    /// An address, or a network (`10.0.0.0/8`), matched against IP-literal destinations.
    Net(IpAddr, u8),
    /// A name and the names under it (`example.com` matches `api.example.com`), on one port
    /// or any.
    Name(String, Option<u16>),
}

impl NoProxy {
    /// Reads one entry (`*`, an address, a network, `[.]name[:port]`); `None` for one that
    /// names nothing Paddock can match (it is left out, so that destination goes through the
    /// upstream proxy).
    pub fn parse(raw: &str) -> Option<NoProxy> {
        let raw = raw.trim();
        if raw == "*" {
            return Some(NoProxy::All);
        }
        if let Some((ip, bits)) = raw.split_once('/') {
            let ip: IpAddr = ip.parse().ok()?;
            let bits: u8 = bits.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            return (bits <= max).then_some(NoProxy::Net(ip, bits));
        }
        let raw = raw.strip_prefix("*.").unwrap_or(raw);
        let raw = raw.strip_prefix('.').unwrap_or(raw);
        let (h, port) = split_host_port(raw).ok()?;
        match Host::parse(h).ok()? {
            Host::Ip(ip) => {
                let bits = if ip.is_ipv4() { 32 } else { 128 };
                Some(NoProxy::Net(ip, bits))
            }
            Host::Name(n) => Some(NoProxy::Name(n, port)),
        }
    }

    /// Reads a `NO_PROXY` value (entries separated by commas or spaces).
    pub fn parse_list(raw: &str) -> Vec<NoProxy> {
        raw.split([',', ' '])
            .filter(|e| !e.trim().is_empty())
            .filter_map(NoProxy::parse)
            .collect()
    }

    /// Whether `host:port` goes direct.
    pub fn matches(&self, host: &Host, port: u16) -> bool {
        match (self, host) {
            (NoProxy::All, _) => true,
            (NoProxy::Net(net, bits), Host::Ip(ip)) => in_net(*ip, *net, *bits),
            (NoProxy::Name(n, p), Host::Name(h)) => {
                p.is_none_or(|p| p == port)
                    && (h == n
                        || h.strip_suffix(n.as_str())
                            .is_some_and(|head| head.ends_with('.')))
            }
            _ => false,
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl TryFrom<String> for NoProxy {
    type Error = String;
    fn try_from(s: String) -> Result<NoProxy, String> {
        NoProxy::parse(&s).ok_or_else(|| format!("not a NO_PROXY entry: {s:?}"))
    }
}

impl From<NoProxy> for String {
    fn from(n: NoProxy) -> String {
        n.to_string()
    }
}

impl fmt::Display for NoProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoProxy::All => f.write_str("*"),
            NoProxy::Net(ip, bits) if *bits == if ip.is_ipv4() { 32 } else { 128 } => {
                write!(f, "{ip}")
            }
            NoProxy::Net(ip, bits) => write!(f, "{ip}/{bits}"),
            NoProxy::Name(n, Some(p)) => write!(f, "{n}:{p}"),
            NoProxy::Name(n, None) => f.write_str(n),
        }
    }
}

/// Where a sandbox's allowed connections go when the host's network has a proxy of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamProxy {
    /// For CONNECT tunnels (intercepted or not).
    pub https: Option<ProxyUrl>,
    /// For plain HTTP (sent to it in absolute form).
    pub http: Option<ProxyUrl>,
    /// Destinations that go direct.
    #[serde(default)]
    pub no_proxy: Vec<NoProxy>,
}

/// The first of `names` that `get` finds set and not empty.
fn first_set(get: &impl Fn(&str) -> Option<String>, names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| get(n))
        .find(|v| !v.trim().is_empty())
}

impl UpstreamProxy {
    /// The upstream the host user's environment names (`get` reads a variable), if any.
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<UpstreamProxy>, UpstreamError> {
        let url = |names: &[&str]| {
            first_set(&get, names)
                .map(|v| ProxyUrl::parse(&v))
                .transpose()
        };
        let https = url(&["https_proxy", "HTTPS_PROXY"])?;
        let http = url(&["http_proxy", "HTTP_PROXY"])?;
        if https.is_none() && http.is_none() {
            return Ok(None);
        }
        Ok(Some(UpstreamProxy {
            https,
            http,
            no_proxy: no_proxy_of(&get),
        }))
    }

    /// `--upstream-proxy URL`: that proxy for everything (`none`: no upstream proxy at all),
    /// with the host user's `NO_PROXY` (`get` reads a variable).
    pub fn from_flag(
        flag: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<UpstreamProxy>, UpstreamError> {
        if flag.trim().eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        let url = ProxyUrl::parse(flag)?;
        Ok(Some(UpstreamProxy {
            https: Some(url.clone()),
            http: Some(url),
            no_proxy: no_proxy_of(&get),
        }))
    }

    /// The proxy a connection to `host:port` goes through (`tunnel`: a CONNECT, else plain
    /// HTTP), or `None` when it goes direct.
    pub fn route(&self, host: &Host, port: u16, tunnel: bool) -> Option<&ProxyUrl> {
        if self.no_proxy.iter().any(|n| n.matches(host, port)) {
            return None;
        }
        if tunnel {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }
    }
}

fn no_proxy_of(get: &impl Fn(&str) -> Option<String>) -> Vec<NoProxy> {
    first_set(get, &["no_proxy", "NO_PROXY"])
        .map(|v| NoProxy::parse_list(&v))
        .unwrap_or_default()
}

impl fmt::Display for UpstreamProxy {
    /// One line, passwords hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |u: &Option<ProxyUrl>| u.as_ref().map_or("direct".into(), ProxyUrl::redacted);
        if self.https == self.http {
            write!(f, "{}", show(&self.https))?;
        } else {
            write!(
                f,
                "https: {}, http: {}",
                show(&self.https),
                show(&self.http)
            )?;
        }
        if !self.no_proxy.is_empty() {
            let list: Vec<String> = self.no_proxy.iter().map(ToString::to_string).collect();
            write!(f, " (direct: {})", list.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
