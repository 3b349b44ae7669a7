//! Where the server listens, and which transports a configuration may use.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where `paddock serve` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenConfig {
    /// A unix socket (mode 0600, peers of the server's own uid only): the default.
    Unix {
        /// The socket's path; its directory must exist.
        socket: PathBuf,
    },
    /// TCP: every request needs the bearer token; a non-loopback address needs TLS too.
    Tcp {
        /// The address to bind.
        addr: SocketAddr,
        /// The token's file, made (mode 0600) with a new random token when missing.
        token_file: PathBuf,
        /// Certificate and key, both PEM.
        tls: Option<TlsFiles>,
    },
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A configuration the server refuses before it binds anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// plain TCP on an address other hosts can reach
    #[error(
        "{0} is not a loopback address: serving there needs TLS (--tls-cert and --tls-key), or \
         listen on 127.0.0.1 or ::1"
    )]
    NeedsTls(SocketAddr),
}

impl ListenConfig {
    /// Refuses a configuration that would expose the API: see [`check_tcp`].
    pub fn check(&self) -> Result<(), ListenError> {
        match self {
            ListenConfig::Unix { .. } => Ok(()),
            ListenConfig::Tcp { addr, tls, .. } => check_tcp(*addr, tls.is_some()),
        }
    }
}

/// Whether TCP on `addr` may be served, `tls` or not. A token is always required on TCP (the
/// configuration has no way to leave it out); plain HTTP only on loopback, where nothing crosses
/// a network. An unspecified address (`0.0.0.0`, `::`) listens on every interface, so it is not
/// loopback.
pub fn check_tcp(addr: SocketAddr, tls: bool) -> Result<(), ListenError> {
    if tls || addr.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(ListenError::NeedsTls(addr))
    }
}

/// Where a bound server listens, for people and clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP address.
    Tcp {
        /// The bound address (with the port the kernel chose for port 0).
        addr: SocketAddr,
        /// Whether it speaks TLS.
        tls: bool,
        /// The token's file.
        token_file: PathBuf,
    },
}

impl Endpoint {
    /// The base URL clients use (`http://x` for a unix socket, as curl wants one).
    pub fn url(&self) -> String {
        match self {
            Endpoint::Unix(_) => "http://localhost".to_owned(),
            Endpoint::Tcp { addr, tls, .. } => {
                format!("{}://{addr}", if *tls { "https" } else { "http" })
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix socket {}", p.display()),
            Endpoint::Tcp { token_file, .. } => write!(
                f,
                "{} (requests need the bearer token in {})",
                self.url(),
                token_file.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_needs_tls_off_loopback() {
        let cases: &[(&str, bool, Result<(), ()>)] = &[
            ("127.0.0.1:8080", false, Ok(())),
            ("127.1.2.3:8080", false, Ok(())),
            ("[::1]:8080", false, Ok(())),
            ("[::ffff:127.0.0.1]:8080", false, Ok(())),
            ("127.0.0.1:8080", true, Ok(())),
            ("0.0.0.0:8080", false, Err(())),
            ("[::]:8080", false, Err(())),
            ("192.168.1.10:8080", false, Err(())),
            ("[fe80::1]:8080", false, Err(())),
            ("[::ffff:10.0.0.1]:8080", false, Err(())),
            ("0.0.0.0:8080", true, Ok(())),
            ("[::]:8080", true, Ok(())),
            ("192.168.1.10:443", true, Ok(())),
        ];
        for (addr, tls, want) in cases {
            let addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
            let want = want.map_err(|()| ListenError::NeedsTls(addr));
            assert_eq!(check_tcp(addr, *tls), want, "{addr} tls={tls}");
        }
    }

    #[test]
    fn config_check() {
        let unix = ListenConfig::Unix {
            socket: "/run/api.sock".into(),
        };
        assert_eq!(unix.check(), Ok(()));
        let tcp = |addr: &str, tls: bool| ListenConfig::Tcp {
            addr: addr.parse().unwrap_or_else(|e| panic!("{e}")),
            token_file: "/state/api-token".into(),
            tls: tls.then(|| TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into(),
            }),
        };
        assert_eq!(tcp("127.0.0.1:1", false).check(), Ok(()));
        assert_eq!(tcp("10.0.0.1:1", true).check(), Ok(()));
        assert!(matches!(
            tcp("10.0.0.1:1", false).check(),
            Err(ListenError::NeedsTls(_))
        ));
    }
}
