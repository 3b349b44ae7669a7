//! Name resolution, done by the proxy after the rule check.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use paddock_policy::net::{Host, canonical_ip};

/// The environment variable that maps names to addresses for tests
/// (`name=addr[,addr];name=addr`), in the way `curl --resolve` does; `name=` does not resolve.
/// Names listed there are never sent to the system resolver.
pub const TEST_OVERRIDE_ENV: &str = "PADDOCK_TEST_RESOLVE";

/// Resolves names.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    overrides: HashMap<String, Vec<IpAddr>>,
}

impl Resolver {
    /// The system resolver.
    pub fn system() -> Resolver {
        Resolver::default()
    }

    /// The system resolver with `overrides` answered locally.
    pub fn with_overrides(overrides: HashMap<String, Vec<IpAddr>>) -> Resolver {
        Resolver { overrides }
    }

    /// Reads overrides in the [`TEST_OVERRIDE_ENV`] format.
    pub fn parse_overrides(spec: &str) -> Result<HashMap<String, Vec<IpAddr>>, String> {
        let mut out = HashMap::new();
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, addrs) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?}: expected name=address"))?;
            let Host::Name(name) = Host::parse(name.trim()).map_err(|e| e.to_string())? else {
                return Err(format!("{entry:?}: the name is an address"));
            };
            let addrs = addrs
                .split(',')
                .filter(|a| !a.trim().is_empty())
                .map(|a| {
                    a.trim()
                        .parse::<IpAddr>()
                        .map_err(|e| format!("{entry:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.insert(name, addrs);
        }
        Ok(out)
    }

    /// Every address of `host` (an address is itself).
    pub async fn resolve(&self, host: &Host, port: u16) -> io::Result<Vec<IpAddr>> {
        let name = match host {
            Host::Ip(a) => return Ok(vec![*a]),
            Host::Name(n) => n,
        };
        match self.overrides.get(name) {
            // A name listed with no address does not resolve.
            Some(a) if a.is_empty() => {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no addresses"));
            }
            Some(a) => return Ok(a.clone()),
            None => {}
        }
        let addrs: Vec<IpAddr> = tokio::net::lookup_host((name.as_str(), port))
            .await?
            .map(|sa| canonical_ip(sa.ip()))
            .collect();
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no addresses"));
        }
        Ok(addrs)
    }
}
