//! Published ports: listeners on the host that carry each connection to a port on the
//! sandbox's own loopback, through the backend ([`paddock_core::Execs::dial`]). One way only:
//! the sandbox gets no route to the host's loopback, only answers on connections the host made.

use std::fs::File;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, PoisonError};

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
}

impl Forwards {
    /// No ports yet.
    pub fn new(execs: Arc<dyn Execs>) -> Forwards {
        Forwards {
            execs,
            active: Mutex::default(),
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
        let port = map.sandbox;
        std::thread::Builder::new()
            .name(format!("port-{}", map.host))
            .spawn(move || {
                for conn in accepting.incoming() {
                    let Ok(conn) = conn else { break };
                    let execs = execs.clone();
                    let _ = std::thread::Builder::new()
                        .name("port-conn".into())
                        .spawn(move || carry(conn, execs.as_ref(), port));
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

fn carry(client: TcpStream, execs: &dyn Execs, port: u16) {
    let Ok(inside) = execs.dial(port) else {
        // Nothing listens there: the connection just ends.
        return;
    };
    let _ = client.set_nodelay(true);
    let inside = File::from(inside);
    let (Ok(mut client_r), Ok(mut inside_w)) = (client.try_clone(), inside.try_clone()) else {
        return;
    };
    let mut inside_r = inside;
    let mut client_w = client;
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut inside_w);
        let _ = rustix::net::shutdown(&inside_w, rustix::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut inside_r, &mut client_w);
    let _ = client_w.shutdown(Shutdown::Write);
    let _ = up.join();
}
