//! The supervisor's side of a command's streams: signals, the terminal's mode and size, and
//! terminals attached later. The bytes themselves go through a relay process that holds no
//! privilege ([`paddock_confine::relay`]); this side never reads them.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use paddock_confine::relay::{Event, FORWARDED, Order, Relay};
use paddock_core::{Instance, SessionEnd, Streams};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};

/// The signals the supervisor catches for a sandbox, caught from before the sandbox starts:
/// one that arrives while the sandbox is being set up is passed on once it runs, instead of
/// killing the supervisor and leaving the sandbox without it.
#[derive(Debug)]
pub struct SignalPipe {
    read: OwnedFd,
    write: std::os::fd::RawFd,
    ids: Vec<signal_hook::SigId>,
    /// The first stop signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT) read from the pipe; 0 until one
    /// came.
    stopped: std::sync::atomic::AtomicI32,
}

impl SignalPipe {
    /// Catches the forwarded signals, and SIGWINCH when `terminal`.
    pub fn catch(terminal: bool) -> io::Result<SignalPipe> {
        let mut signals = FORWARDED.to_vec();
        if terminal {
            signals.push(libc::SIGWINCH);
        }
        SignalPipe::new(&signals)
    }

    fn new(signals: &[i32]) -> io::Result<SignalPipe> {
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        let wfd = write.as_raw_fd();
        std::mem::forget(write); // lives as long as the process; handlers write to it
        let mut ids = Vec::new();
        for &sig in signals {
            // SAFETY: the handler only calls write(2), which is async-signal-safe.
            let id = unsafe {
                signal_hook::low_level::register(sig, move || {
                    let b = sig as u8;
                    libc::write(wfd, (&raw const b).cast(), 1);
                })
            }?;
            ids.push(id);
        }
        Ok(SignalPipe {
            read,
            write: wfd,
            ids,
            stopped: std::sync::atomic::AtomicI32::new(0),
        })
    }

    /// A descriptor on which one byte `N` asks for signal `N` to be passed on to the sandbox
    /// (the control socket's `signal` request: the same path as a signal to the supervisor).
    pub fn injector(&self) -> io::Result<OwnedFd> {
        // SAFETY: the write end is never closed (it is leaked on purpose above).
        let fd = unsafe { BorrowedFd::borrow_raw(self.write) };
        Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
    }

    /// The first signal caught so far that asks to stop (SIGINT, SIGTERM, SIGHUP, SIGQUIT):
    /// for a sandbox that failed to start or to run, the likely cause (the signal reached the
    /// helpers of this process group as well). Signals not yet passed on are consumed.
    pub fn stop_requested(&self) -> Option<i32> {
        self.drain();
        match self.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            s => Some(s),
        }
    }

    fn drain(&self) -> Vec<i32> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        while let Ok(n) = rustix::io::read(&self.read, &mut buf) {
            if n == 0 {
                break;
            }
            out.extend(buf[..n].iter().map(|b| i32::from(*b)));
        }
        if let Some(s) = out.iter().find(|s| STOPS.contains(s)) {
            let _ = self.stopped.compare_exchange(
                0,
                *s,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        out
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// The signals that ask a command to stop.
const STOPS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The name of a signal the supervisor catches (`SIGTERM`), or `signal N`.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGUSR1 => "SIGUSR1".into(),
        libc::SIGUSR2 => "SIGUSR2".into(),
        n => format!("signal {n}"),
    }
}

