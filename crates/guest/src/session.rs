//! One exec connection: a command with its streams, signals, terminal size and exit status
//! carried as frames.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use paddock_wire::vm::{ExitStatus, Frame, MAX_DATA};
use paddock_wire::{Command, EXIT_CANNOT_EXECUTE, Report};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

use crate::reaper::Reaper;

/// The sandbox's cgroup: its `pids.max` is the sandbox's pids limit, which covers every cgroup
/// below it.
pub const SANDBOX_CGROUP: &str = "/sys/fs/cgroup/sandbox";

/// The cgroup below it every command joins.
pub const COMMANDS: &str = "commands";

/// Its `cgroup.procs`, as the spawned child opens it (without allocating).
const CGROUP_PROCS: &std::ffi::CStr = c"/sys/fs/cgroup/sandbox/commands/cgroup.procs";

/// In a spawned child: joins the sandbox's cgroup (the pids limit). A guest without it has no
/// limit to join. System calls only (see `Reaper::spawn`).
pub fn join_cgroup() {
    if let Ok(fd) = rustix::fs::open(
        CGROUP_PROCS,
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::io::write(&fd, b"0");
    }
}

/// How long output may keep coming after the command ended (from processes it left behind
/// holding its streams) before the exit is reported anyway.
const DRAIN: Duration = Duration::from_secs(2);

/// Limits the sandbox ran into, as sentences starting with the limit's name; sent with every
/// command's exit. (The VM guest reports its own at power-off; gVisor's helper notes here what
/// only it can see.)
static LIMITS_HIT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records that the sandbox ran into a limit (once per kind).
pub fn note_limit(event: String) {
    let mut hit = LIMITS_HIT.lock().unwrap_or_else(PoisonError::into_inner);
    let kind = event.split(':').next().unwrap_or_default().to_owned();
    if !hit
        .iter()
        .any(|e| e.split(':').next() == Some(kind.as_str()))
    {
        hit.push(event);
    }
}

/// The sending half of a connection; `None` once the exit has been sent.
type Sender = Arc<Mutex<Option<File>>>;

fn send(to: &Sender, frame: &Frame) -> bool {
    let mut guard = to.lock().unwrap_or_else(PoisonError::into_inner);
    match guard.as_mut() {
        Some(f) => frame.write_to(f).is_ok(),
        None => false,
    }
}

/// Serves one exec connection to its end. `signal_resize`: the kernel does not send SIGWINCH
/// when the terminal's size is set from the master side (gVisor's), so the helper does.
pub fn serve(conn: File, reaper: &Reaper, signal_resize: bool) {
    let Ok(writer) = conn.try_clone() else { return };
    let sender: Sender = Arc::new(Mutex::new(Some(writer)));
    let mut reader = conn;
    let mut cmd = match Frame::read_from(&mut reader) {
        Ok(Some(Frame::Exec(cmd))) => cmd,
        _ => return,
    };
    crate::docker::grant(&mut cmd);
    if let Err(e) = run(&cmd, &mut reader, &sender, reaper, signal_resize) {
        send(
            &sender,
            &Frame::Report(Report::ExecFailed {
                program: cmd.argv.first().cloned().unwrap_or_default(),
                message: e.to_string(),
                status: EXIT_CANNOT_EXECUTE,
            }),
        );
        send(
            &sender,
            &Frame::Exit(ExitStatus::Code {
                code: EXIT_CANNOT_EXECUTE,
            }),
        );
    }
    let _ = rustix::net::shutdown(&reader, rustix::net::Shutdown::Both);
}

/// The command's ends of its streams and ours.
struct Streams {
    /// Where stdin bytes go (the pty master or a pipe).
    input: Option<File>,
    /// What to read output from: (fd, is stderr).
    outputs: Vec<(File, bool)>,
    /// The pty master, for resizes.
    master: Option<File>,
    /// What the child gets: (pty slave) or (stdin, stdout, stderr) pipe ends.
    child: ChildEnds,
}

enum ChildEnds {
    Pty(OwnedFd),
    Pipes([OwnedFd; 3]),
}

