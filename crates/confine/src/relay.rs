//! The relay process: `paddock __relay`, one per command whose bytes pass through the host.
//!
//! A command's terminal (an ns pty master) or its helper's session (the frames of a gVisor or
//! VM command: output, input, signals, sizes, the exit) carries bytes the sandbox controls.
//! No privileged process reads them: the supervisor hands the stream to this process
//! ([`Relay::start`]), which confines itself ([`crate::helper::confine`]: a uid of its own
//! when started as root, no capability, `no_new_privs`, not dumpable, Landlock with nothing
//! readable, seccomp with no `execve` and no new socket) before it reads a byte. It copies the
//! command's output to the user's terminal and to terminals attached later (`paddock attach`),
//! and the user's keystrokes and sizes back.
//!
//! The supervisor keeps what needs its privileges (the sandbox's processes, signals to them,
//! the end of the run) and talks to the relay over a `SOCK_SEQPACKET` pair: each message is
//! one packet, a tag byte and a fixed or length-limited body ([`Order`], [`Event`]). What the
//! relay reports (a session's exit status, diagnostics, limits) is taken as the sandbox's word,
//! which it is.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use paddock_core::{Exit, Streams};
use paddock_wire::vm::{ExitStatus, Frame, MAX_DATA};
use paddock_wire::{Report, TerminalSize};
use rustix::event::{PollFd, PollFlags, poll};
use serde::{Deserialize, Serialize};

use crate::helper::{self, Spawn, Worker};
pub use crate::prompt::Choice;
use crate::prompt::{Prompter, Step};

/// The hidden first argument that makes `paddock` the relay process.
pub const RELAY_ARG: &str = "__relay";

/// Frame type of an attached terminal: keystrokes for the command (then a 2-byte length).
pub const ATTACH_INPUT: u8 = 0;
/// Frame type of an attached terminal: its new size (rows and columns, big-endian).
pub const ATTACH_RESIZE: u8 = 1;

/// The longest text an event carries (a diagnostic, a limit); longer is cut.
const MAX_TEXT: usize = 2048;

/// How long the relay may take to confine itself.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the relay carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Kind {
    /// A pty master: raw bytes both ways.
    Pty,
    /// Three pipes (stdin, stdout, stderr): raw bytes.
    Pipes,
    /// Published ports' connections, each a pair handed over with [`Order::Carry`].
    Ports,
    /// `paddock attach`'s side: the supervisor's connection (attach frames out, the command's
    /// output in) and this terminal.
    Attach,
    /// A helper's session: frames.
    Session {
        /// Whether the command has a terminal.
        tty: bool,
    },
}

/// What the relay is told first.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The supervisor's pid: checked once the relay has armed its parent-death signal.
    parent: u32,
    /// The uid (and gid) to run as, when started as root.
    uid: Option<u32>,
    kind: Kind,
}

/// Supervisor → relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// The user's terminal has this size (rows, columns).
    Resize(u16, u16),
    /// Pass this signal to the command (a session's; ns signals its own processes).
    Signal(i32),
    /// One more attached terminal (its connection comes with the message).
    Attach,
    /// The sandbox ended: write what is left and stop.
    Finish,
    /// Carry a published port's connection: the host's client and the sandbox's end (both come
    /// with the message), both ways until each side ends.
    Carry,
    /// A request waits for the user's answer: prompt for it on the terminal (the user's, or
    /// one attached later), described by the text.
    Prompt(i64, String),
    /// The request no longer waits: take its prompt down.
    Unprompt(i64),
}

/// Relay → supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Confined, and relaying.
    Ready,
    /// How the session's command ended.
    Exit(Exit),
    /// What the helper said about the command.
    Diagnostic(String),
    /// A limit the helper saw the sandbox run into.
    Limit(String),
    /// Everything is relayed; the relay ends (for an attached terminal: the command's
    /// terminal closed).
    Done,
    /// The user detached an attached terminal (Ctrl-P Ctrl-Q); the command goes on.
    Detached,
    /// The relay could not start (the layer that failed).
    Failed(String),
    /// The user answered a request's prompt, with a key of the terminal.
    Answer(i64, Choice),
    /// The relay is gone (its end of the pair closed) without saying it was done.
    Gone,
}

const RESIZE: u8 = 1;
const SIGNAL: u8 = 2;
const ATTACH: u8 = 3;
const FINISH: u8 = 4;
const CARRY: u8 = 5;
const PROMPT: u8 = 6;
const UNPROMPT: u8 = 7;

const READY: u8 = 1;
const EXIT_CODE: u8 = 2;
const EXIT_SIGNAL: u8 = 3;
const DIAGNOSTIC: u8 = 4;
const LIMIT: u8 = 5;
const DONE: u8 = 6;
const FAILED: u8 = 7;
const DETACHED: u8 = 8;
const ANSWER: u8 = 9;

impl Order {
    fn encode(&self) -> Vec<u8> {
        match self {
            Order::Resize(rows, cols) => {
                let mut v = vec![RESIZE];
                v.extend_from_slice(&rows.to_be_bytes());
                v.extend_from_slice(&cols.to_be_bytes());
                v
            }
            Order::Signal(s) => {
                let mut v = vec![SIGNAL];
                v.extend_from_slice(&s.to_be_bytes());
                v
            }
            Order::Attach => vec![ATTACH],
            Order::Finish => vec![FINISH],
            Order::Carry => vec![CARRY],
            Order::Prompt(id, t) => [&[PROMPT][..], &id.to_be_bytes(), &text(0, t)[1..]].concat(),
            Order::Unprompt(id) => [&[UNPROMPT][..], &id.to_be_bytes()].concat(),
        }
    }

