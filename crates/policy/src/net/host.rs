//! Canonical destination hosts.
//!
//! Every destination the proxy sees (a CONNECT target, an absolute-form URI, a Host header) goes
//! through [`Host::parse`] once. The result is the one value used for the rule decision, the
//! connection and the audit log, so no later step can read the name differently.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Why a host could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// the host is empty
    #[error("the host is empty")]
    Empty,
    /// a character outside letters, digits, hyphens and dots
    #[error("the host {host:?} contains {ch:?}; only letters, digits, '-' and '.' are allowed")]
    BadChar {
        /// The host as given.
        host: String,
        /// The first offending character.
        ch: char,
    },
    /// an internationalised name that does not convert to punycode
    #[error("the host {0:?} is not a valid internationalised domain name")]
    Idna(String),
    /// a label is empty or longer than 63 bytes, or the name is longer than 253
    #[error("the host {0:?} has an empty or over-long label")]
    Label(String),
    /// a label starts or ends with a hyphen
    #[error("the host {0:?} has a label that starts or ends with '-'")]
    Hyphen(String),
    /// looks like an IP address but is not a valid one
    #[error("the host {0:?} looks like an IP address but is not one")]
    BadAddress(String),
}

/// A destination host in its one canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Host {
    /// A DNS name: lower case, ASCII (punycode), no trailing dot.
    Name(String),
    /// An IP address, however it was spelled.
    Ip(IpAddr),
}

