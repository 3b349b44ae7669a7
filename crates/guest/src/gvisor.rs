//! pid 1 of a gVisor sandbox.
//!
//! runsc starts this helper as the container's process with two stream sockets the host passed
//! in (`--pass-fd`), and nothing else reaches the host: the sandbox has no network but its own
//! loopback and no host socket paths. On descriptor 3 the host sends one byte and a connected
//! socket for each command to run (the same exec protocol a VM's helper serves over vsock); on
//! descriptor 4 this helper asks for one stream to the egress proxy per connection made to
//! `127.0.0.1:3128`, and the host answers with it. With `--sudo` it also serves `sudo` for the
//! agent ([`crate::sudo`]), since gVisor ignores set-user-id bits.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use crate::reaper::Reaper;
use crate::{egress, session, sudo};

/// The descriptor sessions arrive on.
const SESSIONS_FD: i32 = 3;
/// The descriptor proxy streams are asked for on.
const PROXY_FD: i32 = 4;
/// Sent once on the session socket when the helper is ready.
const READY: u8 = b'R';

/// How often the processes are counted against gVisor's process limit.
const NPROC_SAMPLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Watches for the sandbox running into its process limit. gVisor enforces it as
/// `RLIMIT_NPROC`, per user, and keeps no counter of refused forks that the host could read;
/// so a thread counts each user's processes (the owners of `/proc/PID`) a few times a second,
/// and one user at the limit is noted for the command's exit report. A limit reached and left
/// between two samples goes unseen.
fn watch_process_limit() {
    let limit = match rustix::process::getrlimit(rustix::process::Resource::Nproc).current {
        Some(l) if l > 0 => l,
        _ => return,
    };
    let _ = std::thread::Builder::new()
        .name("nproc".into())
        .spawn(move || {
            use std::os::unix::fs::MetadataExt;
            loop {
                std::thread::sleep(NPROC_SAMPLE);
                let Ok(dir) = std::fs::read_dir("/proc") else {
                    return;
                };
                let mut per_user: std::collections::HashMap<u32, u64> = Default::default();
                for e in dir.flatten() {
                    if e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                        && let Ok(m) = e.metadata()
                    {
                        *per_user.entry(m.uid()).or_default() += 1;
                    }
                }
                if per_user.values().any(|n| *n >= limit) {
                    session::note_limit(format!(
                        "pids limit: one user reached the limit of {limit} processes (more are refused)"
                    ));
                }
            }
        });
}

/// Serves the sandbox until the host closes the session socket. Never returns.
pub fn run(egress_wanted: bool, sudo_wanted: bool) -> ! {
    // SAFETY: the host passes exactly these two descriptors (runsc `--pass-fd`); nothing else
    // in this process owns them.
    let (sessions, proxy) = unsafe {
        (
            OwnedFd::from_raw_fd(SESSIONS_FD),
            OwnedFd::from_raw_fd(PROXY_FD),
        )
    };
    for fd in [&sessions, &proxy] {
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
    }
    if egress_wanted {
        let proxy = Mutex::new(proxy);
        let dial: egress::Dial = Arc::new(move || {
            let sock = proxy.lock().unwrap_or_else(PoisonError::into_inner);
            paddock_init::send_byte(sock.as_fd(), 1, None)?;
            match paddock_init::recv_byte(sock.as_fd())? {
                Some((_, Some(fd))) => Ok(File::from(fd)),
                _ => Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "the host gave no proxy stream",
                )),
            }
        });
        if let Err(e) = egress::start(dial) {
            eprintln!("paddock-guest: network failed: cannot listen on 127.0.0.1:3128: {e}");
            std::process::exit(paddock_wire::EXIT_SETUP_FAILED);
        }
    }
    watch_process_limit();
    let reaper = Arc::new(Reaper::default());
    if sudo_wanted && let Err(e) = sudo::serve(reaper.clone()) {
        eprintln!(
            "paddock-guest: sudo failed: cannot listen on {}: {e}",
            sudo::SOCKET
        );
        std::process::exit(paddock_wire::EXIT_SETUP_FAILED);
    }
    if let Err(e) = paddock_init::send_byte(sessions.as_fd(), READY, None) {
        eprintln!("paddock-guest: cannot reach the host: {e}");
        std::process::exit(paddock_wire::EXIT_SETUP_FAILED);
    }
    {
        let reaper = reaper.clone();
        let spawned = std::thread::Builder::new()
            .name("sessions".into())
            .spawn(move || {
                loop {
                    match paddock_init::recv_byte(sessions.as_fd()) {
                        Ok(Some((paddock_wire::vm::FORWARD_BYTE, Some(conn)))) => {
                            let _ = std::thread::Builder::new()
                                .name("forward".into())
                                .spawn(move || egress::forward(File::from(conn)));
                        }
                        Ok(Some((_, Some(conn)))) => {
                            let reaper = reaper.clone();
                            let _ = std::thread::Builder::new()
                                .name("exec".into())
                                .spawn(move || session::serve(File::from(conn), &reaper, true));
                        }
                        Ok(Some((_, None))) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
                // The host is done with the sandbox (or gone): end everything.
                // SAFETY: kill(-1) signals every process but this one; no memory effects.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                std::process::exit(0)
            });
        if let Err(e) = spawned {
            eprintln!("paddock-guest: cannot start the session thread: {e}");
            std::process::exit(paddock_wire::EXIT_SETUP_FAILED);
        }
    }
    reaper.run()
}