    fn decode(b: &[u8]) -> Option<Order> {
        match b {
            [RESIZE, r0, r1, c0, c1] => Some(Order::Resize(
                u16::from_be_bytes([*r0, *r1]),
                u16::from_be_bytes([*c0, *c1]),
            )),
            [SIGNAL, s @ ..] => Some(Order::Signal(i32::from_be_bytes(s.try_into().ok()?))),
            [ATTACH] => Some(Order::Attach),
            [FINISH] => Some(Order::Finish),
            [CARRY] => Some(Order::Carry),
            [PROMPT, rest @ ..] if rest.len() >= 8 => Some(Order::Prompt(
                i64::from_be_bytes(rest[..8].try_into().ok()?),
                String::from_utf8_lossy(&rest[8..rest.len().min(8 + MAX_TEXT)]).into_owned(),
            )),
            [UNPROMPT, id @ ..] => Some(Order::Unprompt(i64::from_be_bytes(id.try_into().ok()?))),
            _ => None,
        }
    }
}

fn text(tag: u8, s: &str) -> Vec<u8> {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut v = vec![tag];
    v.extend_from_slice(&s.as_bytes()[..end]);
    v
}

impl Event {
    fn encode(&self) -> Vec<u8> {
        match self {
            Event::Ready => vec![READY],
            Event::Exit(Exit::Code { code }) => [&[EXIT_CODE][..], &code.to_be_bytes()].concat(),
            Event::Exit(Exit::Signal { signal }) => {
                [&[EXIT_SIGNAL][..], &signal.to_be_bytes()].concat()
            }
            Event::Diagnostic(s) => text(DIAGNOSTIC, s),
            Event::Limit(s) => text(LIMIT, s),
            Event::Done => vec![DONE],
            Event::Failed(s) => text(FAILED, s),
            Event::Detached => vec![DETACHED],
            Event::Answer(id, c) => [&[ANSWER][..], &id.to_be_bytes(), &[c.byte()]].concat(),
            Event::Gone => Vec::new(),
        }
    }

    /// Reads what the relay sent; anything malformed is the relay gone wrong.
    fn decode(b: &[u8]) -> Event {
        let number = |s: &[u8]| s.try_into().ok().map(i32::from_be_bytes);
        let string = |s: &[u8]| String::from_utf8_lossy(&s[..s.len().min(MAX_TEXT)]).into_owned();
        match b {
            [READY] => Event::Ready,
            [EXIT_CODE, s @ ..] => {
                number(s).map_or(Event::Gone, |code| Event::Exit(Exit::Code { code }))
            }
            [EXIT_SIGNAL, s @ ..] => {
                number(s).map_or(Event::Gone, |signal| Event::Exit(Exit::Signal { signal }))
            }
            [DIAGNOSTIC, s @ ..] => Event::Diagnostic(string(s)),
            [LIMIT, s @ ..] => Event::Limit(string(s)),
            [DONE] => Event::Done,
            [FAILED, s @ ..] => Event::Failed(string(s)),
            [DETACHED] => Event::Detached,
            [ANSWER, rest @ ..] if rest.len() == 9 => {
                match (rest[..8].try_into(), Choice::from_byte(rest[8])) {
                    (Ok(id), Some(c)) => Event::Answer(i64::from_be_bytes(id), c),
                    _ => Event::Gone,
                }
            }
            _ => Event::Gone,
        }
    }
}

fn send(ctl: BorrowedFd<'_>, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    paddock_wire::send_with_fds(ctl, bytes, &fds)
}

/// One message and the descriptors that came with it; `None` when the other end closed.
fn receive_all(ctl: BorrowedFd<'_>) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_TEXT + 16];
    Ok(paddock_wire::recv_with_fds(ctl, &mut buf)?.map(|(n, fds)| {
        buf.truncate(n);
        (buf, fds)
    }))
}

/// One message and the first descriptor that came with it; `None` when the other end closed.
fn receive(ctl: BorrowedFd<'_>) -> io::Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
    Ok(receive_all(ctl)?.map(|(b, fds)| (b, fds.into_iter().next())))
}

/// The signals the supervisor catches and passes on to the sandbox (SIGWINCH, a size, it
/// handles itself).
pub const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// What the relay starts with blocked: [`FORWARDED`] and SIGWINCH. It is in the supervisor's
/// process group, and a Ctrl-C on a terminal not in raw mode is the supervisor's to pass on.
fn blocked() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED.into_iter().chain([libc::SIGWINCH]) {
        if let Ok(s) = Signal::try_from(s) {
            set.add(s);
        }
    }
    set
}

/// The supervisor's side of a running relay process; killed and reaped when dropped.
#[derive(Debug)]
pub struct Relay {
    worker: Worker,
    ctl: OwnedFd,
}

impl Relay {
    /// Starts the relay for `streams` of sandbox `sandbox`, with this process's stdin, stdout
    /// and stderr, and waits until it has confined itself. `None` for [`Streams::Direct`]:
    /// nothing to relay.
    pub fn start(streams: Streams, sandbox: &str) -> Result<Option<Relay>, String> {
        let (kind, streams) = match streams {
            Streams::Direct => return Ok(None),
            Streams::Pty(fd) => (Kind::Pty, vec![fd]),
            Streams::Pipes {
                stdin,
                stdout,
                stderr,
            } => (Kind::Pipes, vec![stdin, stdout, stderr]),
            Streams::Session { conn, tty } => (Kind::Session { tty }, vec![OwnedFd::from(conn)]),
        };
        Relay::launch(kind, streams, sandbox).map(Some)
    }

    /// Starts the relay of `paddock attach` for sandbox `sandbox`: `conn` is the supervisor's
    /// connection, past its answer; this process's stdin and stdout are the terminal. Waits
    /// until it has confined itself.
    pub fn attach_terminal(conn: UnixStream, sandbox: &str) -> Result<Relay, String> {
        Relay::launch(Kind::Attach, vec![OwnedFd::from(conn)], sandbox)
    }

    /// Starts a relay for the published ports of sandbox `sandbox` ([`Relay::carry`]), and
    /// waits until it has confined itself. Like every relay it dies with the thread that
    /// started it (its parent-death signal): start it on one that lives as long as it should.
    pub fn ports(sandbox: &str) -> Result<Relay, String> {
        Relay::launch(Kind::Ports, Vec::new(), sandbox)
    }

