//! Published ports: listeners on the host that carry each connection to a port on the
//! sandbox's own loopback, through the backend ([`paddock_core::Execs::dial`]). One way only:
//! the sandbox gets no route to the host's loopback, only answers on connections the host made.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use paddock_confine::relay::Relay;
use paddock_core::Execs;
use paddock_policy::PortMap;

#[derive(Debug)]
struct Active {
    map: PortMap,
    listener: Arc<TcpListener>,
}

/// The published ports of one running sandbox; unpublished on drop.
#[derive(Debug)]
pub struct Forwards {
    execs: Arc<dyn Execs>,
    active: Mutex<Vec<Active>>,
    relay: Arc<Carrier>,
}

/// The ports' relay process, started when the first connection comes.
#[derive(Debug)]
struct Carrier {
    sandbox: String,
    relay: std::sync::OnceLock<Result<Relay, String>>,
}

/// Starts the ports' relay on a thread that stays for the rest of this process: the relay dies
/// with the thread that started it (its parent-death signal), and a connection's thread ends
/// with the connection. The relay itself ends when the ports go ([`Forwards`] dropped).
fn start_relay(sandbox: &str) -> Result<Relay, String> {
    let sandbox = sandbox.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("port-relay".into())
        .spawn(move || {
            let _ = tx.send(Relay::ports(&sandbox));
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the ports' relay did not start".to_owned())?
}

impl Carrier {
    fn carry(&self, client: TcpStream, inside: OwnedFd) {
        match self.relay.get_or_init(|| start_relay(&self.sandbox)) {
            Ok(r) => {
                let _ = client.set_nodelay(true);
                let _ = r.carry(OwnedFd::from(client), inside);
            }
            // Fail closed: the connection ends.
            Err(e) => eprintln!("paddock: a published port's connection was refused: {e}"),
        }
    }
}

impl Forwards {
    /// No ports yet, for the sandbox `sandbox`.
    pub fn new(execs: Arc<dyn Execs>, sandbox: &str) -> Forwards {
        Forwards {
            execs,
            active: Mutex::default(),
            relay: Arc::new(Carrier {
                sandbox: sandbox.to_owned(),
                relay: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Starts forwarding `map`. Fails when its host port cannot be listened on.
    pub fn publish(&self, map: PortMap) -> Result<(), String> {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if active
            .iter()
            .any(|a| a.map.host == map.host && a.map.addr == map.addr)
        {
            return Err(format!("{}:{} is already published", map.addr, map.host));
        }
        let listener = TcpListener::bind((map.addr, map.host)).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                format!(
                    "port {}:{} is already in use on the host",
                    map.addr, map.host
                )
            } else {
                format!("cannot listen on {}:{}: {e}", map.addr, map.host)
            }
        })?;
        let listener = Arc::new(listener);
        let accepting = listener.clone();
        let execs = self.execs.clone();
        let relay = self.relay.clone();
        let port = map.sandbox;
        std::thread::Builder::new()
            .name(format!("port-{}", map.host))
            .spawn(move || {
                for conn in accepting.incoming() {
                    let Ok(conn) = conn else { break };
                    let execs = execs.clone();
                    let relay = relay.clone();
                    let _ = std::thread::Builder::new()
                        .name("port-conn".into())
                        .spawn(move || {
                            // Nothing listening there: the connection just ends.
                            if let Ok(inside) = execs.dial(port) {
                                relay.carry(conn, inside);
                            }
                        });
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        active.push(Active { map, listener });
        Ok(())
    }

    /// Stops forwarding the host port `host` (connections already made go on). Returns whether
    /// it was published.
    pub fn unpublish(&self, host: u16) -> bool {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        let before = active.len();
        active.retain(|a| {
            if a.map.host == host {
                // Wakes the accepting thread, which then ends.
                let _ = rustix::net::shutdown(a.listener.as_fd(), rustix::net::Shutdown::Read);
                false
            } else {
                true
            }
        });
        active.len() != before
    }

    /// What is published.
    pub fn list(&self) -> Vec<PortMap> {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        active.iter().map(|a| a.map).collect()
    }
}

impl Drop for Forwards {
    fn drop(&mut self) {
        for m in self.list() {
            self.unpublish(m.host);
        }
    }
}
