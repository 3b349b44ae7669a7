//! Network rules and the pure decision over them.
//!
//! A rule names a host pattern, a port, and optionally a method and path (which can only be
//! checked where the request is visible: plain HTTP now, intercepted TLS later). The decision is
//! deny by default, and an explicit deny beats any allow ([`Action`] orders `Deny` above `Allow`,
//! so "strictest wins" is `max()`).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::addr::{AddrClass, classify};
use super::host::{Host, HostError, canonical_ip};

/// Why a rule could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// the host pattern is not valid
    #[error("invalid host pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// the port is not a number from 1 to 65535 or `any`
    #[error("invalid port {0:?}: use a number from 1 to 65535, or \"any\"")]
    Port(String),
    /// the method is not an HTTP token
    #[error("invalid method {0:?}: use an HTTP method such as GET or POST")]
    Method(String),
    /// the path does not start with '/'
    #[error(
        "invalid path {0:?}: a path pattern starts with '/' ('*' matches any run of characters)"
    )]
    Path(String),
    /// an allow rule for every host
    #[error(
        "{0:?} would allow every host; to allow any public host use the open preset (--policy open, or `paddock policy preset open`)"
    )]
    AllowsEverything(String),
    /// a private-address allowance on something other than one host name
    #[error(
        "{0}: a private address may be allowed only for an allow rule naming one host exactly (not a wildcard, an address or a deny)"
    )]
    PrivateNeedsName(String),
    /// an allow rule whose range covers addresses that are only allowed one by one
    #[error(
        "{pattern} covers {class} addresses ({example}, say); a private, loopback, link-local or metadata address is allowed only when named exactly (e.g. {example})"
    )]
    RangeOpensReserved {
        /// The range as written.
        pattern: String,
        /// The class of an address it covers.
        class: AddrClass,
        /// One such address.
        example: IpAddr,
    },
}

/// What a rule does. Among the rules that match a request an explicit deny wins, then an
/// allow, then an ask; no match at all is a deny (see [`decide`]). An ask ranks below an allow
/// so that what the user approves (an allow rule) lets the request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the request through.
    Allow,
    /// Hold the request until the user allows or denies it (or a timeout denies it).
    Ask,
    /// Refuse it.
    Deny,
}

impl Action {
    /// Reads `allow`, `ask` or `deny`.
    pub fn parse(raw: &str) -> Option<Action> {
        match raw {
            "allow" => Some(Action::Allow),
            "ask" => Some(Action::Ask),
            "deny" => Some(Action::Deny),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Ask => "ask",
            Action::Deny => "deny",
        })
    }
}

/// Which hosts a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this name.
    Exact(String),
    /// `*.suffix`: one more label than the suffix (not the suffix itself).
    OneLabel(String),
    /// `**.suffix`: the suffix itself and any name below it.
    AnyDepth(String),
    /// `**`: every name and every public address.
    Any,
    /// An address or range (`10.0.0.0/8`, `127.0.0.1`, `::1`).
    Net(IpNet),
}