    fn launch(kind: Kind, streams: Vec<OwnedFd>, sandbox: &str) -> Result<Relay, String> {
        let (ctl, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| format!("cannot make the relay's channel: {e}"))?;
        let env: Vec<std::ffi::CString> = std::env::var_os("RUST_BACKTRACE")
            .and_then(|v| {
                use std::os::unix::ffi::OsStrExt;
                std::ffi::CString::new([b"RUST_BACKTRACE=", v.as_bytes()].concat()).ok()
            })
            .into_iter()
            .collect();
        let fds: Vec<i32> = std::iter::once(theirs.as_raw_fd())
            .chain(streams.iter().map(AsRawFd::as_raw_fd))
            .collect();
        let worker = helper::spawn(&Spawn {
            arg: c"__relay",
            fds: &fds,
            stdio: true,
            blocked: blocked(),
            env: &env,
        })
        .map_err(|e| format!("cannot start the relay process: {e}"))?;
        drop((theirs, streams));
        let relay = Relay { worker, ctl };
        let uid = rustix::process::geteuid()
            .is_root()
            .then(|| paddock_core::idmap::helper_uid(sandbox, paddock_core::idmap::Helper::Relay));
        let settings = Settings {
            parent: std::process::id(),
            uid,
            kind,
        };
        let json = serde_json::to_vec(&settings).map_err(|e| e.to_string())?;
        send(relay.ctl.as_fd(), &json, None)
            .map_err(|e| format!("cannot reach the relay process: {e}"))?;
        let mut fds = [PollFd::new(&relay.ctl, PollFlags::IN)];
        let limit = rustix::event::Timespec {
            tv_sec: READY_TIMEOUT.as_secs() as i64,
            tv_nsec: 0,
        };
        loop {
            match poll(&mut fds, Some(&limit)) {
                Ok(0) => return Err("the relay process did not start in time".into()),
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(format!("cannot wait for the relay process: {e}")),
            }
        }
        match relay.event() {
            Event::Ready => Ok(relay),
            Event::Failed(e) => Err(format!("the relay process stopped: {e}")),
            other => Err(format!("the relay process did not start ({other:?})")),
        }
    }

    /// Readable when the relay has something to say ([`Relay::event`]).
    pub fn ctl(&self) -> BorrowedFd<'_> {
        self.ctl.as_fd()
    }

    /// Tells the relay `order`.
    pub fn order(&self, order: Order) {
        let _ = send(self.ctl.as_fd(), &order.encode(), None);
    }

    /// A way to tell the relay orders from another thread (the prompts of waiting requests).
    pub fn orders(&self) -> io::Result<Orders> {
        Ok(Orders(self.ctl.try_clone()?))
    }

    /// Hands the relay one more attached terminal.
    pub fn attach(&self, conn: &UnixStream) {
        let _ = send(
            self.ctl.as_fd(),
            &Order::Attach.encode(),
            Some(conn.as_fd()),
        );
    }

    /// Hands the relay a published port's connection: `client` (the host's side) and `inside`
    /// (the sandbox's); this process keeps no copy.
    pub fn carry(&self, client: OwnedFd, inside: OwnedFd) -> io::Result<()> {
        paddock_wire::send_with_fds(
            self.ctl.as_fd(),
            &Order::Carry.encode(),
            &[client.as_fd(), inside.as_fd()],
        )
    }

    /// The relay's next message (blocks until one comes).
    pub fn event(&self) -> Event {
        // A relay that ended with an order unread makes the kernel report ECONNRESET once,
        // ahead of what the relay sent before it ended: read on past it.
        for _ in 0..2 {
            match receive(self.ctl.as_fd()) {
                Ok(Some((b, _))) => return Event::decode(&b),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                Ok(None) | Err(_) => return Event::Gone,
            }
        }
        Event::Gone
    }

    /// Waits up to `limit` for the relay to end by itself (after [`Event::Done`]).
    pub fn end(mut self, limit: Duration) {
        self.worker.wait_for(limit);
    }
}

/// Tells a relay orders from another thread than the one that reads its events.
#[derive(Debug)]
pub struct Orders(OwnedFd);

impl Orders {
    /// Tells the relay `order`; false when it is gone.
    pub fn order(&self, order: &Order) -> bool {
        send(self.0.as_fd(), &order.encode(), None).is_ok()
    }
}

/// Runs the relay process; returns its exit code.
pub fn main() -> i32 {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    // SAFETY: descriptor 3 is this process's channel by the contract of `Relay::start`, and
    // nothing else here owns it.
    let ctl = unsafe { OwnedFd::from_raw_fd(3) };
    let _ = rustix::io::fcntl_setfd(&ctl, rustix::io::FdFlags::CLOEXEC);
    match serve(ctl.as_fd()) {
        Ok(()) => 0,
        Err(e) => {
            let _ = send(ctl.as_fd(), &Event::Failed(e).encode(), None);
            1
        }
    }
}

/// Takes descriptor `fd` (handed over by `Relay::start`: 4 and on, by kind).
fn stream(fd: i32) -> Result<OwnedFd, String> {
    // SAFETY: handed to this process for the relay by `Relay::start`, owned by nothing else;
    // one that is not open fails the check below and is never used.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC).is_err() {
        std::mem::forget(owned);
        return Err(format!("descriptor {fd} is missing"));
    }
    Ok(owned)
}

