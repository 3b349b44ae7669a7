//! Starting the command: session, terminal, identity, descriptors, exec.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::unistd::{Gid, Uid, execve, setgroups, setresgid, setresuid, setsid};
use paddock_wire::{Command, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, Report};
use rustix::fs::{Mode, OFlags, open};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

use crate::channel::send_report;

/// Opens a new pty in the sandbox's own devpts: (master, slave).
pub fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok((master, slave))
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn exec_failed(channel: BorrowedFd<'_>, program: &str, message: String, status: i32) -> ! {
    let _ = send_report(
        channel,
        &Report::ExecFailed {
            program: program.to_owned(),
            message,
            status,
        },
    );
    // SAFETY: _exit is async-signal-safe and ends this forked child without running the
    // parent's atexit handlers or flushing its stdio buffers twice.
    unsafe { libc::_exit(status) }
}

/// In the forked child: becomes the command. Never returns.
pub fn exec_command(cmd: &Command, pty: Option<OwnedFd>, channel: BorrowedFd<'_>) -> ! {
    let program = cmd.argv.first().cloned().unwrap_or_default();
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        exec_failed(
            channel,
            &program,
            format!("{what}: {e}"),
            EXIT_CANNOT_EXECUTE,
        )
    };
    if let Err(e) = setsid() {
        fail("cannot start a session", &e);
    }
    if let Some(slave) = pty {
        if let Err(e) = rustix::process::ioctl_tiocsctty(&slave) {
            fail("cannot attach the terminal", &e);
        }
        for target in 0..3 {
            // SAFETY: dup2 onto 0..2 in a single-threaded child; `slave` is a valid descriptor.
            if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
                fail("cannot attach the terminal", &Errno::last());
            }
        }
    }
    let groups: Vec<Gid> = cmd.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = setgroups(&groups) {
        fail("cannot set groups", &e);
    }
    let gid = Gid::from_raw(cmd.gid);
    if let Err(e) = setresgid(gid, gid, gid) {
        fail("cannot set group", &e);
    }
    let uid = Uid::from_raw(cmd.uid);
    if let Err(e) = setresuid(uid, uid, uid) {
        fail("cannot set user", &e);
    }
    if cmd.no_new_privs
        && let Err(e) = rustix::thread::set_no_new_privs(true)
    {
        fail("cannot set no_new_privs", &e);
    }
    if let Err(e) = std::env::set_current_dir(&cmd.cwd) {
        fail(&format!("cannot enter working directory {}", cmd.cwd), &e);
    }
    close_stray_fds(channel.as_raw_fd());

    let env: Vec<CString> = cmd
        .env
        .iter()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    let args: Vec<CString> = match cmd.argv.iter().map(|a| CString::new(a.as_str())).collect() {
        Ok(a) => a,
        Err(e) => fail("argument contains a NUL byte", &e),
    };
    if args.is_empty() {
        exec_failed(channel, "", "no command given".into(), EXIT_NOT_FOUND);
    }
    let path = cmd
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    let candidates: Vec<String> = if program.contains('/') {
        vec![program.clone()]
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}/{program}"))
            .collect()
    };
    let mut denied = None;
    for c in candidates {
        let Ok(cpath) = CString::new(c) else { continue };
        match execve(&cpath, &args, &env) {
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
            Err(e) => denied = Some(e),
        }
    }
    match denied {
        Some(e) => exec_failed(
            channel,
            &program,
            format!("cannot execute: {e}"),
            EXIT_CANNOT_EXECUTE,
        ),
        None => exec_failed(
            channel,
            &program,
            "command not found".into(),
            EXIT_NOT_FOUND,
        ),
    }
}

/// Closes every descriptor above 2 except `keep` (which is close-on-exec).
fn close_stray_fds(keep: i32) {
    // SAFETY: close_range only closes descriptors; nothing in this single-threaded child uses
    // the closed ones afterwards.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}
