//! Relaying the terminal and signals between the user and the sandbox.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use paddock_core::Instance;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};

/// Signals the supervisor passes on to the sandbox (SIGWINCH is handled here).
const FORWARD: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The signals the supervisor catches for a sandbox, caught from before the sandbox starts:
/// one that arrives while the sandbox is being set up is passed on once it runs, instead of
/// killing the supervisor and leaving the sandbox without it.
pub struct SignalPipe {
    read: OwnedFd,
    write: std::os::fd::RawFd,
    ids: Vec<signal_hook::SigId>,
}

impl SignalPipe {
    /// Catches the forwarded signals, and SIGWINCH when `terminal`.
    pub fn catch(terminal: bool) -> io::Result<SignalPipe> {
        let mut signals = FORWARD.to_vec();
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
        })
    }

    /// A descriptor on which one byte `N` asks for signal `N` to be passed on to the sandbox
    /// (the control socket's `signal` request: the same path as a signal to the supervisor).
    pub fn injector(&self) -> io::Result<OwnedFd> {
        // SAFETY: the write end is never closed (it is leaked on purpose above).
        let fd = unsafe { BorrowedFd::borrow_raw(self.write) };
        Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
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

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
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

/// Terminals attached to a running sandbox's command from elsewhere (`paddock attach`): each
/// gets the command's output; what each sends is framed ([`ATTACH_INPUT`] with a 2-byte
/// length, or [`ATTACH_RESIZE`] with rows and columns, big-endian).
#[derive(Debug)]
pub struct AttachHub {
    wake_r: OwnedFd,
    wake_w: OwnedFd,
    pending: std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>,
}

/// Frame type: keystrokes for the command.
pub const ATTACH_INPUT: u8 = 0;
/// Frame type: the attached terminal's new size.
pub const ATTACH_RESIZE: u8 = 1;

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

    fn take(&self) -> Vec<Client> {
        let mut b = [0u8; 64];
        while matches!(rustix::io::read(&self.wake_r, &mut b), Ok(n) if n > 0) {}
        std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_iter()
        .filter(|c| c.set_nonblocking(true).is_ok())
        .map(|conn| Client {
            conn,
            buf: Vec::new(),
        })
        .collect()
    }
}

/// One attached terminal and its unparsed input.
struct Client {
    conn: std::os::unix::net::UnixStream,
    buf: Vec<u8>,
}

/// What an attached terminal asked for.
enum Asked {
    Input(Vec<u8>),
    Resize(u16, u16),
}

