//! The stream protocol between the host and the helper inside a VM guest, over vsock.
//!
//! A VM has no shared socketpair to pass descriptors over, so everything the namespace backend
//! passes as a descriptor (the terminal, the command's streams) travels as frames: a 4-byte
//! little-endian length, a 1-byte type, then the payload. Control messages are JSON; stream data
//! is raw bytes.
//!
//! Two kinds of connection exist:
//! - the **boot** connection, opened by the guest to the host's [`BOOT_PORT`] as soon as its
//!   vsock transport is up: the host answers [`Frame::Setup`], the guest reports
//!   [`Report::Ready`] or [`Report::SetupFailed`], and later the host sends
//!   [`Frame::Poweroff`]. When it closes the guest powers off.
//! - **exec** connections, opened by the host to the guest's [`EXEC_PORT`]: [`Frame::Exec`],
//!   then stdin, signals and resizes one way, the guest's report, output and exit the other.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::{Command, MAX_MESSAGE, Report};

/// The host port the guest's boot connection goes to.
pub const BOOT_PORT: u32 = 1024;
/// The guest port the helper accepts exec connections on.
pub const EXEC_PORT: u32 = 1024;
/// The guest port the helper accepts published-port connections on: two bytes (the port inside,
/// big-endian), then the connection's bytes, carried to `127.0.0.1:PORT` inside.
pub const FORWARD_PORT: u32 = 1025;
/// On a gVisor sandbox's session socket: the byte that hands over a published-port connection
/// (the same protocol as [`FORWARD_PORT`]); `1` hands over an exec connection.
pub const FORWARD_BYTE: u8 = 2;
/// The host port the guest's proxy connections go to (the same number as inside).
pub const PROXY_PORT: u32 = 3128;
/// The well-known vsock address of the host.
pub const HOST_CID: u32 = 2;
/// The largest data frame either side sends.
pub const MAX_DATA: usize = 32 * 1024;

/// What the guest sets up before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// Host name inside.
    pub hostname: String,
    /// Host wall-clock time (nanoseconds since the Unix epoch) to set the guest clock to.
    pub time_ns: u128,
    /// The root disk's device (`/dev/vda`).
    pub root_device: String,
    /// Shared folders, in mount order.
    pub mounts: Vec<SharedFolder>,
    /// Listen on `127.0.0.1:3128` and carry each connection to the host's proxy port.
    pub egress: bool,
    /// The most processes the sandbox's commands may have at once (enforced by the guest's pids
    /// cgroup).
    pub pids_max: Option<u64>,
    /// A CA certificate (PEM) to add to the guest's trust store for this boot (the sandbox's
    /// CA, when the proxy injects credentials).
    #[serde(default)]
    pub extra_ca: Option<String>,
    /// Start the image's Docker Engine before the command, and serve the proxy on its bridge
    /// too (`--docker`).
    #[serde(default)]
    pub docker: bool,
}

/// How long the guest waits for its Docker Engine to answer before the start fails (under TCG
/// the engine's first start, which makes its state, takes tens of seconds).
pub const DOCKER_START_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

/// One virtio-fs share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedFolder {
    /// The virtio-fs tag.
    pub tag: String,
    /// Absolute path inside the guest.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// How a command ended, as the guest saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExitStatus {
    /// Exited with a status.
    Code {
        /// The status.
        code: i32,
    },
    /// Killed by a signal.
    Signal {
        /// The signal number.
        signal: i32,
    },
}

/// One frame on a VM connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Host → guest on the boot connection: what to set up.
    Setup(Setup),
    /// Host → guest: run this command (first frame of an exec connection).
    Exec(Command),
    /// Host → guest: bytes for the command's stdin (or terminal).
    Stdin(Vec<u8>),
    /// Host → guest: stdin ended.
    StdinEof,
    /// Host → guest: deliver this signal to the command's process group.
    Signal(i32),
    /// Host → guest: the terminal's new size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Host → guest on the boot connection: sync the disks and power off.
    Poweroff,
    /// Guest → host: a report (ready, setup failed, exec failed).
    Report(Report),
    /// Guest → host: bytes the command wrote to stdout (or its terminal).
    Stdout(Vec<u8>),
    /// Guest → host: bytes the command wrote to stderr.
    Stderr(Vec<u8>),
    /// Guest → host: the command ended; nothing follows on this connection.
    Exit(ExitStatus),
}