/// Restores the terminal's settings on drop.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
        let saved = tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(fd, OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// Terminals attached to a running sandbox's command from elsewhere (`paddock attach`), on their
/// way from the control socket to the relay process: each gets the command's output; what
/// each sends is framed ([`paddock_confine::relay::ATTACH_INPUT`] with a 2-byte length, or
/// [`paddock_confine::relay::ATTACH_RESIZE`] with rows and columns, big-endian).
#[derive(Debug)]
pub struct AttachHub {
    wake_r: OwnedFd,
    wake_w: OwnedFd,
    pending: std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>,
}

impl AttachHub {
    /// An empty hub.
    pub fn new() -> io::Result<AttachHub> {
        let (wake_r, wake_w) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        Ok(AttachHub {
            wake_r,
            wake_w,
            pending: std::sync::Mutex::default(),
        })
    }

    /// Hands a connection to the relay (from the control thread).
    pub fn add(&self, conn: std::os::unix::net::UnixStream) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(conn);
        let _ = rustix::io::write(&self.wake_w, &[1]);
    }

    fn take(&self) -> Vec<std::os::unix::net::UnixStream> {
        let mut b = [0u8; 64];
        while matches!(rustix::io::read(&self.wake_r, &mut b), Ok(n) if n > 0) {}
        std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Relays until the command ends: its streams go to the relay process
/// ([`paddock_confine::relay`]), which holds no privilege; this side passes on signals, this
/// terminal's size and the terminals attached through `hub`, and waits for the end. A command
/// with a terminal shows `prompts` there, and the answers the user types are applied here. A
/// relay that fails or dies ends the command (fail closed).
pub fn relay(
    instance: &mut dyn Instance,
    sigs: &SignalPipe,
    hub: Option<&AttachHub>,
    prompts: Option<&crate::asks::Prompts>,
    sandbox: &str,
) -> io::Result<()> {
    let streams = instance.take_streams();
    let session = matches!(streams, Streams::Session { .. });
    let tty = matches!(
        streams,
        Streams::Pty(_) | Streams::Session { tty: true, .. }
    );
    let relay = match Relay::start(streams, sandbox) {
        Ok(Some(r)) => r,
        Ok(None) => return relay_signals(instance, sigs),
        Err(e) => {
            let _ = instance.signal(libc::SIGKILL);
            if session {
                instance.relayed(SessionEnd::default());
            }
            return Err(io::Error::other(e));
        }
    };
    let stdin = rustix::stdio::stdin();
    let _raw = tty.then(|| RawMode::enter(stdin).ok());
    if tty && let Ok(size) = tcgetwinsize(stdin) {
        relay.order(Order::Resize(size.ws_row, size.ws_col));
    }
    let prompts = prompts.filter(|_| tty);
    if let Some(p) = prompts
        && let Ok(orders) = relay.orders()
    {
        p.connect(orders);
    }
    let mut end = SessionEnd::default();
    let mut finishing: Option<Instant> = None;
    let outcome = loop {
        let exit_fd = instance.exit_fd();
        let ctl = relay.ctl();
        let mut fds = vec![
            PollFd::new(&sigs.read, PollFlags::IN),
            PollFd::new(&exit_fd, PollFlags::IN),
            PollFd::new(&ctl, PollFlags::IN),
        ];
        if let Some(h) = hub {
            fds.push(PollFd::new(&h.wake_r, PollFlags::IN));
        }
        // Once the sandbox ended, the relay has a moment to write what is left.
        let tick = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        match poll(&mut fds, finishing.map(|_| &tick)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => break Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        for sig in sigs.drain() {
            if sig == libc::SIGWINCH {
                if let Ok(size) = tcgetwinsize(stdin) {
                    relay.order(Order::Resize(size.ws_row, size.ws_col));
                }
            } else if session {
                relay.order(Order::Signal(sig));
            } else {
                let _ = instance.signal(sig);
            }
        }
        if let Some(h) = hub
            && ready.get(3).copied().unwrap_or(false)
        {
            for conn in h.take() {
                relay.attach(&conn);
            }
        }
        if ready[2] {
            match relay.event() {
                Event::Exit(e) => end.exit = Some(e),
                Event::Diagnostic(d) => end.diagnostics.push(d),
                Event::Limit(l) => end.limits.push(l),
                Event::Done => break Ok(()),
                Event::Answer(id, choice) => {
                    if let Some(p) = prompts
                        && let Err(e) = p.answer(id, choice)
                    {
                        crate::asks::say(&format!("paddock: {e}"));
                    }
                }
                Event::Ready | Event::Detached | Event::Failed(_) | Event::Gone => {
                    break Err(io::Error::other(
                        "the relay process ended before the command did; the command was stopped",
                    ));
                }
            }
        }
        if ready[1] && finishing.is_none() {
            relay.order(Order::Finish);
            finishing = Some(Instant::now());
        }
        if finishing.is_some_and(|t| t.elapsed() > FINISH_LIMIT) {
            break Ok(());
        }
    };
    if let Some(p) = prompts {
        p.disconnect();
    }
    if outcome.is_err() {
        let _ = instance.signal(libc::SIGKILL);
    }
    if session {
        instance.relayed(end);
    }
    relay.end(Duration::from_secs(1));
    outcome
}

/// How long the relay may take to write what is left once the sandbox ended.
const FINISH_LIMIT: Duration = Duration::from_secs(2);

/// A command with the supervisor's own streams: only signals to pass on.
fn relay_signals(instance: &mut dyn Instance, sigs: &SignalPipe) -> io::Result<()> {
    loop {
        let exit_fd = instance.exit_fd();
        let mut fds = [
            PollFd::new(&sigs.read, PollFlags::IN),
            PollFd::new(&exit_fd, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let exited = !fds[1].revents().is_empty();
        for sig in sigs.drain() {
            let _ = instance.signal(sig);
        }
        if exited {
            return Ok(());
        }
    }
}

/// How an attached terminal came away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachEnd {
    /// The user detached (Ctrl-P Ctrl-Q); the command goes on.
    Detached,
    /// The command's terminal closed (it ended, or the sandbox stopped).
    Ended,
}

/// The client side of `paddock attach` to sandbox `sandbox`: this terminal, raw, relayed to
/// the sandbox's command over `conn` by a relay process (framed input and sizes out, output in;
/// Ctrl-P Ctrl-Q detaches), while this one passes on the terminal's size. `ready` runs once
/// the terminal is raw and its size sent: what is typed from then on reaches the command
/// unchanged.
pub fn attach_client(
    conn: std::os::unix::net::UnixStream,
    sandbox: &str,
    ready: impl FnOnce(),
) -> io::Result<AttachEnd> {
    let stdin = rustix::stdio::stdin();
    let sigs = SignalPipe::new(&[libc::SIGWINCH])?;
    let relay = Relay::attach_terminal(conn, sandbox).map_err(io::Error::other)?;
    let resize = || {
        if let Ok(size) = tcgetwinsize(stdin) {
            relay.order(Order::Resize(size.ws_row, size.ws_col));
        }
    };
    resize();
    let _raw = RawMode::enter(stdin).ok();
    ready();
    loop {
        let ctl = relay.ctl();
        let mut fds = [
            PollFd::new(&sigs.read, PollFlags::IN),
            PollFd::new(&ctl, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ended = !fds[1].revents().is_empty();
        // Whatever poll says: a resize whose signal landed as poll returned must still go.
        if !sigs.drain().is_empty() {
            resize();
        }
        if ended {
            let end = match relay.event() {
                Event::Detached => AttachEnd::Detached,
                _ => AttachEnd::Ended,
            };
            relay.end(Duration::from_secs(1));
            return Ok(end);
        }
    }
}