impl Client {
    /// Reads what arrived; `None` when the terminal went away.
    fn read(&mut self) -> Option<Vec<Asked>> {
        let mut chunk = [0u8; 16 * 1024];
        match std::io::Read::read(&mut self.conn, &mut chunk) {
            Ok(0) => return None,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        let mut out = Vec::new();
        loop {
            match self.buf.first() {
                Some(&ATTACH_INPUT) if self.buf.len() >= 3 => {
                    let n = usize::from(u16::from_be_bytes([self.buf[1], self.buf[2]]));
                    if self.buf.len() < 3 + n {
                        break;
                    }
                    out.push(Asked::Input(self.buf[3..3 + n].to_vec()));
                    self.buf.drain(..3 + n);
                }
                Some(&ATTACH_RESIZE) if self.buf.len() >= 5 => {
                    let rows = u16::from_be_bytes([self.buf[1], self.buf[2]]);
                    let cols = u16::from_be_bytes([self.buf[3], self.buf[4]]);
                    out.push(Asked::Resize(rows, cols));
                    self.buf.drain(..5);
                }
                Some(&ATTACH_INPUT) | Some(&ATTACH_RESIZE) | None => break,
                Some(_) => return None,
            }
        }
        Some(out)
    }
}

/// Relays until the sandbox exits; terminals attached through `hub` share the command's
/// terminal with this one.
pub fn relay(
    instance: &mut dyn Instance,
    sigs: &SignalPipe,
    hub: Option<&AttachHub>,
) -> io::Result<()> {
    let pty = instance.take_pty();
    match pty {
        Some(master) => relay_pty(instance, sigs, master, hub),
        None => loop {
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
        },
    }
}

fn relay_pty(
    instance: &mut dyn Instance,
    sigs: &SignalPipe,
    master: OwnedFd,
    hub: Option<&AttachHub>,
) -> io::Result<()> {
    let mut clients: Vec<Client> = Vec::new();
    let stdin = rustix::stdio::stdin();
    let stdout = rustix::stdio::stdout();
    // The command's terminal when it is here (a pty master); through `instance` otherwise.
    let mut terminal = paddock_wire::TerminalSize::new(master.as_fd())?;
    if let Ok(size) = tcgetwinsize(stdin) {
        terminal.set(size.ws_row, size.ws_col);
        instance.resize(size.ws_row, size.ws_col);
    }
    let _raw = RawMode::enter(stdin).ok();
    let mut stdin_open = true;
    let mut master_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let exit_fd = instance.exit_fd();
        let mut fds = vec![
            PollFd::new(&sigs.read, PollFlags::IN),
            PollFd::new(&exit_fd, PollFlags::IN),
        ];
        if master_open {
            fds.push(PollFd::new(&master, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        let hub_at = fds.len();
        if let Some(h) = hub {
            fds.push(PollFd::new(&h.wake_r, PollFlags::IN));
        }
        let clients_at = fds.len();
        for c in &clients {
            fds.push(PollFd::new(&c.conn, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        // Signals first: a resize must land before the keystrokes that follow it.
        for sig in sigs.drain() {
            if sig == libc::SIGWINCH {
                if let Ok(size) = tcgetwinsize(stdin) {
                    terminal.set(size.ws_row, size.ws_col);
                    instance.resize(size.ws_row, size.ws_col);
                }
            } else {
                let _ = instance.signal(sig);
            }
        }
        let mut i = 2;
        if master_open {
            if ready[i] {
                match rustix::io::read(&master, &mut buf) {
                    Ok(0) | Err(rustix::io::Errno::IO) => master_open = false,
                    Ok(n) => {
                        write_all(stdout, &buf[..n])?;
                        // A terminal that does not keep up is dropped, not waited for.
                        clients.retain_mut(|c| {
                            std::io::Write::write_all(&mut c.conn, &buf[..n]).is_ok()
                        });
                    }
                    Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            i += 1;
        }
        if stdin_open && ready[i] {
            match rustix::io::read(stdin, &mut buf) {
                Ok(0) => stdin_open = false,
                Ok(n) => write_all(master.as_fd(), &buf[..n])?,
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
        // Attached terminals: their keystrokes and sizes.
        let mut gone = Vec::new();
        for (k, c) in clients.iter_mut().enumerate() {
            if !ready.get(clients_at + k).copied().unwrap_or(false) {
                continue;
            }
            match c.read() {
                None => gone.push(k),
                Some(asked) => {
                    for a in asked {
                        match a {
                            Asked::Input(d) => write_all(master.as_fd(), &d)?,
                            Asked::Resize(rows, cols) => {
                                terminal.set(rows, cols);
                                instance.resize(rows, cols);
                            }
                        }
                    }
                }
            }
        }
        for k in gone.into_iter().rev() {
            clients.remove(k);
        }
        if let Some(h) = hub
            && ready.get(hub_at).copied().unwrap_or(false)
        {
            clients.extend(h.take());
        }
        if ready[1] || !master_open {
            // The sandbox is gone (or its terminal closed): flush what is left and stop.
            let _ = rustix::io::ioctl_fionbio(&master, true);
            while let Ok(n) = rustix::io::read(&master, &mut buf) {
                if n == 0 {
                    break;
                }
                write_all(stdout, &buf[..n])?;
                for c in &mut clients {
                    let _ = std::io::Write::write_all(&mut c.conn, &buf[..n]);
                }
            }
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

/// The client side of `paddock attach`: this terminal, raw, relayed to the sandbox's command
/// over `conn` (framed input and sizes out, output in). Ctrl-P Ctrl-Q detaches. `ready` runs
/// once the terminal is raw and its size sent: what is typed from then on reaches the command
/// unchanged.
pub fn attach_client(
    conn: std::os::unix::net::UnixStream,
    ready: impl FnOnce(),
) -> io::Result<AttachEnd> {
    let stdin = rustix::stdio::stdin();
    let stdout = rustix::stdio::stdout();
    let sigs = SignalPipe::new(&[libc::SIGWINCH])?;
    let send = |conn: &std::os::unix::net::UnixStream, frame: &[u8]| write_all(conn.as_fd(), frame);
    let resize = |conn: &std::os::unix::net::UnixStream| -> io::Result<()> {
        if let Ok(size) = tcgetwinsize(stdin) {
            let mut f = vec![ATTACH_RESIZE];
            f.extend_from_slice(&size.ws_row.to_be_bytes());
            f.extend_from_slice(&size.ws_col.to_be_bytes());
            send(conn, &f)?;
        }
        Ok(())
    };
    resize(&conn)?;
    let _raw = RawMode::enter(stdin).ok();
    ready();
    let mut buf = vec![0u8; 16 * 1024];
    let mut after_ctrl_p = false;
    let mut stdin_open = true;
    loop {
        let mut fds = vec![
            PollFd::new(&sigs.read, PollFlags::IN),
            PollFd::new(&conn, PollFlags::IN),
        ];
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        // Whatever poll says: a resize whose signal landed as poll returned for a keystroke
        // typed after it must still go first (its handler has run by now).
        if !sigs.drain().is_empty() {
            resize(&conn)?;
        }
        if ready[1] {
            match rustix::io::read(&conn, &mut buf) {
                Ok(0) => return Ok(AttachEnd::Ended),
                Ok(n) => write_all(stdout, &buf[..n])?,
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => return Ok(AttachEnd::Ended),
            }
        }
        if stdin_open && ready.get(2).copied().unwrap_or(false) {
            match rustix::io::read(stdin, &mut buf) {
                Ok(0) | Err(rustix::io::Errno::IO) => stdin_open = false,
                Ok(n) => {
                    let mut keys = Vec::with_capacity(n + 1);
                    for &k in &buf[..n] {
                        match (after_ctrl_p, k) {
                            (true, 0x11) => return Ok(AttachEnd::Detached),
                            (true, 0x10) => keys.push(0x10),
                            (true, other) => {
                                keys.push(0x10);
                                keys.push(other);
                            }
                            (false, 0x10) => {}
                            (false, other) => keys.push(other),
                        }
                        after_ctrl_p = k == 0x10 && !after_ctrl_p;
                    }
                    for chunk in keys.chunks(u16::MAX as usize) {
                        let mut f = vec![ATTACH_INPUT];
                        f.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                        f.extend_from_slice(chunk);
                        send(&conn, &f)?;
                    }
                }
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
    }
}