fn serve(ctl: BorrowedFd<'_>) -> Result<(), String> {
    let (bytes, _) = receive(ctl)
        .map_err(|e| format!("no settings: {e}"))?
        .ok_or("no settings")?;
    let settings: Settings =
        serde_json::from_slice(&bytes).map_err(|e| format!("bad settings: {e}"))?;
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(settings.parent)
    {
        return Err("the supervisor is gone".into());
    }
    // Taken before the confinement, so a missing one is a failure to start.
    let streams = match settings.kind {
        Kind::Pipes => vec![stream(4)?, stream(5)?, stream(6)?],
        Kind::Pty | Kind::Session { .. } | Kind::Attach => vec![stream(4)?],
        Kind::Ports => Vec::new(),
    };
    let filter =
        crate::seccomp::relay_helper().map_err(|e| format!("cannot apply seccomp: {e}"))?;
    helper::confine(settings.uid, &[], vec![filter])?;
    send(ctl, &Event::Ready.encode(), None).map_err(|e| e.to_string())?;
    let mut streams = streams.into_iter();
    let mut next = || streams.next().ok_or("a stream is missing");
    match settings.kind {
        Kind::Pty => relay_pty(ctl, next()?),
        Kind::Pipes => relay_pipes(ctl, next()?, next()?, next()?),
        Kind::Session { tty } => relay_session(ctl, UnixStream::from(next()?), tty),
        Kind::Ports => relay_ports(ctl),
        Kind::Attach => relay_attached(ctl, UnixStream::from(next()?)),
    }
    Ok(())
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                let mut p = [PollFd::new(&fd, PollFlags::OUT)];
                let _ = poll(&mut p, None);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Where the command's output goes: the user's terminal (or stdout) while it takes it, and
/// every attached terminal that keeps up (one that does not is dropped, not waited for).
#[derive(Debug, Default)]
struct Output {
    stdout_gone: bool,
    clients: Vec<UnixStream>,
    /// A prompt shows: the command's output waits.
    held: bool,
}

impl Output {
    fn write(&mut self, data: &[u8], to_stdout: bool) {
        if to_stdout && !self.stdout_gone && write_all(rustix::stdio::stdout(), data).is_err() {
            self.stdout_gone = true;
        }
        self.clients.retain_mut(|c| c.write_all(data).is_ok());
    }
}

/// The command's output and the prompts drawn over it, shared by the threads that write.
#[derive(Debug, Default)]
struct Screen {
    out: Mutex<Output>,
    free: Condvar,
}

impl Screen {
    fn lock(&self) -> MutexGuard<'_, Output> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits while a prompt shows; the output, free to write.
    fn wait_free(&self) -> MutexGuard<'_, Output> {
        let mut out = self.lock();
        while out.held {
            out = self.free.wait(out).unwrap_or_else(PoisonError::into_inner);
        }
        out
    }

    /// The command's output: held while a prompt shows.
    fn write(&self, data: &[u8]) {
        self.wait_free().write(data, true);
    }

    /// Paddock's own words (a prompt, an answer): to the attached terminals, and to stdout
    /// when `local` (it is the user's terminal).
    fn draw(&self, data: &[u8], local: bool) {
        self.lock().write(data, local);
    }

    /// Holds the command's output, or lets it go on.
    fn hold(&self, held: bool) {
        self.lock().held = held;
        self.free.notify_all();
    }

    /// Whether a terminal is attached.
    fn attached(&self) -> bool {
        !self.lock().clients.is_empty()
    }
}

/// The prompts of a relay with a terminal ([`crate::prompt`]): drawn on the user's terminal
/// and on attached ones, answered with their keys, never seen by the sandbox.
#[derive(Debug)]
struct Prompts {
    prompter: Prompter,
    /// This process's stdin is the user's terminal.
    local: bool,
}

impl Prompts {
    fn new() -> Prompts {
        Prompts {
            prompter: Prompter::default(),
            local: rustix::termios::isatty(rustix::stdio::stdin()),
        }
    }

    /// Takes an order about prompts; false for any other order.
    fn order(&mut self, order: &Order, screen: &Screen) -> bool {
        match order {
            Order::Prompt(id, text) => self.prompter.add(*id, text),
            Order::Unprompt(id) => {
                if let Some(said) = self.prompter.remove(*id) {
                    screen.draw(&said, self.local);
                    screen.hold(false);
                }
            }
            _ => return false,
        }
        true
    }

    /// Puts up the next prompt, if one waits and a terminal can show it: the command's output
    /// is held, and what was typed before it is dropped.
    fn refresh(&mut self, screen: &Screen) {
        if self.prompter.showing() || !(self.local || screen.attached()) {
            return;
        }
        if let Some(drawn) = self.prompter.show(Instant::now()) {
            screen.hold(true);
            screen.draw(&drawn, self.local);
            if self.local {
                let _ = rustix::termios::tcflush(
                    rustix::stdio::stdin(),
                    rustix::termios::QueueSelector::IFlush,
                );
            }
        }
    }

    /// Whether keys go to a prompt instead of the command.
    fn showing(&self) -> bool {
        self.prompter.showing()
    }

    /// Keys typed while a prompt shows; an answer goes to the supervisor.
    fn keys(&mut self, typed: &[u8], ctl: BorrowedFd<'_>, screen: &Screen) {
        if let Some((step, said)) = self.prompter.keys(typed, Instant::now()) {
            screen.draw(&said, self.local);
            screen.hold(false);
            if let Step::Answer(id, c) = step {
                tell(ctl, &Event::Answer(id, c));
            }
        }
    }
}

/// One attached terminal and its unparsed input.
#[derive(Debug)]
struct Client {
    conn: UnixStream,
    buf: Vec<u8>,
}

/// What an attached terminal asked for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Input(Vec<u8>),
    Resize(u16, u16),
}

impl Client {
    /// Reads what arrived; `None` when the terminal went away (or sent what is not a frame).
    fn read(&mut self) -> Option<Vec<Asked>> {
        let mut chunk = [0u8; 16 * 1024];
        match self.conn.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        parse_attached(&mut self.buf)
    }
}