impl HostPattern {
    /// Reads a pattern (without port).
    pub fn parse(raw: &str) -> Result<HostPattern, RuleError> {
        let bad = |reason: &dyn fmt::Display| RuleError::Pattern {
            pattern: raw.into(),
            reason: reason.to_string(),
        };
        if raw == "**" || raw == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some((addr, len)) = raw.split_once('/') {
            let Host::Ip(ip) = Host::parse(addr).map_err(|e| bad(&e))? else {
                return Err(bad(&"a range needs an IP address before '/'"));
            };
            if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&"bad prefix length"));
            }
            let mut len: u8 = len.parse().map_err(|_| bad(&"bad prefix length"))?;
            // Host::parse reads an IPv4-mapped IPv6 address as the IPv4 address it carries, so
            // the prefix length of a mapped range (`::ffff:10.0.0.0/104`) is counted from bit 96.
            if ip.is_ipv4() && addr.contains(':') {
                len = len.checked_sub(96).ok_or_else(|| {
                    bad(&"a range of IPv4-mapped addresses needs a prefix length of at least 96")
                })?;
            }
            let net = IpNet::new(ip, len).map_err(|e| bad(&e))?;
            return Ok(HostPattern::Net(net.trunc()));
        }
        let (ctor, rest): (fn(String) -> HostPattern, &str) =
            if let Some(rest) = raw.strip_prefix("**.") {
                (HostPattern::AnyDepth, rest)
            } else if let Some(rest) = raw.strip_prefix("*.") {
                (HostPattern::OneLabel, rest)
            } else {
                (HostPattern::Exact, raw)
            };
        if rest.contains('*') {
            return Err(bad(
                &"'*' is only allowed as the whole first label ('*.example.com' or '**.example.com')",
            ));
        }
        match Host::parse(rest).map_err(|e: HostError| bad(&e))? {
            Host::Name(n) => {
                if !matches!(ctor(String::new()), HostPattern::Exact(_)) && !n.contains('.') {
                    return Err(bad(&"a wildcard needs a suffix of at least two labels"));
                }
                Ok(ctor(n))
            }
            Host::Ip(ip) if matches!(ctor(String::new()), HostPattern::Exact(_)) => {
                Ok(HostPattern::Net(IpNet::from(ip)))
            }
            Host::Ip(_) => Err(bad(&"wildcards apply to names, not addresses")),
        }
    }

    /// Whether `host` is covered.
    pub fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Exact(p), Host::Name(n)) => p == n,
            (HostPattern::OneLabel(s), Host::Name(n)) => n
                .strip_suffix(s.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            (HostPattern::AnyDepth(s), Host::Name(n)) => {
                n == s
                    || n.strip_suffix(s.as_str())
                        .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            }
            (HostPattern::Net(net), Host::Ip(ip)) => net.contains(&canonical_ip(*ip)),
            _ => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(n) => f.write_str(n),
            HostPattern::OneLabel(s) => write!(f, "*.{s}"),
            HostPattern::AnyDepth(s) => write!(f, "**.{s}"),
            HostPattern::Any => f.write_str("**"),
            HostPattern::Net(n) if n.prefix_len() == n.max_prefix_len() => {
                write!(f, "{}", n.addr())
            }
            HostPattern::Net(n) => write!(f, "{n}"),
        }
    }
}

/// Which ports a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PortSpec {
    /// 80 for plain HTTP, 443 for CONNECT.
    #[default]
    Default,
    /// Every port.
    Any,
    /// This port.
    Port(u16),
}

impl PortSpec {
    /// Reads `any`, `default` or a number.
    pub fn parse(raw: &str) -> Result<PortSpec, RuleError> {
        match raw {
            "any" | "*" => Ok(PortSpec::Any),
            "default" | "" => Ok(PortSpec::Default),
            n if n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()) => n
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .map(PortSpec::Port)
                .ok_or_else(|| RuleError::Port(raw.into())),
            _ => Err(RuleError::Port(raw.into())),
        }
    }

    fn matches(self, port: u16, kind: &Kind) -> bool {
        match self {
            PortSpec::Any => true,
            PortSpec::Port(p) => p == port,
            PortSpec::Default => port == kind.default_port(),
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Default => f.write_str("default"),
            PortSpec::Any => f.write_str("any"),
            PortSpec::Port(p) => write!(f, "{p}"),
        }
    }
}

/// A path pattern: starts with '/', `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathGlob(String);

impl PathGlob {
    /// Reads a pattern.
    pub fn parse(raw: &str) -> Result<PathGlob, RuleError> {
        if !raw.starts_with('/') || raw.chars().any(|c| c.is_control() || c == ' ') {
            return Err(RuleError::Path(raw.into()));
        }
        Ok(PathGlob(raw.into()))
    }