fn streams(tty: bool, size: Option<(u16, u16)>) -> io::Result<Streams> {
    if tty {
        let (master, slave) = paddock_wire::open_pty(size)?;
        let m = File::from(master);
        Ok(Streams {
            input: Some(m.try_clone()?),
            outputs: vec![(m.try_clone()?, false)],
            master: Some(m),
            child: ChildEnds::Pty(slave),
        })
    } else {
        let flags = rustix::pipe::PipeFlags::CLOEXEC;
        let (in_r, in_w) = rustix::pipe::pipe_with(flags)?;
        let (out_r, out_w) = rustix::pipe::pipe_with(flags)?;
        let (err_r, err_w) = rustix::pipe::pipe_with(flags)?;
        Ok(Streams {
            input: Some(File::from(in_w)),
            outputs: vec![(File::from(out_r), false), (File::from(err_r), true)],
            master: None,
            child: ChildEnds::Pipes([in_r, out_w, err_w]),
        })
    }
}

fn run(
    cmd: &Command,
    reader: &mut File,
    sender: &Sender,
    reaper: &Reaper,
    signal_resize: bool,
) -> io::Result<()> {
    let mut s = streams(cmd.tty, cmd.size)?;
    let (reports, child_reports) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let prepared = paddock_init::Prepared::new(cmd);
    let (pid, status) = {
        let child = &s.child;
        let chan = &child_reports;
        let prepared = &prepared;
        reaper.spawn(move || {
            join_cgroup();
            let pty = match child {
                ChildEnds::Pty(slave) => Some(slave.as_fd()),
                ChildEnds::Pipes(ends) => {
                    for (i, fd) in ends.iter().enumerate() {
                        // SAFETY: dup2 onto 0..2 in the child; `fd` is open.
                        unsafe { libc::dup2(fd.as_raw_fd(), i as i32) };
                    }
                    None
                }
            };
            prepared.exec(pty, chan.as_fd());
        })?
    };
    drop(child_reports);
    drop(s.child);
    send(sender, &Frame::Report(Report::Ready { pid: pid.as_raw() }));

    // Output pumps: each ends at end of file (or EIO on a pty whose last holder closed).
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let mut pumps = 0;
    for (mut out, is_err) in std::mem::take(&mut s.outputs) {
        let sender = sender.clone();
        let done = done_tx.clone();
        pumps += 1;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATA];
            loop {
                match out.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let data = buf[..n].to_vec();
                        let frame = if is_err {
                            Frame::Stderr(data)
                        } else {
                            Frame::Stdout(data)
                        };
                        if !send(&sender, &frame) {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        });
    }
    drop(done_tx);

    // Input: frames from the host until the connection ends.
    let input = s.input.take();
    let master = s.master.take();
    let mut input_reader = reader.try_clone()?;
    std::thread::spawn(move || {
        let mut input = input;
        let mut size = master
            .as_ref()
            .and_then(|m| paddock_wire::TerminalSize::new(m.as_fd()).ok())
            .map(|t| {
                if signal_resize {
                    t.signalling(pid.as_raw())
                } else {
                    t
                }
            });
        while let Ok(Some(frame)) = Frame::read_from(&mut input_reader) {
            match frame {
                Frame::Stdin(data) => {
                    if let Some(i) = input.as_mut()
                        && i.write_all(&data).is_err()
                    {
                        input = None;
                    }
                }
                // A terminal has no end of input to pass on; pipes do.
                Frame::StdinEof if master.is_none() => input = None,
                Frame::Signal(sig) => {
                    if let Ok(sig) = Signal::try_from(sig) {
                        paddock_init::deliver(pid, paddock_init::Target::Group, sig);
                    }
                }
                Frame::Resize { rows, cols } => {
                    if let Some(t) = size.as_mut() {
                        t.set(rows, cols);
                    }
                }
                _ => {}
            }
        }
    });

    let status = status.recv().unwrap_or(ExitStatus::Code {
        code: EXIT_CANNOT_EXECUTE,
    });
    let deadline = std::time::Instant::now() + DRAIN;
    while pumps > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => pumps -= 1,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // An exec failure the child reported.
    let _ = rustix::io::ioctl_fionbio(&reports, true);
    while let Ok(Some((report, _))) = paddock_wire::recv_report(reports.as_fd()) {
        send(sender, &Frame::Report(report));
    }
    let events = LIMITS_HIT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if !events.is_empty() {
        send(sender, &Frame::Report(Report::LimitsHit { events }));
    }
    send(sender, &Frame::Exit(status));
    *sender.lock().unwrap_or_else(PoisonError::into_inner) = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_child_joins_the_sandbox_cgroup() {
        assert_eq!(
            super::CGROUP_PROCS.to_str().unwrap(),
            format!("{}/{}/cgroup.procs", super::SANDBOX_CGROUP, super::COMMANDS)
        );
    }
}
