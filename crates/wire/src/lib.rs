//! The wire protocol between the host side of Paddock and the in-sandbox helper.
//!
//! The helper (pid 1 inside every sandbox) knows only these types. Messages are JSON, one per
//! datagram on a `SOCK_SEQPACKET` channel (a socketpair for the namespace backend, vsock for a
//! VM), so each message arrives whole or not at all; file descriptors ride along as
//! `SCM_RIGHTS` where the channel allows it.
//!
//! The transport of those messages ([`send_report`], [`recv_report`], descriptors with them) and
//! the terminal size both sides keep ([`TerminalSize`]) live here too, so the host side needs
//! nothing of the helper itself.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

mod channel;
pub mod docker;
pub mod vm;
mod winsize;

pub use channel::{
    recv_byte, recv_report, recv_with_fds, recv_with_many_fds, send_byte, send_fd, send_report,
    send_with_fds,
};
pub use winsize::{TerminalSize, open_pty};

/// Exit status a sandbox reports when its own setup failed (nothing of the command ran).
pub const EXIT_SETUP_FAILED: i32 = 125;
/// Exit status when the command exists but cannot be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit status when the command is not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// The largest message either side accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The ns backend's exec socket, in the sandbox's directory on the host: a `SOCK_SEQPACKET`
/// socket the jail binds before the sandbox starts and whose listener only the sandbox's pid 1
/// holds (no sandbox process can reach the path). One connection runs one more command, forked
/// by pid 1, so inside every layer of the sandbox and its cgroups from the start:
///
/// - the host sends the [`Command`] (JSON) in one message, with three descriptors (the
///   command's stdin, stdout and stderr) unless it asks for a terminal, which pid 1 then makes
///   and sends back first ([`Report::PtyMaster`]);
/// - pid 1 answers [`Report::Ready`] (`pid`: the command's, inside) once it forked,
///   [`Report::ExecFailed`] when it could not run it, and [`Report::Exited`] when it ended;
/// - each later message from the host is one byte, a signal for the command's process group;
/// - a host that closes the connection first ends the command (SIGKILL to its group).
pub const EXEC_SOCKET: &str = "exec.sock";

/// What the in-sandbox helper runs, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Program and arguments (the program is looked up in `PATH` inside the sandbox).
    pub argv: Vec<String>,
    /// The complete environment: nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: String,
    /// Uid inside the sandbox.
    pub uid: u32,
    /// Primary gid inside the sandbox.
    pub gid: u32,
    /// Supplementary groups inside the sandbox.
    pub groups: Vec<u32>,
    /// Give the command a terminal (a pty created inside the sandbox).
    pub tty: bool,
    /// With `tty`: the terminal's size (rows, columns) from the start, so that the command's
    /// first look at it is right (a full-screen program lays itself out once, at start).
    /// Without, the terminal starts at 0 × 0 until the host side sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<(u16, u16)>,
    /// Set `no_new_privs` before exec (setuid programs such as sudo then cannot raise privileges).
    pub no_new_privs: bool,
}

/// A message from the sandbox side to the host side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Report {
    /// The sandbox is set up; `pid` is the helper's pid as seen from the host.
    Ready {
        /// Host pid of the in-sandbox helper (pid 1 inside).
        pid: i32,
    },
    /// User mode: the jail has made its user namespace and waits (for one byte, 1: done) until
    /// the host has written its id maps with `newuidmap`/`newgidmap`.
    UserNamespace,
    /// The pty master for the command's terminal rides along with this message.
    PtyMaster,
    /// A listening TCP socket on the sandbox's `127.0.0.1:3128` rides along: the host accepts
    /// the sandbox's proxy connections from it.
    EgressListener,
    /// Setting up a security layer or the filesystem failed; the command was not started.
    SetupFailed {
        /// Which layer (e.g. `seccomp`, `landlock`, `mounts`, `cgroup`, `user namespace`).
        layer: String,
        /// What went wrong, with the cause chain.
        message: String,
    },
    /// The limits the sandbox ran into, seen from inside (a VM's guest, at power-off): each a
    /// sentence starting with the limit's name ("pids limit: …", "disk limit: …").
    LimitsHit {
        /// The sentences.
        events: Vec<String>,
    },
    /// A command started through a sandbox's exec socket ([`EXEC_SOCKET`]) ended: its exit
    /// status, or 128 + the signal that killed it.
    Exited {
        /// The status.
        status: i32,
    },
    /// The command could not be started.
    ExecFailed {
        /// The program.
        program: String,
        /// Why.
        message: String,
        /// Exit status the sandbox will end with.
        status: i32,
    },
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// the message is not valid JSON of the expected shape
    #[error("malformed message from the sandbox")]
    Malformed(#[source] serde_json::Error),
    /// the message is larger than the limit
    #[error("message from the sandbox is too large ({0} bytes)")]
    TooLarge(usize),
}

impl Report {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a message, refusing anything malformed or oversized.
    pub fn decode(bytes: &[u8]) -> Result<Report, WireError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(WireError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(WireError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let msgs = [
            Report::Ready { pid: 42 },
            Report::PtyMaster,
            Report::SetupFailed {
                layer: "seccomp".into(),
                message: "x".into(),
            },
            Report::ExecFailed {
                program: "nope".into(),
                message: "not found".into(),
                status: 127,
            },
            Report::LimitsHit {
                events: vec!["pids limit: 3 new process(es) refused".into()],
            },
        ];
        for m in msgs {
            assert_eq!(Report::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn a_command_carries_its_terminal_size_only_with_one() {
        let mut cmd = Command {
            argv: vec!["sh".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![],
            tty: false,
            size: None,
            no_new_privs: true,
        };
        // Without a size the request is what an older helper reads.
        let plain = serde_json::to_string(&cmd).unwrap();
        assert!(!plain.contains("size"), "{plain}");
        assert_eq!(serde_json::from_str::<Command>(&plain).unwrap(), cmd);
        cmd.tty = true;
        cmd.size = Some((33, 77));
        let sized = serde_json::to_string(&cmd).unwrap();
        assert!(sized.contains(r#""size":[33,77]"#), "{sized}");
        assert_eq!(serde_json::from_str::<Command>(&sized).unwrap(), cmd);
    }

    #[test]
    fn refuses_garbage() {
        assert!(Report::decode(b"{\"type\":\"ready\"}").is_err());
        assert!(Report::decode(b"{\"type\":\"ready\",\"pid\":1,\"extra\":2}").is_err());
        assert!(Report::decode(&vec![b' '; MAX_MESSAGE + 1]).is_err());
    }
}