    /// Whether `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        glob(self.0.as_bytes(), path.as_bytes())
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative wildcard match with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// The form of a request path that path rules are matched against: percent-encoded unreserved
/// characters decoded (`%61` is `a`), other escapes upper-cased, repeated slashes collapsed and
/// `.`/`..` segments resolved, the query dropped. So `//admin`, `/%61dmin` and `/x/../admin` all
/// meet a rule on `/admin*`.
pub fn normalize_path(raw: &str) -> String {
    let raw = raw.split(['?', '#']).next().unwrap_or("");
    let b = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(c as char);
                } else {
                    decoded.push('%');
                    decoded.push((b[i + 1] as char).to_ascii_uppercase());
                    decoded.push((b[i + 2] as char).to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        decoded.push(b[i] as char);
        i += 1;
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut p = String::from("/");
    p.push_str(&out.join("/"));
    if trailing && !out.is_empty() {
        p.push('/');
    }
    p
}

/// Reads an HTTP method for a rule (upper-cased).
pub fn parse_method(raw: &str) -> Result<String, RuleError> {
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(RuleError::Method(raw.into()));
    }
    Ok(raw.to_ascii_uppercase())
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Allow or deny.
    pub action: Action,
    /// Hosts covered.
    pub host: HostPattern,
    /// Ports covered.
    pub port: PortSpec,
    /// Only this method (needs a visible request).
    pub method: Option<String>,
    /// Only paths matching this (needs a visible request).
    pub path: Option<PathGlob>,
    /// The named host may resolve to a private, reserved or carrier-grade NAT address (a
    /// company mirror, a registry behind a corporate network). Only on an allow rule naming one
    /// host exactly; loopback, link-local, metadata and multicast addresses still need a rule
    /// naming the address.
    pub private_address: bool,
}

impl Rule {
    /// A rule for `host[:port]` text as a user writes it: `example.com`, `*.example.com:8443`,
    /// `**.example.com:any`, `10.0.0.0/8`, `10.0.0.0/8:5432`, `fd00::/8:443`, `[::1]:8080`,
    /// `::1`. The port is a number, `any` or `default` (80 for plain HTTP, 443 for CONNECT,
    /// which is also what no port means). A port after a bare IPv6 address needs brackets.
    pub fn parse_target(action: Action, target: &str) -> Result<Rule, RuleError> {
        let (host, port) = split_target(target)?;
        Ok(Rule {
            action,
            host: HostPattern::parse(host)?,
            port,
            method: None,
            path: None,
            private_address: false,
        })
    }

    /// Checks a rule a user wrote (a flag, a command, an imported file): an allow for every
    /// host (`*`, `**`, `0.0.0.0/0`, `::/0`) is refused, since the open preset says that
    /// intent; so is an allow range that covers a non-public address, which is allowed only
    /// when named exactly. Returns a warning for an allow that names a non-public address, saying
    /// what it is. (Built-in presets are not vetted: `open` is `**`.)
    pub fn vet(&self) -> Result<Option<String>, RuleError> {
        if self.private_address
            && (self.action != Action::Allow || !matches!(self.host, HostPattern::Exact(_)))
        {
            return Err(RuleError::PrivateNeedsName(self.host.to_string()));
        }
        if self.action != Action::Allow {
            return Ok(None);
        }
        match &self.host {
            HostPattern::Any => Err(RuleError::AllowsEverything(self.host.to_string())),
            HostPattern::Net(n) if n.prefix_len() == 0 => {
                Err(RuleError::AllowsEverything(self.host.to_string()))
            }
            HostPattern::Net(n) if n.prefix_len() < n.max_prefix_len() => match non_public_in(n) {
                Some((example, class)) => Err(RuleError::RangeOpensReserved {
                    pattern: n.to_string(),
                    class,
                    example,
                }),
                None => Ok(None),
            },
            HostPattern::Net(n) => match classify(n.addr()) {
                AddrClass::Public => Ok(None),
                class => Ok(Some(format!(
                    "{} is a {class} address: the sandbox may reach {}",
                    n.addr(),
                    match class {
                        AddrClass::Loopback | AddrClass::Unspecified => {
                            "services listening on this host's loopback"
                        }
                        AddrClass::Metadata => {
                            "a cloud metadata service, which hands out this machine's credentials"
                        }
                        AddrClass::LinkLocal => "devices on this host's local link",
                        _ => "a machine on a private network this host can reach",
                    }
                ))),
            },
            _ => Ok(None),
        }
    }

