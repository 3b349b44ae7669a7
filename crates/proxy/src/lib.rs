//! Paddock's egress proxy: the only way out of a sandbox.
//!
//! The proxy accepts connections from any source a backend hands it (a listening socket inside
//! the sandbox's network namespace, a Unix socket, vsock) and never knows which backend that is.
//! Each request is decided on its own against the sandbox's rules ([`paddock_policy::net`]):
//! deny by default, explicit deny wins. Names are resolved here, after the rule check, and the
//! connection goes to exactly the address that was checked, or, on a network with a proxy of
//! its own, through that proxy ([`upstream`]). Every decision is written to the audit log.
#![forbid(unsafe_code)]

pub mod head;

pub mod ask;
pub mod audit;
mod body;
pub mod channel;
mod guard;
pub mod intercept;
pub mod resolve;
pub mod rules;
mod server;
mod splice;
mod tls_end;
pub mod upstream;

use std::sync::Arc;

pub use server::{DECISION_HEADER, ProxyConfig};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// the runtime or a listener could not be set up
    #[error("egress proxy: {what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running proxy. Dropping it (or [`ProxyHandle::stop`]) stops accepting, ends open tunnels and
/// writes their end records.
#[derive(Debug)]
pub struct ProxyHandle {
    runtime: Option<tokio::runtime::Runtime>,
}

impl ProxyHandle {
    /// Stops the proxy.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_millis(500));
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A listening socket the proxy accepts sandbox connections from.
#[derive(Debug)]
pub enum Listener {
    /// TCP (e.g. bound inside a sandbox's network namespace).
    Tcp(std::net::TcpListener),
    /// A Unix socket (e.g. where a VM's vsock connections to the proxy port arrive).
    Unix(std::os::unix::net::UnixListener),
}

/// Starts serving `listeners` (already bound and listening, e.g. inside a sandbox's network
/// namespace) on a runtime of its own with `threads` workers.
pub fn start(
    cfg: ProxyConfig,
    listeners: Vec<Listener>,
    threads: usize,
) -> Result<ProxyHandle, ProxyError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| ProxyError::Io { what, source }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("paddock-proxy")
        .enable_io()
        .enable_time()
        .build()
        .map_err(io("cannot start the proxy runtime"))?;
    let cfg = Arc::new(cfg);
    for l in listeners {
        let _guard = rt.enter();
        match l {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)
                    .map_err(io("cannot make the proxy listener non-blocking"))?;
                let listener = tokio::net::TcpListener::from_std(l)
                    .map_err(io("cannot register the proxy listener"))?;
                let cfg = cfg.clone();
                rt.spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, peer)) => {
                                let client = peer.to_string();
                                tokio::spawn(server::serve_connection(cfg.clone(), stream, client));
                            }
                            Err(e) => accept_failed(e).await,
                        }
                    }
                });
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)
                    .map_err(io("cannot make the proxy listener non-blocking"))?;
                let listener = tokio::net::UnixListener::from_std(l)
                    .map_err(io("cannot register the proxy listener"))?;
                let cfg = cfg.clone();
                rt.spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => {
                                let client = "vsock".to_owned();
                                tokio::spawn(server::serve_connection(cfg.clone(), stream, client));
                            }
                            Err(e) => accept_failed(e).await,
                        }
                    }
                });
            }
        }
    }
    Ok(ProxyHandle { runtime: Some(rt) })
}

async fn accept_failed(e: std::io::Error) {
    tracing::warn!("proxy accept failed: {e}");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}