/// Takes the whole frames at the start of `buf`; `None` when it holds what is not a frame.
fn parse_attached(buf: &mut Vec<u8>) -> Option<Vec<Asked>> {
    let mut out = Vec::new();
    loop {
        match buf.first() {
            Some(&ATTACH_INPUT) if buf.len() >= 3 => {
                let n = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
                if buf.len() < 3 + n {
                    break;
                }
                out.push(Asked::Input(buf[3..3 + n].to_vec()));
                buf.drain(..3 + n);
            }
            Some(&ATTACH_RESIZE) if buf.len() >= 5 => {
                let rows = u16::from_be_bytes([buf[1], buf[2]]);
                let cols = u16::from_be_bytes([buf[3], buf[4]]);
                out.push(Asked::Resize(rows, cols));
                buf.drain(..5);
            }
            Some(&ATTACH_INPUT) | Some(&ATTACH_RESIZE) | None => break,
            Some(_) => return None,
        }
    }
    Some(out)
}

/// The attached terminals' input side, read on the relay's main thread.
#[derive(Debug, Default)]
struct Attached {
    clients: Vec<Client>,
}

impl Attached {
    fn add(&mut self, conn: OwnedFd, output: &Screen) {
        let conn = UnixStream::from(conn);
        let Ok(writer) = conn.try_clone() else { return };
        // Reads without blocking; writes block (a terminal that cannot take a chunk at all is
        // dropped when the write fails).
        if rustix::io::ioctl_fionbio(&conn, true).is_err() {
            return;
        }
        let _ = rustix::io::ioctl_fionbio(&writer, false);
        output.lock().clients.push(writer);
        self.clients.push(Client {
            conn,
            buf: Vec::new(),
        });
    }

    /// What the clients at `ready` asked for; those gone are dropped.
    fn read(&mut self, ready: &[bool]) -> Vec<Asked> {
        let mut asked = Vec::new();
        let mut k = 0;
        self.clients.retain_mut(|c| {
            let r = ready.get(k).copied().unwrap_or(false);
            k += 1;
            if !r {
                return true;
            }
            match c.read() {
                Some(a) => {
                    asked.extend(a);
                    true
                }
                None => false,
            }
        });
        asked
    }
}

/// Waits until one of `fds` is ready (or a signal interrupts); which are. `None` when poll
/// fails, which ends the relay.
fn wait(mut fds: Vec<PollFd<'_>>) -> Option<Vec<bool>> {
    match poll(&mut fds, None) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(_) => return None,
    }
    Some(fds.iter().map(|f| !f.revents().is_empty()).collect())
}

fn tell(ctl: BorrowedFd<'_>, event: &Event) {
    let _ = send(ctl, &event.encode(), None);
}

