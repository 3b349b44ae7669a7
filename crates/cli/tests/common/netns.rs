//! A network of the test's own: a network namespace joined to the host's by a veth pair, with
//! private addresses, where servers play a company's machines (a mirror on a private address).

use std::path::Path;
use std::process::Command;

use super::{PyServer, STATIC_SERVER, py_server_with};

/// A network namespace with address `peer` inside, reachable from the host at `host`'s side of
/// a /30. Removed (with its veth pair) when dropped.
pub struct TestNet {
    /// The namespace's name.
    pub name: String,
    /// The address inside the namespace.
    pub peer: String,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl TestNet {
    /// Makes the namespace (root only). The /30 is picked from 10.251.0.0/16 by process id and
    /// a counter, so that parallel tests and suites do not collide.
    pub fn new() -> TestNet {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::Relaxed)) % 16_000;
        let (hi, lo) = (n / 64, (n % 64) * 4);
        let name = format!("paddock-t{n}");
        let (host_if, peer_if) = (format!("pdt{n}h"), format!("pdt{n}p"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &name]);
        let net = TestNet {
            name: name.clone(),
            peer: format!("10.251.{hi}.{}", lo + 2),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if, "netns", &name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("10.251.{hi}.{}/30", lo + 1),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/30", net.peer), "dev", &peer_if]);
        inside(&["link", "set", &peer_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        net
    }

    /// Serves the files of `root` at the namespace's address, over TLS with `(cert, key)`.
    pub fn static_server(&self, root: &Path, cert: &Path, key: &Path) -> PyServer {
        let mut python = Command::new("ip");
        python.args(["netns", "exec", &self.name, "python3"]);
        py_server_with(
            python,
            STATIC_SERVER,
            &[
                root.as_os_str(),
                cert.as_os_str(),
                key.as_os_str(),
                self.peer.as_ref(),
            ],
        )
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