    /// Its method and path limits in words: `GET /v1/*`, `any method on /v1/*`, `POST`.
    pub fn limits(&self) -> String {
        match (&self.method, &self.path) {
            (Some(m), Some(p)) => format!("{m} {}", p.as_str()),
            (Some(m), None) => format!("{m} on any path"),
            (None, Some(p)) => format!("any method on {}", p.as_str()),
            (None, None) => "every request".into(),
        }
    }

    /// Whether this rule can be decided only on a visible request (method or path set).
    pub fn needs_request(&self) -> bool {
        self.method.is_some() || self.path.is_some()
    }

    /// Whether the rule's method and path limits match the request: `Some(true)` when they do
    /// (or there are none), `Some(false)` when they do not, `None` when the request is a tunnel
    /// that hides them. Methods compare without regard to case, so a deny rule for `DELETE` also
    /// refuses `delete`, which some servers treat as the same method.
    fn request_matches(&self, kind: &Kind) -> Option<bool> {
        match kind {
            _ if !self.needs_request() => Some(true),
            Kind::Http { method, path } | Kind::Https { method, path } => Some(
                self.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                    && self.path.as_ref().is_none_or(|p| p.matches(path)),
            ),
            Kind::Connect => None,
        }
    }
}

/// Ranges holding addresses that are not public (every address [`classify`] does not call
/// public lies in one of them; IPv6 forms that carry an IPv4 address are covered whole).
const NON_PUBLIC: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/3",
    "::/96",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/9",
    "fec0::/10",
    "ff00::/8",
    "4000::/2",
    "8000::/1",
    "::/3",
];

/// An address of `net` that is not public, with its class, if it holds one. CIDR ranges are
/// nested or apart, so two overlap exactly when one holds the other's first address; the
/// smaller of the two is searched (its first addresses: a range of IPv6 forms that carry IPv4
/// addresses is judged by those it starts with).
fn non_public_in(net: &IpNet) -> Option<(IpAddr, AddrClass)> {
    NON_PUBLIC
        .iter()
        .filter_map(|r| r.parse::<IpNet>().ok())
        .filter(|r| r.contains(&net.network()) || net.contains(&r.network()))
        .find_map(|r| {
            let inner = if net.contains(&r.network()) { r } else { *net };
            std::iter::once(inner.network())
                .chain(inner.hosts().take(256))
                .map(|a| (a, classify(a)))
                .find(|(_, class)| *class != AddrClass::Public)
        })
}

/// Splits rule text into the host pattern and the port.
fn split_target(target: &str) -> Result<(&str, PortSpec), RuleError> {
    let port = |p: &str| match p {
        // `example.com:` is a typo, not a request for the default port.
        "" => Err(RuleError::Port(p.into())),
        p => PortSpec::parse(p),
    };
    if let Some(inner) = target.strip_prefix('[') {
        // `[v6]`, `[v6]:port`, `[v6]/len`, `[v6]/len:port`: the ']' ends the address.
        let end = inner.find(']').ok_or_else(|| RuleError::Pattern {
            pattern: target.into(),
            reason: "'[' without ']'".into(),
        })?;
        let after = &inner[end + 1..];
        return match after.strip_prefix('/').and_then(|len| len.split_once(':')) {
            Some((len, p)) => Ok((&target[..end + 3 + len.len()], port(p)?)),
            None if after.starts_with('/') || after.is_empty() => Ok((target, PortSpec::Default)),
            None => match after.strip_prefix(':') {
                Some(p) => Ok((&target[..end + 2], port(p)?)),
                None => Err(RuleError::Pattern {
                    pattern: target.into(),
                    reason: "unexpected text after ']'".into(),
                }),
            },
        };
    }
    if let Some((addr, rest)) = target.split_once('/') {
        // A range: the prefix length has no ':', so a port after it is never ambiguous, even
        // for IPv6 (`fd00::/8:443`).
        return match rest.split_once(':') {
            Some((len, p)) => Ok((&target[..addr.len() + 1 + len.len()], port(p)?)),
            None => Ok((target, PortSpec::Default)),
        };
    }
    match target.split_once(':') {
        // Exactly one ':': host and port. More than one: a bare IPv6 address.
        Some((h, p)) if !p.contains(':') => Ok((h, port(p)?)),
        _ => Ok((target, PortSpec::Default)),
    }
}

