//! A command's terminal size, kept at what its user last asked for.
//!
//! Readline (bash's line editor) reads the terminal's size and writes the same value back each
//! time it prepares the terminal for a new line (`set_winsize` in its `rltty.c`). A resize that
//! lands between those two calls is undone, and the terminal keeps the old size until the next
//! resize. Under gVisor the two calls are far enough apart that resizes arriving as bash
//! printed its prompt were undone 2 times in 400 and 3 in 1,200 in two stress runs (`stty size`
//! answering the old size for good). So after each resize a watcher looks again for a while, and puts the new size back
//! if it finds the one it replaced: that is the stale write-back, never a size the command
//! chose itself.
//!
//! gVisor's kernel also does not send SIGWINCH when the master side sets the size (Linux
//! does), so a full-screen program (an agent's terminal UI, an editor) would not redraw until
//! it asked again. [`TerminalSize::signalling`] sends it on such a kernel.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use rustix::fs::{Mode, OFlags, open};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{Winsize, tcgetwinsize, tcsetwinsize};

/// How long after a resize the watcher looks again (cumulative waits): a write-back comes
/// within microseconds of readline's read, later on a loaded machine.
const RECHECKS: [Duration; 6] = [
    Duration::from_millis(2),
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(1000),
    Duration::from_millis(3000),
];

/// Resizes one terminal (given by its master) and guards each new size for a few seconds.
#[derive(Debug)]
pub struct TerminalSize {
    master: OwnedFd,
    watcher: Option<Sender<(Winsize, Winsize)>>,
    /// The session to send SIGWINCH to, on a kernel that does not.
    signal: Option<i32>,
}

fn same(a: &Winsize, b: &Winsize) -> bool {
    (a.ws_row, a.ws_col, a.ws_xpixel, a.ws_ypixel) == (b.ws_row, b.ws_col, b.ws_xpixel, b.ws_ypixel)
}

/// Sets `size` and, given the terminal's session, sends it SIGWINCH (what Linux does itself).
fn put(master: BorrowedFd<'_>, size: Winsize, session: Option<i32>) -> rustix::io::Result<()> {
    tcsetwinsize(master, size)?;
    if let Some(sid) = session {
        notify(master, sid);
    }
    Ok(())
}

/// SIGWINCH to the foreground process group of the terminal of session `sid`. gVisor answers
/// `TIOCGPGRP` on a master with ENOTTY and shows no `tpgid` in `/proc/PID/stat`, so there it
/// goes to every process group of the session: SIGWINCH is ignored by default, and a program
/// that handles it only asks for the size again.
fn notify(master: BorrowedFd<'_>, sid: i32) {
    use rustix::process::{Pid, Signal, kill_process_group};
    if let Ok(pgrp) = rustix::termios::tcgetpgrp(master) {
        let _ = kill_process_group(pgrp, Signal::WINCH);
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut groups = std::collections::BTreeSet::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "PID (COMM) STATE PPID PGRP SESSION ...": COMM may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(pgrp), Some(session)) = (fields.get(2), fields.get(3))
            && session.parse::<i32>() == Ok(sid)
            && let Ok(pgrp) = pgrp.parse::<i32>()
        {
            groups.insert(pgrp);
        }
    }
    for pgrp in groups {
        if let Some(pgrp) = Pid::from_raw(pgrp) {
            let _ = kill_process_group(pgrp, Signal::WINCH);
        }
    }
}

impl TerminalSize {
    /// For the terminal whose master is `master` (a copy is kept).
    pub fn new(master: BorrowedFd<'_>) -> std::io::Result<TerminalSize> {
        Ok(TerminalSize {
            master: master.try_clone_to_owned()?,
            watcher: None,
            signal: None,
        })
    }

    /// Also sends SIGWINCH to the foreground of `session` (the terminal's) after each change,
    /// for a kernel that does not (gVisor's).
    pub fn signalling(mut self, session: i32) -> TerminalSize {
        self.signal = Some(session);
        self
    }

    /// Gives the terminal `rows` × `cols` now (before anything typed after the resize reaches
    /// it), then guards that size in the background. Does nothing when `master` is not a
    /// terminal.
    pub fn set(&mut self, rows: u16, cols: u16) {
        let Ok(old) = tcgetwinsize(&self.master) else {
            return;
        };
        let new = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        if same(&old, &new) || put(self.master.as_fd(), new, self.signal).is_err() {
            return;
        }
        if let Some(w) = &self.watcher
            && w.send((old, new)).is_ok()
        {
            return;
        }
        self.watcher = self.start_watcher().ok();
        if let Some(w) = &self.watcher {
            let _ = w.send((old, new));
        }
    }

    fn start_watcher(&self) -> std::io::Result<Sender<(Winsize, Winsize)>> {
        let master = self.master.as_fd().try_clone_to_owned()?;
        let signal = self.signal;
        let (tx, rx) = mpsc::channel::<(Winsize, Winsize)>();
        std::thread::Builder::new()
            .name("winsize".into())
            .spawn(move || {
                // Ends when the owner is dropped (the channel closes).
                let Ok(mut job) = rx.recv() else { return };
                'jobs: loop {
                    let (old, new) = job;
                    for wait in RECHECKS {
                        match rx.recv_timeout(wait) {
                            Ok(next) => {
                                job = next;
                                continue 'jobs;
                            }
                            Err(RecvTimeoutError::Disconnected) => return,
                            Err(RecvTimeoutError::Timeout) => {}
                        }
                        match tcgetwinsize(&master) {
                            Ok(now) if same(&now, &old) => {
                                let _ = put(master.as_fd(), new, signal);
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                    match rx.recv() {
                        Ok(next) => job = next,
                        Err(_) => return,
                    }
                }
            })?;
        Ok(tx)
    }
}

/// Opens a new pty in the devpts of this process's `/dev/ptmx` (inside a sandbox, the
/// sandbox's own): (master, slave), both close-on-exec, neither a controlling terminal; of
/// `size` (rows, columns) when given.
pub fn open_pty(size: Option<(u16, u16)>) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if let Some((rows, cols)) = size {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        tcsetwinsize(&master, size)?;
    }
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(fd: BorrowedFd<'_>) -> (u16, u16) {
        let w = tcgetwinsize(fd).unwrap();
        (w.ws_row, w.ws_col)
    }

    fn put_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) {
        let w = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        tcsetwinsize(fd, w).unwrap();
    }

    fn wait_for(fd: BorrowedFd<'_>, want: (u16, u16)) -> bool {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if size(fd) == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_stale_write_back_is_undone_and_a_new_choice_is_kept() {
        let (master, slave) = open_pty(Some((24, 80))).unwrap();
        assert_eq!(
            size(slave.as_fd()),
            (24, 80),
            "the size asked for from the start"
        );
        let mut t = TerminalSize::new(master.as_fd()).unwrap();
        t.set(33, 77);
        assert_eq!(size(slave.as_fd()), (33, 77), "set at once");
        // What readline does when its read came before the resize: the old size, written back.
        put_size(slave.as_fd(), 24, 80);
        assert!(
            wait_for(slave.as_fd(), (33, 77)),
            "the stale size stayed: {:?}",
            size(slave.as_fd())
        );
        // A size the command sets itself (not the replaced one) is its choice and stays.
        t.set(40, 100);
        put_size(slave.as_fd(), 50, 120);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(size(slave.as_fd()), (50, 120));
    }

    #[test]
    fn a_descriptor_that_is_no_terminal_is_left_alone() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut t = TerminalSize::new(a.as_fd()).unwrap();
        t.set(10, 10);
        assert!(t.watcher.is_none());
    }
}
