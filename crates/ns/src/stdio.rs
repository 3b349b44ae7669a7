//! The streams of a command run without a terminal: pipes the supervisor relays, never the
//! supervisor's own descriptors.
//!
//! Handing the command the supervisor's stdin, stdout and stderr would give the sandbox the
//! host's open files: `ftruncate(1, 0)` on a `>> host.log`, the path behind `/proc/self/fd/1`,
//! or the host's terminal (its settings, its size, `TIOCSTI` where the kernel allows it). So the
//! command gets three pipes, and the supervisor's relay process
//! ([`paddock_confine::relay`], which holds no privilege) copies between them and the
//! supervisor's own streams, as the gvisor and vm backends' helpers do over their channels.
//!
//! When the sandbox's process ends, what is already in the output pipes is copied and the relay
//! stops: output written later by a process that outlived it (a background job of an `exec`)
//! is not waited for, as it was not before.

use std::io;
use std::os::fd::OwnedFd;

use paddock_core::Streams;
use rustix::pipe::{PipeFlags, pipe_with};

/// The sandbox's ends of its three pipes (its descriptors 0, 1 and 2) and the supervisor's.
#[derive(Debug)]
pub(crate) struct Pipes {
    /// Read end of stdin, write ends of stdout and stderr: the command's.
    pub theirs: [OwnedFd; 3],
    /// The supervisor's ends.
    pub ours: Relay,
}

/// The supervisor's ends of a command's pipes.
#[derive(Debug)]
pub(crate) struct Relay {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Makes the three pipes (close-on-exec: the spawn passes the command's ends on explicitly).
pub(crate) fn pipes() -> io::Result<Pipes> {
    let (in_r, in_w) = pipe_with(PipeFlags::CLOEXEC)?;
    let (out_r, out_w) = pipe_with(PipeFlags::CLOEXEC)?;
    let (err_r, err_w) = pipe_with(PipeFlags::CLOEXEC)?;
    Ok(Pipes {
        theirs: [in_r, out_w, err_w],
        ours: Relay {
            stdin: in_w,
            stdout: out_r,
            stderr: err_r,
        },
    })
}

impl Relay {
    /// The host's ends, for the relay process.
    pub(crate) fn streams(self) -> Streams {
        Streams::Pipes {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }
}