impl Host {
    /// Reads a host as a client sent it (without port). IPv6 literals may be bracketed.
    pub fn parse(raw: &str) -> Result<Host, HostError> {
        if raw.is_empty() {
            return Err(HostError::Empty);
        }
        if let Some(inner) = raw.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| HostError::BadAddress(raw.into()))?;
            return inner
                .parse::<Ipv6Addr>()
                .map(|a| Host::Ip(canonical_ip(IpAddr::V6(a))))
                .map_err(|_| HostError::BadAddress(raw.into()));
        }
        if raw.contains(':') {
            // A bare IPv6 literal (as in a rule); anything else with ':' is not a host.
            return raw
                .parse::<Ipv6Addr>()
                .map(|a| Host::Ip(canonical_ip(IpAddr::V6(a))))
                .map_err(|_| HostError::BadChar {
                    host: raw.into(),
                    ch: ':',
                });
        }
        if let Some(ch) = raw
            .chars()
            .find(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
        {
            return Err(HostError::BadChar {
                host: raw.into(),
                ch,
            });
        }
        let ascii = if raw.is_ascii() {
            raw.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii_strict(raw).map_err(|_| HostError::Idna(raw.into()))?
        };
        let name = ascii.strip_suffix('.').unwrap_or(&ascii);
        if name.is_empty() {
            return Err(HostError::Empty);
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
        {
            return Err(HostError::BadChar {
                host: raw.into(),
                ch,
            });
        }
        // WHATWG: a name whose last label is numeric is an IPv4 address in one of the spellings
        // inet_aton accepts, or invalid.
        let last = name.rsplit('.').next().unwrap_or(name);
        if looks_numeric(last) {
            return parse_ipv4_any(name)
                .map(|a| Host::Ip(IpAddr::V4(a)))
                .ok_or_else(|| HostError::BadAddress(raw.into()));
        }
        if name.len() > 253 {
            return Err(HostError::Label(raw.into()));
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(HostError::Label(raw.into()));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(HostError::Hyphen(raw.into()));
            }
        }
        Ok(Host::Name(name.to_owned()))
    }

    /// The IP address, when the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(a) => Some(*a),
            Host::Name(_) => None,
        }
    }

    /// The form to put in a URL authority (`[..]` around IPv6).
    pub fn authority(&self, port: u16) -> String {
        match self {
            Host::Ip(IpAddr::V6(a)) => format!("[{a}]:{port}"),
            other => format!("{other}:{port}"),
        }
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address it carries.
pub fn canonical_ip(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn looks_numeric(label: &str) -> bool {
    !label.is_empty()
        && (label.bytes().all(|b| b.is_ascii_digit())
            || ((label.starts_with("0x") || label.starts_with("0X"))
                && label[2..].bytes().all(|b| b.is_ascii_hexdigit())))
}

/// One part of an inet_aton address: decimal, octal (leading 0) or hex (0x).
fn parse_part(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() {
        // "0x" alone is zero, as in the URL standard.
        return (radix == 16).then_some(0);
    }
    if digits.len() > 12 || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Parses every IPv4 spelling inet_aton and URL parsers accept: `a.b.c.d`, `a.b.c`, `a.b`, `a`,
/// each part decimal, octal or hex (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`).
pub fn parse_ipv4_any(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let nums: Vec<u64> = parts.iter().map(|p| parse_part(p)).collect::<Option<_>>()?;
    let (last, init) = nums.split_last()?;
    if init.iter().any(|n| *n > 255) {
        return None;
    }
    let width = 8 * (5 - nums.len() as u32);
    if width < 64 && *last >= (1u64 << width) {
        return None;
    }
    let mut v: u64 = *last;
    for (i, n) in init.iter().enumerate() {
        v |= n << (24 - 8 * i as u32);
    }
    u32::try_from(v).ok().map(Ipv4Addr::from)
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(a) => write!(f, "{a}"),
        }
    }
}

impl TryFrom<String> for Host {
    type Error = HostError;
    fn try_from(s: String) -> Result<Host, HostError> {
        Host::parse(&s)
    }
}

impl From<Host> for String {
    fn from(h: Host) -> String {
        h.to_string()
    }
}

/// Splits `host[:port]` (with `[v6]:port`) into the host text and the port.
pub fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), HostError> {
    let bad = || HostError::BadAddress(authority.into());
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or_else(bad)?;
        let (h, rest) = authority.split_at(end + 1);
        return match rest {
            "" => Ok((h, None)),
            _ => {
                let p = rest.strip_prefix(':').ok_or_else(bad)?;
                Ok((h, Some(parse_port(p).ok_or_else(bad)?)))
            }
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h, Some(parse_port(p).ok_or_else(bad)?))),
        Some(_) => Ok((authority, None)),
        None => Ok((authority, None)),
    }
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|n| *n != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    #[test]
    fn canonical_names() {
        let cases = [
            ("Example.COM", Host::Name("example.com".into())),
            ("example.com.", Host::Name("example.com".into())),
            ("bücher.example", Host::Name("xn--bcher-kva.example".into())),
            ("a-b.c", Host::Name("a-b.c".into())),
            (
                "xn--bcher-kva.example",
                Host::Name("xn--bcher-kva.example".into()),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(Host::parse(raw), Ok(want), "{raw}");
        }
    }

    #[test]
    fn ip_spellings_are_the_address() {
        for raw in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "127.1",
            "127.0.1",
            "0x7f.1",
            "[::ffff:7f00:1]",
            "[::ffff:127.0.0.1]",
            "127.0.0.1.",
        ] {
            assert_eq!(Host::parse(raw), Ok(ip("127.0.0.1")), "{raw}");
        }
        assert_eq!(Host::parse("[::1]"), Ok(ip("::1")));
        assert_eq!(Host::parse("::1"), Ok(ip("::1")));
        assert_eq!(Host::parse("0"), Ok(ip("0.0.0.0")));
    }

    #[test]
    fn refused() {
        for raw in [
            "",
            ".",
            "a..b",
            "exa mple.com",
            "evil.com%2f.example.com",
            "user@example.com",
            "a\\b.com",
            "a\0b.com",
            "256.1.1.1",
            "1.2.3.4.5",
            "-a.com",
            "a-.com",
            "[::1",
            "[zz::]",
            "a:b",
            "example.com:80",
            "1.2.3.08",
        ] {
            assert!(Host::parse(raw).is_err(), "{raw:?} accepted");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(Host::parse(&long).is_err());
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a.com:443"), Ok(("a.com", Some(443))));
        assert_eq!(split_host_port("a.com"), Ok(("a.com", None)));
        assert_eq!(split_host_port("[::1]:80"), Ok(("[::1]", Some(80))));
        assert_eq!(split_host_port("[::1]"), Ok(("[::1]", None)));
        assert!(split_host_port("a.com:").is_err());
        assert!(split_host_port("a.com:0").is_err());
        assert!(split_host_port("a.com:65536").is_err());
        assert!(split_host_port("a.com:+80").is_err());
        assert!(split_host_port("[::1]x").is_err());
    }
}