const SETUP: u8 = 1;
const EXEC: u8 = 2;
const STDIN: u8 = 3;
const STDIN_EOF: u8 = 4;
const SIGNAL: u8 = 5;
const RESIZE: u8 = 6;
const POWEROFF: u8 = 7;
const REPORT: u8 = 10;
const STDOUT: u8 = 11;
const STDERR: u8 = 12;
const EXIT: u8 = 13;

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("malformed frame: {e}")))
}

impl Frame {
    /// The frame as bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Setup(s) => (SETUP, json(s)),
            Frame::Exec(c) => (EXEC, json(c)),
            Frame::Stdin(d) => (STDIN, d.clone()),
            Frame::StdinEof => (STDIN_EOF, vec![]),
            Frame::Signal(s) => (SIGNAL, s.to_le_bytes().to_vec()),
            Frame::Resize { rows, cols } => {
                let mut v = rows.to_le_bytes().to_vec();
                v.extend_from_slice(&cols.to_le_bytes());
                (RESIZE, v)
            }
            Frame::Poweroff => (POWEROFF, vec![]),
            Frame::Report(r) => (REPORT, r.encode()),
            Frame::Stdout(d) => (STDOUT, d.clone()),
            Frame::Stderr(d) => (STDERR, d.clone()),
            Frame::Exit(e) => (EXIT, json(e)),
        };
        let len = u32::try_from(payload.len() + 1).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(payload.len() + 5);
        out.extend_from_slice(&len.to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&payload);
        out
    }

    /// Writes the frame.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())?;
        w.flush()
    }

    /// Reads one frame; `Ok(None)` when the connection ended cleanly between frames.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match r.read(&mut len[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_MESSAGE + 1 {
            return Err(bad(format!("frame length {len} out of range")));
        }
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf)?;
        let (kind, p) = (buf[0], &buf[1..]);
        Ok(Some(match kind {
            SETUP => Frame::Setup(parse(p)?),
            EXEC => Frame::Exec(parse(p)?),
            STDIN => Frame::Stdin(p.to_vec()),
            STDIN_EOF => Frame::StdinEof,
            SIGNAL => Frame::Signal(i32::from_le_bytes(
                p.try_into().map_err(|_| bad("bad signal frame"))?,
            )),
            RESIZE => {
                let b: [u8; 4] = p.try_into().map_err(|_| bad("bad resize frame"))?;
                Frame::Resize {
                    rows: u16::from_le_bytes([b[0], b[1]]),
                    cols: u16::from_le_bytes([b[2], b[3]]),
                }
            }
            POWEROFF => Frame::Poweroff,
            REPORT => Frame::Report(Report::decode(p).map_err(|e| bad(e.to_string()))?),
            STDOUT => Frame::Stdout(p.to_vec()),
            STDERR => Frame::Stderr(p.to_vec()),
            EXIT => Frame::Exit(parse(p)?),
            other => return Err(bad(format!("unknown frame type {other}"))),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_back_to_back() {
        let frames = vec![
            Frame::Setup(Setup {
                hostname: "s".into(),
                time_ns: 1,
                root_device: "/dev/vda".into(),
                mounts: vec![SharedFolder {
                    tag: "fs0".into(),
                    target: "/w".into(),
                    read_only: false,
                }],
                egress: true,
                pids_max: Some(10),
                extra_ca: Some("-----BEGIN CERTIFICATE-----".into()),
                docker: true,
            }),
            Frame::Stdin(b"abc".to_vec()),
            Frame::StdinEof,
            Frame::Signal(15),
            Frame::Resize {
                rows: 40,
                cols: 120,
            },
            Frame::Poweroff,
            Frame::Report(Report::Ready { pid: 1 }),
            Frame::Stdout(vec![0, 1, 2]),
            Frame::Stderr(vec![]),
            Frame::Exit(ExitStatus::Signal { signal: 9 }),
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            f.write_to(&mut bytes).unwrap();
        }
        let mut r = &bytes[..];
        for f in &frames {
            assert_eq!(Frame::read_from(&mut r).unwrap().as_ref(), Some(f));
        }
        assert!(Frame::read_from(&mut r).unwrap().is_none());
    }

    #[test]
    fn refuses_bad_frames() {
        for bytes in [
            &[0u8, 0, 0, 0][..],             // zero length
            &[2, 0, 0, 0, 99, 0][..],        // unknown type
            &[255, 255, 255, 255, 1][..],    // too long
            &[3, 0, 0, 0, SIGNAL, 1, 2][..], // short signal
            &[5, 0, 0, 0, STDIN, 1][..],     // truncated
        ] {
            assert!(Frame::read_from(&mut &bytes[..]).is_err(), "{bytes:?}");
        }
    }
}