/// Where a rule applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every sandbox.
    Global,
    /// One sandbox, by name.
    Sandbox(String),
    /// A preset's rules, kept once and referenced by each scope the preset is applied to (by
    /// the preset's name).
    Preset(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Sandbox(n) => f.write_str(n),
            Scope::Preset(n) => write!(f, "preset {n}"),
        }
    }
}

/// A rule as stored, with its id, scope and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRule {
    /// Stable id (for `policy rm`).
    pub id: i64,
    /// Global, one sandbox, or a preset's (shared by the scopes it is applied to).
    pub scope: Scope,
    /// Where it came from: `user`, `preset:NAME`, `run`.
    pub source: String,
    /// The rule.
    pub rule: Rule,
}

/// How the request reached the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Plain HTTP: method and path are visible.
    Http {
        /// Request method.
        method: String,
        /// Request path (no query).
        path: String,
    },
    /// A CONNECT tunnel: only host and port are visible.
    Connect,
    /// A request inside a tunnel the proxy intercepts (TLS terminated): method and path are
    /// visible, and the port's default is 443 as for the tunnel.
    Https {
        /// Request method.
        method: String,
        /// Request path (no query).
        path: String,
    },
}

impl Kind {
    /// 80 for plain HTTP, 443 for CONNECT and the requests inside an intercepted tunnel.
    pub fn default_port(&self) -> u16 {
        match self {
            Kind::Http { .. } => 80,
            Kind::Connect | Kind::Https { .. } => 443,
        }
    }
}

/// One destination to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Canonical host.
    pub host: Host,
    /// Port.
    pub port: u16,
    /// Plain request or tunnel.
    pub kind: Kind,
}

/// The outcome, with the rule that decided (none: the default deny).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub action: Action,
    /// The deciding rule's id.
    pub rule: Option<i64>,
    /// Why, in words.
    pub reason: String,
}

impl Decision {
    fn deny(rule: Option<i64>, reason: impl Into<String>) -> Decision {
        Decision {
            action: Action::Deny,
            rule,
            reason: reason.into(),
        }
    }

    /// The value of the `x-paddock-decision` header.
    pub fn header(&self) -> String {
        match self.rule {
            Some(id) => format!("{}; rule={id}", self.action),
            None => format!("{}; rule=default", self.action),
        }
    }
}

/// Whether a CONNECT to `host:port` has rules that limit methods or paths: the proxy can then
/// intercept the tunnel and decide each request inside it (with [`Kind::Https`]) instead of
/// refusing the tunnel.
pub fn needs_interception(rules: &[StoredRule], host: &Host, port: u16) -> bool {
    interception_rule(rules, host, port).is_some()
}

/// The first rule that limits methods or paths on a CONNECT to `host:port` (what
/// [`needs_interception`] finds).
pub fn interception_rule<'a>(
    rules: &'a [StoredRule],
    host: &Host,
    port: u16,
) -> Option<&'a StoredRule> {
    rules.iter().find(|r| {
        r.rule.needs_request()
            && r.rule.host.matches(host)
            && r.rule.port.matches(port, &Kind::Connect)
    })
}

/// What the proxy does with a CONNECT tunnel: what [`tunnel`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tunnel {
    /// Opened; its bytes pass unread (or intercepted for a bound credential).
    Open(Decision),
    /// Opened and intercepted, because a rule limits methods or paths on the host: each
    /// request inside is decided on its own (with [`Kind::Https`]). The decision is the
    /// tunnel's own, as audited.
    Inspect(Decision),
    /// Held until the user answers.
    Ask(Decision),
    /// Refused.
    Refuse(Decision),
}