/// An ns command's terminal: the pty master's output to the terminals, their input to it;
/// while a prompt shows, the output waits in the pty and the keys go to the prompt.
fn relay_pty(ctl: BorrowedFd<'_>, master: OwnedFd) {
    let stdin = rustix::stdio::stdin();
    let screen = Screen::default();
    let mut prompts = Prompts::new();
    let mut attached = Attached::default();
    let mut terminal = TerminalSize::new(master.as_fd()).ok();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    let drain = |buf: &mut [u8]| {
        screen.hold(false);
        let _ = rustix::io::ioctl_fionbio(&master, true);
        while let Ok(n) = rustix::io::read(&master, &mut *buf) {
            if n == 0 {
                break;
            }
            screen.write(&buf[..n]);
        }
    };
    loop {
        prompts.refresh(&screen);
        let showing = prompts.showing();
        let mut fds = vec![
            PollFd::new(&ctl, PollFlags::IN),
            // Held while a prompt shows: the command's writes wait in the pty.
            PollFd::new(
                &master,
                if showing {
                    PollFlags::empty()
                } else {
                    PollFlags::IN
                },
            ),
        ];
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        let clients_at = fds.len();
        for c in &attached.clients {
            fds.push(PollFd::new(&c.conn, PollFlags::IN));
        }
        let Some(ready) = wait(fds) else { return };
        // Orders first: a resize must land before the keystrokes that follow it.
        if ready[0] {
            match receive(ctl) {
                Ok(Some((b, fd))) => match Order::decode(&b) {
                    Some(Order::Resize(rows, cols)) => {
                        if let Some(t) = &mut terminal {
                            t.set(rows, cols);
                        }
                    }
                    Some(Order::Attach) => {
                        if let Some(fd) = fd {
                            attached.add(fd, &screen);
                        }
                    }
                    Some(Order::Finish) => {
                        drain(&mut buf);
                        tell(ctl, &Event::Done);
                        return;
                    }
                    Some(o) => {
                        prompts.order(&o, &screen);
                    }
                    None => {}
                },
                // The supervisor is gone.
                Ok(None) | Err(_) => return,
            }
        }
        if ready[1] && !showing {
            match rustix::io::read(&master, &mut buf) {
                Ok(0) | Err(rustix::io::Errno::IO) => {
                    // Every process of the terminal closed it: the command is done.
                    drain(&mut buf);
                    tell(ctl, &Event::Done);
                    return;
                }
                Ok(n) => screen.write(&buf[..n]),
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => {
                    tell(ctl, &Event::Done);
                    return;
                }
            }
        }
        if stdin_open && ready[2] {
            match rustix::io::read(stdin, &mut buf) {
                Ok(0) => stdin_open = false,
                Ok(n) if prompts.showing() => prompts.keys(&buf[..n], ctl, &screen),
                Ok(n) => {
                    if write_all(master.as_fd(), &buf[..n]).is_err() {
                        stdin_open = false;
                    }
                }
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
        for a in attached.read(&ready[clients_at..]) {
            match a {
                Asked::Input(d) if prompts.showing() => prompts.keys(&d, ctl, &screen),
                Asked::Input(d) => {
                    let _ = write_all(master.as_fd(), &d);
                }
                Asked::Resize(rows, cols) => {
                    if let Some(t) = &mut terminal {
                        t.set(rows, cols);
                    }
                }
            }
        }
    }
}

/// An ns command without a terminal: its three pipes, copied to and from the supervisor's
/// stdin, stdout and stderr, until both outputs close or the supervisor says the command's
/// process ended (then what is left in them is copied). An output the host stops taking is
/// closed, so the command's next write fails as it would have on the host's pipe.
fn relay_pipes(ctl: BorrowedFd<'_>, stdin: OwnedFd, stdout: OwnedFd, stderr: OwnedFd) {
    let _ = rustix::io::ioctl_fionbio(&stdin, true);
    let mut to_cmd = Some(stdin);
    let mut outs = [Some(stdout), Some(stderr)];
    let hosts = [rustix::stdio::stdout(), rustix::stdio::stderr()];
    let host_in = rustix::stdio::stdin();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let finish = |outs: &mut [Option<OwnedFd>; 2], buf: &mut [u8]| {
        for (slot, host) in outs.iter_mut().zip(hosts) {
            if let Some(fd) = slot.take() {
                let _ = rustix::io::ioctl_fionbio(&fd, true);
                let mut fd = Some(fd);
                while copy_once(&mut fd, host, buf) {}
            }
        }
        tell(ctl, &Event::Done);
    };
    loop {
        if outs.iter().all(Option::is_none) {
            tell(ctl, &Event::Done);
            return;
        }
        // What is polled: the orders, the two outputs, and stdin's way in (the host's stdin
        // while nothing waits to go in, else the command's pipe becoming writable).
        let mut fds = Vec::with_capacity(4);
        fds.push(PollFd::new(&ctl, PollFlags::IN));
        for o in outs.iter().flatten() {
            fds.push(PollFd::new(o, PollFlags::IN));
        }
        let n_out = fds.len();
        match &to_cmd {
            Some(w) if !pending.is_empty() => fds.push(PollFd::new(w, PollFlags::OUT)),
            Some(_) => fds.push(PollFd::new(&host_in, PollFlags::IN)),
            None => {}
        }
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        let ready: Vec<PollFlags> = fds.iter().map(PollFd::revents).collect();
        drop(fds);
        if !ready[0].is_empty() {
            match receive(ctl) {
                Ok(Some((b, _))) => {
                    if Order::decode(&b) == Some(Order::Finish) {
                        // The command's process ended: copy what it left, then stop.
                        finish(&mut outs, &mut buf);
                        return;
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
        let mut i = 1;
        for (slot, host) in outs.iter_mut().zip(hosts) {
            if slot.is_none() {
                continue;
            }
            if !ready[i].is_empty() && !copy_once(slot, host, &mut buf) {
                *slot = None;
            }
            i += 1;
        }
        if let Some(r) = ready.get(n_out).filter(|r| !r.is_empty()) {
            if pending.is_empty() {
                // The host's stdin has something (or ended).
                match rustix::io::read(host_in, &mut buf) {
                    Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                    Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                    Ok(_) | Err(_) => to_cmd = None,
                }
            } else if r.intersects(PollFlags::ERR | PollFlags::HUP) {
                // The command closed its stdin.
                to_cmd = None;
                pending.clear();
            }
        }
        if let Some(w) = &to_cmd
            && !pending.is_empty()
        {
            match rustix::io::write(w, &pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                Err(_) => {
                    to_cmd = None;
                    pending.clear();
                }
            }
        }
    }
}

/// Copies one read's worth from `from` to `to`. False when `from` is done: it ended, or `to`
/// no longer takes output (then `from` is closed, so the command's next write fails as it would
/// have on the host's pipe: `yes | head -1` ends `yes` with SIGPIPE).
fn copy_once(from: &mut Option<OwnedFd>, to: BorrowedFd<'_>, buf: &mut [u8]) -> bool {
    let Some(fd) = from else {
        return false;
    };
    let n = match rustix::io::read(&*fd, &mut *buf) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(rustix::io::Errno::INTR) => return true,
        Err(_) => return false,
    };
    let mut left = &buf[..n];
    while !left.is_empty() {
        match rustix::io::write(to, left) {
            Ok(w) => left = &left[w..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                // A host stream someone made non-blocking: wait until it takes more.
                let mut p = [PollFd::new(&to, PollFlags::OUT)];
                let _ = poll(&mut p, None);
            }
            Err(_) => {
                *from = None;
                return false;
            }
        }
    }
    true
}

/// `paddock attach`: this terminal's keys go out as frames (Ctrl-P Ctrl-Q detaches; Ctrl-P
/// twice sends one), sizes from the CLI too; the command's output comes in.
fn relay_attached(ctl: BorrowedFd<'_>, mut conn: UnixStream) {
    let stdin = rustix::stdio::stdin();
    let stdout = rustix::stdio::stdout();
    let mut buf = vec![0u8; 16 * 1024];
    let mut after_ctrl_p = false;
    let mut stdin_open = true;
    let mut sent: Option<(u16, u16)> = None;
    loop {
        let mut fds = vec![
            PollFd::new(&ctl, PollFlags::IN),
            PollFd::new(&conn, PollFlags::IN),
        ];
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        let Some(ready) = wait(fds) else { return };
        // Sizes first, looked at on every wake-up: a resize that came before a keystroke
        // goes before it, also when the CLI's word of it (a SIGWINCH there) comes later.
        let mut size = None;
        if ready[0] {
            match receive(ctl) {
                Ok(Some((b, _))) => {
                    if let Some(Order::Resize(rows, cols)) = Order::decode(&b) {
                        size = Some((rows, cols));
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
        if let Ok(w) = rustix::termios::tcgetwinsize(stdin) {
            size = Some((w.ws_row, w.ws_col));
        }
        if let Some((rows, cols)) = size.filter(|s| Some(*s) != sent) {
            sent = Some((rows, cols));
            let mut f = vec![ATTACH_RESIZE];
            f.extend_from_slice(&rows.to_be_bytes());
            f.extend_from_slice(&cols.to_be_bytes());
            if conn.write_all(&f).is_err() {
                tell(ctl, &Event::Done);
                return;
            }
        }
        if ready[1] {
            match rustix::io::read(&conn, &mut buf) {
                Ok(0) => {
                    tell(ctl, &Event::Done);
                    return;
                }
                Ok(n) => {
                    let _ = write_all(stdout, &buf[..n]);
                }
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => {
                    tell(ctl, &Event::Done);
                    return;
                }
            }
        }
        if stdin_open && ready.get(2).copied().unwrap_or(false) {
            match rustix::io::read(stdin, &mut buf) {
                Ok(0) | Err(rustix::io::Errno::IO) => stdin_open = false,
                Ok(n) => {
                    let (keys, detach) = detach_keys(&buf[..n], &mut after_ctrl_p);
                    for chunk in keys.chunks(u16::MAX as usize) {
                        let mut f = vec![ATTACH_INPUT];
                        f.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                        f.extend_from_slice(chunk);
                        if conn.write_all(&f).is_err() {
                            tell(ctl, &Event::Done);
                            return;
                        }
                    }
                    if detach {
                        tell(ctl, &Event::Detached);
                        return;
                    }
                }
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
    }
}

/// The keys of `typed` to send on, and whether Ctrl-P Ctrl-Q came (what follows it is
/// dropped). A Ctrl-P waits for the next key: Ctrl-P again sends one, another key sends both.
fn detach_keys(typed: &[u8], after_ctrl_p: &mut bool) -> (Vec<u8>, bool) {
    let mut keys = Vec::with_capacity(typed.len() + 1);
    for &k in typed {
        match (*after_ctrl_p, k) {
            (true, 0x11) => return (keys, true),
            (true, 0x10) => keys.push(0x10),
            (true, other) => {
                keys.push(0x10);
                keys.push(other);
            }
            (false, 0x10) => {}
            (false, other) => keys.push(other),
        }
        *after_ctrl_p = k == 0x10 && !*after_ctrl_p;
    }
    (keys, false)
}

/// Published ports' connections: each pair both ways on threads of its own, until the
/// supervisor goes (its end of the channel closes).
fn relay_ports(ctl: BorrowedFd<'_>) {
    loop {
        match receive_all(ctl) {
            Ok(Some((b, fds))) => {
                let mut fds = fds.into_iter();
                if let (Some(Order::Carry), Some(client), Some(inside)) =
                    (Order::decode(&b), fds.next(), fds.next())
                {
                    let _ = std::thread::Builder::new()
                        .name("relay-port".into())
                        .spawn(move || carry(client, inside));
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// Copies both ways between two connected sockets; each direction's end is passed on as a
/// shutdown of the other side's writing.
fn carry(client: OwnedFd, inside: OwnedFd) {
    let (Ok(client_r), Ok(inside_r)) = (client.try_clone(), inside.try_clone()) else {
        return;
    };
    let up = std::thread::Builder::new()
        .name("relay-port-up".into())
        .spawn(move || pump(client_r, inside));
    pump(inside_r, client);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

/// Copies `from` to `to` until `from` ends or `to` stops taking, then shuts down `to`'s writing.
fn pump(from: OwnedFd, to: OwnedFd) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut from = Some(from);
    while copy_once(&mut from, to.as_fd(), &mut buf) {}
    let _ = rustix::net::shutdown(&to, rustix::net::Shutdown::Write);
}

/// A gVisor or VM command: the helper's frames become output (and the exit, diagnostics and
/// limits, told to the supervisor); input, signals and sizes become frames.
fn relay_session(ctl: BorrowedFd<'_>, conn: UnixStream, tty: bool) {
    let output = Arc::new(Screen::default());
    // Output, reports and the exit, on a thread of their own, which ends the process.
    let Ok(mut reader) = conn.try_clone() else {
        tell(ctl, &Event::Done);
        return;
    };
    let Ok(ctl_out) = ctl.try_clone_to_owned() else {
        tell(ctl, &Event::Done);
        return;
    };
    {
        let output = output.clone();
        let spawned = std::thread::Builder::new()
            .name("relay-output".into())
            .spawn(move || {
                let ctl = ctl_out.as_fd();
                let stderr = rustix::stdio::stderr();
                while let Ok(Some(frame)) = Frame::read_from(&mut reader) {
                    match frame {
                        Frame::Stdout(d) => output.write(&d),
                        Frame::Stderr(d) => {
                            // Held while a prompt shows, like the output.
                            let _held = output.wait_free();
                            let _ = write_all(stderr, &d);
                        }
                        Frame::Report(Report::ExecFailed {
                            program, message, ..
                        }) => tell(ctl, &Event::Diagnostic(format!("{program}: {message}"))),
                        Frame::Report(Report::LimitsHit { events }) => {
                            for e in events {
                                tell(ctl, &Event::Limit(e));
                            }
                        }
                        Frame::Exit(st) => {
                            tell(
                                ctl,
                                &Event::Exit(match st {
                                    ExitStatus::Code { code } => Exit::Code { code },
                                    ExitStatus::Signal { signal } => Exit::Signal { signal },
                                }),
                            );
                            break;
                        }
                        _ => {}
                    }
                }
                tell(ctl, &Event::Done);
                std::process::exit(0);
            });
        if spawned.is_err() {
            tell(ctl, &Event::Done);
            return;
        }
    }
    let mut writer = conn;
    let stdin = rustix::stdio::stdin();
    let mut attached = Attached::default();
    // Prompts only where the command has a terminal.
    let mut prompts = tty.then(Prompts::new);
    let mut stdin_open = true;
    let mut buf = vec![0u8; MAX_DATA];
    let mut frame = |f: Frame| f.write_to(&mut writer);
    loop {
        if let Some(p) = &mut prompts {
            p.refresh(&output);
        }
        let mut fds = vec![PollFd::new(&ctl, PollFlags::IN)];
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        let clients_at = fds.len();
        for c in &attached.clients {
            fds.push(PollFd::new(&c.conn, PollFlags::IN));
        }
        let Some(ready) = wait(fds) else { return };
        if ready[0] {
            match receive(ctl) {
                Ok(Some((b, fd))) => match Order::decode(&b) {
                    Some(Order::Resize(rows, cols)) => {
                        let _ = frame(Frame::Resize { rows, cols });
                    }
                    Some(Order::Signal(s)) => {
                        let _ = frame(Frame::Signal(s));
                    }
                    Some(Order::Attach) => {
                        if let (Some(fd), true) = (fd, tty) {
                            attached.add(fd, &output);
                        }
                    }
                    Some(Order::Finish) => {
                        output.hold(false);
                        tell(ctl, &Event::Done);
                        return;
                    }
                    Some(o) => {
                        if let Some(p) = &mut prompts {
                            p.order(&o, &output);
                        }
                    }
                    None => {}
                },
                Ok(None) | Err(_) => return,
            }
        }
        if stdin_open && ready[1] {
            match rustix::io::read(stdin, &mut buf) {
                Ok(0) => {
                    let _ = frame(Frame::StdinEof);
                    stdin_open = false;
                }
                Ok(n) => match &mut prompts {
                    Some(p) if p.showing() => p.keys(&buf[..n], ctl, &output),
                    _ => {
                        if frame(Frame::Stdin(buf[..n].to_vec())).is_err() {
                            stdin_open = false;
                        }
                    }
                },
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
        for a in attached.read(&ready[clients_at..]) {
            let _ = match a {
                Asked::Input(d) if prompts.as_ref().is_some_and(Prompts::showing) => {
                    if let Some(p) = &mut prompts {
                        p.keys(&d, ctl, &output);
                    }
                    Ok(())
                }
                Asked::Input(d) => d
                    .chunks(MAX_DATA)
                    .try_for_each(|c| frame(Frame::Stdin(c.to_vec()))),
                Asked::Resize(rows, cols) => frame(Frame::Resize { rows, cols }),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_events_read_back_and_junk_is_the_relay_gone() {
        for o in [
            Order::Resize(33, 77),
            Order::Signal(libc::SIGINT),
            Order::Attach,
            Order::Finish,
            Order::Carry,
            Order::Prompt(-7, "web asks to reach example.com:443".into()),
            Order::Unprompt(i64::MAX),
        ] {
            assert_eq!(Order::decode(&o.encode()), Some(o));
        }
        assert_eq!(Order::decode(&[PROMPT, 0, 0, 1]), None);
        assert_eq!(Order::decode(&[UNPROMPT, 0, 0, 1]), None);
        assert_eq!(Order::decode(&[RESIZE, 0, 1]), None);
        assert_eq!(Order::decode(&[9]), None);
        for e in [
            Event::Ready,
            Event::Exit(Exit::Code { code: -3 }),
            Event::Exit(Exit::Signal { signal: 9 }),
            Event::Diagnostic("nope: not found".into()),
            Event::Limit("pids limit: 10".into()),
            Event::Done,
            Event::Failed("cannot apply seccomp".into()),
            Event::Detached,
            Event::Answer(42, Choice::AlwaysHost),
            Event::Answer(-1, Choice::DenyAlways),
        ] {
            assert_eq!(Event::decode(&e.encode()), e);
        }
        assert_eq!(Event::decode(&[]), Event::Gone);
        assert_eq!(Event::decode(&[EXIT_CODE, 1, 2]), Event::Gone);
        assert_eq!(Event::decode(&[200, 1]), Event::Gone);
        assert_eq!(
            Event::decode(&[ANSWER, 0, 0, 0, 0, 0, 0, 0, 1, b'z']),
            Event::Gone
        );
        // Text is cut at the limit, on a character boundary.
        let long = "é".repeat(MAX_TEXT);
        match Event::decode(&Event::Diagnostic(long).encode()) {
            Event::Diagnostic(s) => assert!(s.len() <= MAX_TEXT && s.chars().all(|c| c == 'é')),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn attached_frames_are_taken_whole_and_junk_drops_the_terminal() {
        let mut buf = vec![ATTACH_INPUT, 0, 2, b'h', b'i', ATTACH_RESIZE, 0, 24, 0, 80];
        buf.extend_from_slice(&[ATTACH_INPUT, 0, 5, b'a']);
        assert_eq!(
            parse_attached(&mut buf),
            Some(vec![Asked::Input(b"hi".to_vec()), Asked::Resize(24, 80)])
        );
        // The partial frame waits for the rest.
        assert_eq!(buf, vec![ATTACH_INPUT, 0, 5, b'a']);
        buf.extend_from_slice(b"bcde");
        assert_eq!(
            parse_attached(&mut buf),
            Some(vec![Asked::Input(b"abcde".to_vec())])
        );
        assert!(buf.is_empty());
        let mut junk = vec![7u8, 1, 2];
        assert_eq!(parse_attached(&mut junk), None);
    }

    #[test]
    fn ctrl_p_ctrl_q_detaches_and_ctrl_p_twice_sends_one() {
        let mut p = false;
        assert_eq!(detach_keys(b"ab", &mut p), (b"ab".to_vec(), false));
        assert_eq!(detach_keys(b"x\x10\x11y", &mut p), (b"x".to_vec(), true));
        let mut p = false;
        assert_eq!(
            detach_keys(b"\x10\x10z", &mut p),
            (b"\x10z".to_vec(), false)
        );
        // Split across reads: the Ctrl-P waits for the next key.
        let mut p = false;
        assert_eq!(detach_keys(b"\x10", &mut p), (Vec::new(), false));
        assert_eq!(detach_keys(b"q", &mut p), (b"\x10q".to_vec(), false));
        assert_eq!(detach_keys(b"\x10", &mut p), (Vec::new(), false));
        assert_eq!(detach_keys(b"\x11", &mut p), (Vec::new(), true));
    }

    #[test]
    fn settings_refuse_unknown_fields() {
        let s = Settings {
            parent: 1,
            uid: Some(5),
            kind: Kind::Session { tty: true },
        };
        let json = serde_json::to_string(&s).unwrap();
        let back: Settings = serde_json::from_str(&json).unwrap();
        assert_eq!(back.kind, s.kind);
        assert!(
            serde_json::from_str::<Settings>(
                r#"{"parent":1,"uid":null,"kind":{"kind":"pty"},"x":1}"#
            )
            .is_err()
        );
    }
}
