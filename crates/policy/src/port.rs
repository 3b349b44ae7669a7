//! Published ports: `-p [ADDR:][HOST_PORT:]SANDBOX_PORT`, or a range `1455-1465` published at
//! the same numbers.

use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a port specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// not of the expected shape
    #[error(
        "invalid port {0:?}: expected [ADDR:][HOST_PORT:]SANDBOX_PORT (e.g. 8080, 3000:8080, 0.0.0.0:3000:8080) or a range such as 1455-1465"
    )]
    Syntax(String),
    /// a number outside 1-65535
    #[error("invalid port {0:?}: ports are 1-65535")]
    Range(String),
}

/// One port of the host forwarded to a port on the sandbox's own loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMap {
    /// Host address listened on (127.0.0.1 unless the user wrote one).
    pub addr: IpAddr,
    /// Host port.
    pub host: u16,
    /// Port inside the sandbox.
    pub sandbox: u16,
    /// Published by an agent preset: one that cannot be bound is skipped with a warning
    /// instead of stopping the start.
    #[serde(default)]
    pub auto: bool,
}

impl std::fmt::Display for PortMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = match self.addr {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        };
        write!(f, "{addr}:{} -> {}", self.host, self.sandbox)
    }
}

fn port(s: &str, spec: &str) -> Result<u16, PortError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortError::Syntax(spec.to_owned()));
    }
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(PortError::Range(spec.to_owned())),
    }
}

/// Parses one `-p` value into the ports it publishes.
pub fn parse_ports(spec: &str) -> Result<Vec<PortMap>, PortError> {
    let syntax = || PortError::Syntax(spec.to_owned());
    // The address: everything before the last two colon-separated parts (an IPv6 address is
    // written in brackets).
    let (addr, rest) = if let Some(r) = spec.strip_prefix('[') {
        let (a, rest) = r.split_once("]:").ok_or_else(syntax)?;
        (a.parse::<IpAddr>().map_err(|_| syntax())?, rest)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            1 | 2 => (IpAddr::from([127, 0, 0, 1]), spec),
            3 => (
                parts[0].parse::<IpAddr>().map_err(|_| syntax())?,
                &spec[parts[0].len() + 1..],
            ),
            _ => return Err(syntax()),
        }
    };
    let (host, sandbox) = match rest.split_once(':') {
        Some((h, s)) => (h, s),
        None => (rest, rest),
    };
    let range = |s: &str| -> Result<(u16, u16), PortError> {
        match s.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a, spec)?, port(b, spec)?);
                if a > b || b - a > 1000 {
                    return Err(syntax());
                }
                Ok((a, b))
            }
            None => {
                let p = port(s, spec)?;
                Ok((p, p))
            }
        }
    };
    let (h0, h1) = range(host)?;
    let (s0, s1) = range(sandbox)?;
    if h1 - h0 != s1 - s0 {
        return Err(syntax());
    }
    Ok((0..=h1 - h0)
        .map(|i| PortMap {
            addr,
            host: h0 + i,
            sandbox: s0 + i,
            auto: false,
        })
        .collect())
}

impl FromStr for PortMap {
    type Err = PortError;

    /// One port (not a range).
    fn from_str(s: &str) -> Result<PortMap, PortError> {
        match parse_ports(s)?.as_slice() {
            [one] => Ok(*one),
            _ => Err(PortError::Syntax(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let one = |s: &str| parse_ports(s).unwrap();
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(
            one("8080"),
            [PortMap {
                addr: lo,
                host: 8080,
                sandbox: 8080,
                auto: false
            }]
        );
        assert_eq!(one("3000:8080")[0].host, 3000);
        assert_eq!(one("3000:8080")[0].sandbox, 8080);
        assert_eq!(one("0.0.0.0:3000:8080")[0].addr, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(
            one("[::1]:3000:8080")[0].addr,
            "::1".parse::<IpAddr>().unwrap()
        );
        let r = one("1455-1465");
        assert_eq!(r.len(), 11);
        assert_eq!((r[10].host, r[10].sandbox), (1465, 1465));
        for bad in [
            "", "0", "70000", "a", "1:2:3:4", "10-5", "1-3:4-5", "x:1:2", "8080:", "-1",
        ] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
        assert!("1455-1465".parse::<PortMap>().is_err());
    }
}