/// Decides on a CONNECT to `target` (whose kind is [`Kind::Connect`]): `can_intercept` says
/// the proxy has the sandbox's CA, so that a host where a rule limits methods or paths is
/// intercepted and each request inside decided, rather than the tunnel being decided whole.
/// The proxy and `policy check` both decide with this.
pub fn tunnel(rules: &[StoredRule], target: &Target, can_intercept: bool) -> Tunnel {
    let d = decide(rules, target);
    // A deny of the whole host and port refuses the tunnel, whatever else limits requests.
    let whole_deny = d.action == Action::Deny
        && d.rule
            .and_then(|id| rules.iter().find(|r| r.id == id))
            .is_some_and(|r| !r.rule.needs_request());
    let limiting = (can_intercept && !whole_deny)
        .then(|| interception_rule(rules, &target.host, target.port))
        .flatten();
    match (d.action, limiting) {
        (Action::Allow, Some(_)) => Tunnel::Inspect(d),
        (_, Some(r)) => Tunnel::Inspect(Decision {
            action: Action::Allow,
            rule: Some(r.id),
            reason: format!(
                "opened to decide each request inside: rule {} ({}) limits {} on this host",
                r.id,
                r.scope,
                r.rule.limits()
            ),
        }),
        (Action::Allow, None) => Tunnel::Open(d),
        (Action::Ask, None) => Tunnel::Ask(d),
        (Action::Deny, None) => Tunnel::Refuse(d),
    }
}

/// Decides on a destination. Deny by default; of the rules that match, an explicit deny beats
/// every allow, and an allow beats every ask.
///
/// The reported rule is the first matching rule of the deciding kind, in the order given. A
/// rule that limits methods or paths is checked where the request is visible (plain HTTP, or
/// a request inside an intercepted tunnel); in an opaque CONNECT tunnel it cannot be, so such
/// an allow rule does not allow the tunnel, such a deny rule refuses it (fail closed) and such
/// an ask rule asks about the whole tunnel. A default deny says why no allow rule applied:
/// none names the host and port, or one does but limits methods or paths this request does not
/// match.
pub fn decide(rules: &[StoredRule], target: &Target) -> Decision {
    let mut allow: Option<&StoredRule> = None;
    let mut ask: Option<&StoredRule> = None;
    let mut deny: Option<(&StoredRule, Option<bool>)> = None;
    // An allow rule for this host and port whose method or path limits do not fit (or cannot
    // be seen): what a default deny explains itself with.
    let mut near: Option<&StoredRule> = None;
    for r in rules {
        if !r.rule.host.matches(&target.host) || !r.rule.port.matches(target.port, &target.kind) {
            continue;
        }
        match (r.rule.action, r.rule.request_matches(&target.kind)) {
            (Action::Allow, Some(true)) => allow = allow.or(Some(r)),
            (Action::Allow, _) => near = near.or(Some(r)),
            (Action::Deny, seen @ (Some(true) | None)) => deny = deny.or(Some((r, seen))),
            (Action::Ask, Some(true) | None) => ask = ask.or(Some(r)),
            _ => {}
        }
    }
    if let Some((r, seen)) = deny {
        return Decision::deny(
            Some(r.id),
            match seen {
                Some(_) => format!("denied by rule {} ({})", r.id, r.scope),
                None => format!(
                    "rule {} ({}) denies some methods or paths on this host, which an opaque \
                     CONNECT tunnel cannot honour",
                    r.id, r.scope
                ),
            },
        );
    }
    if let Some(r) = allow {
        return Decision {
            action: Action::Allow,
            rule: Some(r.id),
            reason: format!("allowed by rule {} ({})", r.id, r.scope),
        };
    }
    if let Some(r) = ask {
        return Decision {
            action: Action::Ask,
            rule: Some(r.id),
            reason: format!("rule {} ({}) asks the user", r.id, r.scope),
        };
    }
    match near {
        Some(r) => Decision::deny(
            None,
            match &target.kind {
                Kind::Connect => format!(
                    "rule {} ({}) allows only {} on this host, which an opaque CONNECT tunnel \
                     does not show (deny by default)",
                    r.id,
                    r.scope,
                    r.rule.limits()
                ),
                Kind::Http { method, path } | Kind::Https { method, path } => format!(
                    "{method} {path} is not what rule {} ({}) allows on this host: {} (deny by \
                     default)",
                    r.id,
                    r.scope,
                    r.rule.limits()
                ),
            },
        ),
        None => Decision::deny(None, "no rule allows this host and port (deny by default)"),
    }
}

