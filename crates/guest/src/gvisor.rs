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

/// How often the processes are counted against the sandbox's process limit.
const NPROC_SAMPLE: std::time::Duration = std::time::Duration::from_millis(100);

/// Holds the sandbox to its process limit. gVisor (2024-07) enforces it only as
/// `RLIMIT_NPROC`, per user: root inside could spread processes over many uids (12 uids reached
/// 374 processes with a limit of 256), and its own pids cgroups count without refusing, while
/// the host's pids cgroup, when reached, stops gVisor itself. So a thread counts every process
/// of the sandbox (`/proc`, all users) ten times a second; over the limit, the newest ones are
/// killed until it holds, and the command's exit report says so. One user at the limit (refused
/// forks, which gVisor does not count) is noted too. Processes made and gone between two
/// samples are not seen. A burst faster than this thread (a fork storm over many users starves
/// it) reaches the host's cgroup, which ends the sandbox: the host is never at risk, and the run
/// ends with the pids limit named.
fn watch_process_limit() {
    let limit = match rustix::process::getrlimit(rustix::process::Resource::Nproc).current {
        Some(l) if l > 0 => l,
        _ => return,
    };
    let _ = std::thread::Builder::new()
        .name("nproc".into())
        .spawn(move || {
            use std::os::unix::fs::MetadataExt;
            let me = std::process::id();
            loop {
                std::thread::sleep(NPROC_SAMPLE);
                let Ok(dir) = std::fs::read_dir("/proc") else {
                    return;
                };
                let mut per_user: std::collections::HashMap<u32, u64> = Default::default();
                let mut pids = Vec::new();
                for e in dir.flatten() {
                    let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    if let Ok(m) = e.metadata() {
                        *per_user.entry(m.uid()).or_default() += 1;
                    }
                    pids.push(pid);
                }
                let total = pids.len() as u64;

                if total > limit {
                    let killed = kill_newest(pids, total - limit, me);

                    session::note_limit(format!(
                        "pids limit: the sandbox's processes went over the limit of {limit} (spread over several users); the newest {killed} were killed"
                    ));
                } else if per_user.values().any(|n| *n >= limit) {
                    session::note_limit(format!(
                        "pids limit: one user reached the limit of {limit} processes (more are refused)"
                    ));
                }
            }
        });
}

/// Kills the `n` most recently started of `pids` (never `me`, this helper); returns how many.
/// gVisor hands out pids in increasing order, so the newest are the highest (reading each
/// one's start time from `/proc/PID/stat` instead stalled behind the processes being made).
fn kill_newest(mut pids: Vec<u32>, n: u64, me: u32) -> u64 {
    pids.retain(|p| *p != me);
    pids.sort_unstable_by(|a, b| b.cmp(a));
    let mut killed = 0;
    for pid in pids.into_iter().take(n as usize) {
        // SAFETY: kill has no memory effects.
        if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    killed
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
            paddock_wire::send_byte(sock.as_fd(), 1, None)?;
            match paddock_wire::recv_byte(sock.as_fd())? {
                Some((_, Some(fd))) => Ok(File::from(fd)),
                _ => Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "the host gave no proxy stream",
                )),
            }
        });
        if let Err(e) = egress::start(dial, [127, 0, 0, 1]) {
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
    if let Err(e) = paddock_wire::send_byte(sessions.as_fd(), READY, None) {
        eprintln!("paddock-guest: cannot reach the host: {e}");
        std::process::exit(paddock_wire::EXIT_SETUP_FAILED);
    }
    {
        let reaper = reaper.clone();
        let spawned = std::thread::Builder::new()
            .name("sessions".into())
            .spawn(move || {
                loop {
                    match paddock_wire::recv_byte(sessions.as_fd()) {
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
