//! The accept loop: who may connect, TLS, HTTP/1.1 per connection, and a graceful end.

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::listen::{Endpoint, ListenConfig, ListenError};
use crate::tls::TlsError;
use crate::token::{Token, TokenError, require_token};
use crate::unix::{BoundSocket, peer_allowed};

/// Connections served at once; the next waits in the kernel's backlog until one ends.
const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers) read.
const MAX_HEAD: usize = 64 * 1024;
/// How long requests in flight may finish after the server was told to stop.
const GRACE: Duration = Duration::from_secs(5);

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// the configuration would expose the API
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// a server answers on the socket, or holds its lock
    #[error("another server is serving on {0:?}")]
    AlreadyServing(PathBuf),
    /// something other than a socket is at the socket's path
    #[error("{0:?} exists and is not a socket: remove it or choose another path")]
    NotASocket(PathBuf),
    /// making the unix socket failed
    #[error("cannot listen on the unix socket {path:?}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// binding the TCP address failed
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// the token could not be read or made
    #[error(transparent)]
    Token(#[from] TokenError),
    /// the certificate or key could not be used
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A bound server, not yet accepting: [`Server::endpoint`] says where it listens (with the port
/// the kernel chose), [`Server::run`] serves.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    endpoint: Endpoint,
}

enum Listener {
    Unix {
        listener: UnixListener,
        /// Removes the socket file when the server ends.
        _socket: BoundSocket,
        uid: u32,
    },
    Tcp {
        listener: TcpListener,
        token: Arc<Token>,
        tls: Option<TlsAcceptor>,
    },
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listener::Unix { listener, uid, .. } => f
                .debug_struct("Unix")
                .field("listener", listener)
                .field("uid", uid)
                .finish_non_exhaustive(),
            Listener::Tcp { listener, tls, .. } => f
                .debug_struct("Tcp")
                .field("listener", listener)
                .field("tls", &tls.is_some())
                .finish_non_exhaustive(),
        }
    }
}

impl Server {
    /// Checks `config` ([`ListenConfig::check`]), reads or makes the token, loads TLS, then
    /// binds. Nothing is bound when a check fails.
    pub async fn bind(config: ListenConfig) -> Result<Server, ServeError> {
        config.check()?;
        match config {
            ListenConfig::Unix { socket } => {
                let (listener, bound) = crate::unix::bind(&socket)?;
                let io = |source| ServeError::Socket {
                    path: socket.clone(),
                    source,
                };
                listener.set_nonblocking(true).map_err(io)?;
                let listener = UnixListener::from_std(listener).map_err(io)?;
                Ok(Server {
                    endpoint: Endpoint::Unix(bound.path().to_owned()),
                    listener: Listener::Unix {
                        listener,
                        _socket: bound,
                        uid: rustix::process::geteuid().as_raw(),
                    },
                })
            }
            ListenConfig::Tcp {
                addr,
                token_file,
                tls,
            } => {
                let token = Arc::new(Token::load_or_create(&token_file)?);
                let tls = tls.as_ref().map(crate::tls::acceptor).transpose()?;
                let bind = |source| ServeError::Bind { addr, source };
                let listener = TcpListener::bind(addr).await.map_err(bind)?;
                let local = listener.local_addr().map_err(bind)?;
                Ok(Server {
                    endpoint: Endpoint::Tcp {
                        addr: local,
                        tls: tls.is_some(),
                        token_file,
                    },
                    listener: Listener::Tcp {
                        listener,
                        token,
                        tls,
                    },
                })
            }
        }
    }

    /// Where the server listens.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Serves `app` until `shutdown` completes; then lets requests in flight finish (a few
    /// seconds at most) and removes the unix socket. On TCP every request needs the token.
    pub async fn run(self, app: Router, shutdown: impl Future<Output = ()>) {
        let (stop, stopped) = watch::channel(());
        let mut conns = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        let app = match &self.listener {
            Listener::Unix { .. } => app,
            Listener::Tcp { token, .. } => app.layer(axum::middleware::from_fn_with_state(
                Arc::clone(token),
                require_token,
            )),
        };
        loop {
            while conns.try_join_next().is_some() {}
            if conns.len() >= MAX_CONNECTIONS {
                tokio::select! {
                    () = &mut shutdown => break,
                    _ = conns.join_next() => continue,
                }
            }
            let app = app.clone();
            let stopped = stopped.clone();
            match &self.listener {
                Listener::Unix { listener, uid, .. } => {
                    let accepted = tokio::select! {
                        () = &mut shutdown => break,
                        r = listener.accept() => r,
                    };
                    match accepted {
                        Ok((stream, _)) => {
                            let peer = stream.peer_cred().map(|c| c.uid());
                            match peer {
                                Ok(peer) if peer_allowed(*uid, peer) => {
                                    conns.spawn(connection(stream, app, stopped));
                                }
                                // Closed before a byte is read.
                                _ => drop(stream),
                            }
                        }
                        Err(_) => pause_after_accept_error().await,
                    }
                }
                Listener::Tcp { listener, tls, .. } => {
                    let accepted = tokio::select! {
                        () = &mut shutdown => break,
                        r = listener.accept() => r,
                    };
                    match accepted {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            conns.spawn(tcp_connection(stream, tls.clone(), app, stopped));
                        }
                        Err(_) => pause_after_accept_error().await,
                    }
                }
            }
        }
        let _ = stop.send(());
        let drained = async { while conns.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(GRACE, drained).await;
        conns.abort_all();
        // Dropping `self` closes the listener and removes the unix socket.
    }
}

/// Binds as `config` says and serves `app` until `shutdown` completes.
pub async fn serve(
    config: ListenConfig,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    Server::bind(config).await?.run(app, shutdown).await;
    Ok(())
}

/// A future that completes at the first SIGINT or SIGTERM; the handlers are in place when this
/// returns (so a signal that comes after it is not lost).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// After a failed accept (out of descriptors, an aborted connection): wait a moment rather than
/// spin.
async fn pause_after_accept_error() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn tcp_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    app: Router,
    stopped: watch::Receiver<()>,
) {
    match tls {
        None => connection(stream, app, stopped).await,
        Some(tls) => {
            if let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await
            {
                connection(stream, app, stopped).await;
            }
        }
    }
}

/// Serves HTTP/1.1 (with upgrades) on one connection until it ends, or until the server stops
/// (then the request in flight finishes and the connection closes).
async fn connection<I>(io: I, app: Router, mut stopped: watch::Receiver<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    let conn = http
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
        .with_upgrades();
    let mut conn = pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped.changed() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}