/// Decides on the address a name resolved to (or an IP literal), for the same request `kind`
/// that [`decide`] saw: public addresses pass unless an address rule denies them; private,
/// loopback, link-local, CGNAT, multicast and metadata addresses pass only when an allow rule
/// names that address or range.
///
/// Only address rules ([`HostPattern::Net`]) count here. Method and path limits are read as in
/// [`decide`]: an allow rule with them allows only a plain request that matches, and a deny rule
/// with them refuses a matching plain request and every CONNECT tunnel. An address rule with the
/// default port covers every port of the address: which ports a name may be reached on is up to
/// the name's own rule, checked by [`decide`].
pub fn decide_address(
    rules: &[StoredRule],
    name: Option<&Host>,
    addr: IpAddr,
    port: u16,
    kind: &Kind,
) -> Decision {
    let addr = canonical_ip(addr);
    let covers = |r: &StoredRule| {
        matches!(&r.rule.host, HostPattern::Net(n) if n.contains(&addr))
            && match r.rule.port {
                PortSpec::Port(p) => p == port,
                PortSpec::Any | PortSpec::Default => true,
            }
    };
    let deny = rules
        .iter()
        .filter(|r| r.rule.action == Action::Deny && covers(r))
        .find_map(|r| match r.rule.request_matches(kind) {
            Some(true) => Some(Decision::deny(
                Some(r.id),
                format!("address {addr} denied by rule {}", r.id),
            )),
            None => Some(Decision::deny(
                Some(r.id),
                format!(
                    "rule {} denies some methods or paths on address {addr}, which an opaque \
                     CONNECT tunnel cannot honour",
                    r.id
                ),
            )),
            Some(false) => None,
        });
    if let Some(d) = deny {
        return d;
    }
    match classify(addr) {
        AddrClass::Public => Decision {
            action: Action::Allow,
            rule: None,
            reason: format!("{addr} is a public address"),
        },
        // Never through a range or a wildcard: only a rule naming exactly this address, or, for
        // a private, reserved or CGNAT address, an allow rule naming exactly this host that
        // says it may be private.
        class => match rules.iter().find(|r| {
            r.rule.action == Action::Allow
                && r.rule.request_matches(kind) == Some(true)
                && ((covers(r)
                    && matches!(&r.rule.host, HostPattern::Net(n) if n.prefix_len() == n.max_prefix_len()))
                    || (r.rule.private_address
                        && class.may_be_named_private()
                        && matches!(&r.rule.host, HostPattern::Exact(_))
                        && name.is_some_and(|n| r.rule.host.matches(n))
                        && r.rule.port.matches(port, kind)))
        }) {
            Some(r) if r.rule.private_address && !covers(r) => Decision {
                action: Action::Allow,
                rule: Some(r.id),
                reason: format!(
                    "{class} address {addr} allowed for {} by rule {}",
                    r.rule.host, r.id
                ),
            },
            Some(r) => Decision {
                action: Action::Allow,
                rule: Some(r.id),
                reason: format!("{class} address {addr} allowed by rule {}", r.id),
            },
            None => Decision::deny(
                None,
                match (name, class.may_be_named_private()) {
                    (Some(n), true) => format!(
                        "{n} resolved to {addr}, a {class} address; allow it with a rule naming {n} with a private address allowed (--allow-private-address {n}), or naming {addr}"
                    ),
                    _ => format!("{addr} is a {class} address; only a rule naming it allows it"),
                },
            ),
        },
    }
}

#[cfg(test)]
#[path = "rule_tests.rs"]
mod tests;
