//! `paddock-jail`: the privileged setup of one sandbox, started only by Paddock's ns and gvisor
//! backends; not meant to be run by hand.
//!
//! Runs single-threaded, with the configuration on descriptor 3 and the report channel on
//! descriptor 4. Three modes:
//!
//! - (none) an ns sandbox, in this order (every step fails closed with the layer's name):
//!   1. outer process (host root): own session, die with the supervisor, unshare
//!      net/ipc/uts/pid namespaces, bring up loopback, set the host name, wait until the
//!      supervisor has moved it into the sandbox's cgroups and sent the mounts it made meanwhile
//!      (see `paddock_confine::jail::premount`; a cgroup v1 move waits for an RCU grace period,
//!      about 10 ms, on hosts without `favordynmods`), unshare the cgroup namespace (rooted at
//!      the sandbox's cgroup), fork pid 1;
//!   2. pid 1 (still host root, now in the new namespaces): unshare the mount namespace, attach
//!      the root and shared folders the host made and build the rest of the tree, pivot into
//!      it, enter a new user namespace (the outer process writes its maps: sandbox 0-65535 to
//!      the unprivileged host range), become its root, turn non-dumpable, apply Landlock and
//!      seccomp, drop capabilities, then run the in-sandbox helper (`paddock_init`).
//!
//!   Because the mount, network and other namespaces are owned by the host's user namespace,
//!   the sandbox's root has no capability over them: it cannot mount, unmount or reconfigure
//!   the network even if seccomp were absent.
//!
//!   In user mode (an ordinary user runs Paddock) the outer process first makes a user
//!   namespace of its own with a mount namespace, which the supervisor maps with
//!   `newuidmap`/`newgidmap` (the user is the sandbox's agent, the user's subordinate ids the
//!   rest), becomes its root and goes on as above: every namespace then belongs to that outer
//!   user namespace, pid 1's user namespace is nested in it (mapped one to one), and the
//!   sandbox's root has no capability over the namespaces as before. The jail mounts the root
//!   and shared folders itself (no idmapping: the user's files are the agent's) and binds the
//!   host's harmless device nodes instead of making them.
//! - `enter`: one more command in a running ns sandbox;
//! - `runsc`: the gvisor backend's host-side setup, then it becomes runsc.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::unistd::{ForkResult, fork};
use paddock_confine::config::{EnterConfig, JailConfig, RunscConfig};
use paddock_confine::jail::{Failure, Layer, MAX_PREMADE, mounts, sys, userns};
use paddock_init::{Target, forward_and_wait};
use paddock_wire::{EXIT_SETUP_FAILED, Report, send_report};
use rustix::thread::{UnshareFlags, unshare_unsafe};

fn main() {
    std::process::exit(run())
}

/// Returns the exit status.
fn run() -> i32 {
    match std::env::args().nth(1).as_deref() {
        // The gVisor backend's host-side setup (see `runsc_setup`).
        Some("runsc") => {
            return entry(|cfg: RunscConfig, channel| match runsc_setup(&cfg, channel.as_fd())? {});
        }
        // One more command in a running sandbox (see `enter`).
        Some("enter") => return entry(|cfg: EnterConfig, channel| match enter(&cfg, channel)? {}),
        // User mode, run again as root of the sandbox's outer user namespace (see
        // `reexec_mapped`).
        Some(MAPPED) => return entry(|cfg: JailConfig, channel| outer(cfg, channel, true)),
        Some("giveback") => {
            let folders: Vec<String> = std::env::args().skip(2).collect();
            return give_back_mapped(&folders);
        }
        _ => {}
    }
    entry(|cfg: JailConfig, channel| outer(cfg, channel, false))
}

/// The mode of a user mode jail that runs again inside its user namespace.
const MAPPED: &str = "mapped";
const MAPPED_ARG: &std::ffi::CStr = c"mapped";

/// Takes the configuration (descriptor 3) and the report channel (descriptor 4), runs `setup`
/// with them, and reports its failure, with its layer, on the channel.
fn entry<C: serde::de::DeserializeOwned>(
    setup: impl FnOnce(C, OwnedFd) -> Result<i32, Failure>,
) -> i32 {
    // SAFETY: the host side passes the configuration pipe as descriptor 3 and the report
    // channel as descriptor 4; nothing else in this process owns them.
    let (cfg_fd, channel) = unsafe { (OwnedFd::from_raw_fd(3), OwnedFd::from_raw_fd(4)) };
    for fd in [&cfg_fd, &channel] {
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
    }
    let mut text = String::new();
    let result = std::fs::File::from(cfg_fd)
        .read_to_string(&mut text)
        .layer("config", "cannot read the configuration")
        .and_then(|_| serde_json::from_str::<C>(&text).layer("config", "malformed configuration"))
        .and_then(|cfg| setup(cfg, channel.try_clone().layer("config", "dup")?));
    match result {
        Ok(code) => code,
        Err(f) => {
            let _ = send_report(
                channel.as_fd(),
                &Report::SetupFailed {
                    layer: f.layer.into(),
                    message: f.message,
                },
            );
            EXIT_SETUP_FAILED
        }
    }
}

/// Waits for the supervisor's word that this process is in the sandbox's cgroups (one byte: 1
/// joined, anything else failed; whatever starts after it starts inside them), and takes the
/// descriptors that came with it.
fn wait_for_cgroups(channel: std::os::fd::BorrowedFd<'_>) -> Result<Vec<OwnedFd>, Failure> {
    let mut ack = [0u8; 1];
    match paddock_wire::recv_with_many_fds(channel, &mut ack, MAX_PREMADE) {
        Ok(Some((1, fds))) if ack[0] == 1 => Ok(fds),
        _ => Err(Failure::new(
            "cgroup",
            "the supervisor could not move the sandbox into its cgroups",
        )),
    }
}

/// Splits what [`premount`] made, as received.
fn split_premade(mut fds: Vec<OwnedFd>) -> Result<mounts::Premade, Failure> {
    if fds.is_empty() {
        return Err(Failure::new("mounts", "the host sent no sandbox root"));
    }
    let root = fds.remove(0);
    Ok(mounts::Premade { root, binds: fds })
}

/// `paddock-jail runsc`: the gVisor backend's host-side setup. In a new private mount
/// namespace it mounts the sandbox's overlay root and its idmapped shared folders where the OCI
/// bundle names them, waits to be moved into the sandbox's cgroups, says it is ready, and
/// becomes runsc, which serves those mounts to the sandbox and dies with the supervisor.
fn runsc_setup(cfg: &RunscConfig, channel: std::os::fd::BorrowedFd<'_>) -> Result<Never, Failure> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .layer("init", "cannot tie the sandbox to its supervisor")?;
    if rustix::process::getppid().is_none_or(|p| p.as_raw_nonzero().get() == 1) {
        return Err(Failure::new("init", "the supervisor exited during setup"));
    }
    let idmaps = if cfg.user_namespace {
        // The user's files are the agent's already; the mount namespace comes with the user
        // namespace, made and mapped after the supervisor moved this process into the
        // sandbox's cgroups (as it must, while this process still has the user's ids).
        own_user_namespace(channel)?;
        drop(wait_for_cgroups(channel)?);
        Default::default()
    } else {
        let idmaps = userns::idmap_namespaces(&cfg.binds, cfg.id_base)?;
        drop(wait_for_cgroups(channel)?);
        // SAFETY: single-threaded; the new mount namespace affects only this process and runsc.
        unsafe { unshare_unsafe(UnshareFlags::NEWNS) }
            .layer("mounts", "cannot create the mount namespace")?;
        idmaps
    };
    mounts::build_runsc(cfg, &idmaps)?;
    drop(idmaps);
    let program = cfg
        .exec
        .first()
        .ok_or_else(|| Failure::new("config", "no program to run"))?;
    let argv: Vec<std::ffi::CString> = cfg
        .exec
        .iter()
        .map(|a| std::ffi::CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .layer("config", "an argument contains NUL")?;
    let path = std::ffi::CString::new(program.as_bytes()).layer("config", "bad program path")?;
    send_report(
        channel,
        &Report::Ready {
            pid: std::process::id() as i32,
        },
    )
    .layer("init", "cannot reach the supervisor")?;
    let err = nix::unistd::execv(&path, &argv).err();
    Err(Failure::new(
        "gvisor",
        format!(
            "cannot run {program}: {}",
            err.map(|e| e.to_string()).unwrap_or_default()
        ),
    ))
}

fn outer(cfg: JailConfig, channel: OwnedFd, mapped: bool) -> Result<i32, Failure> {
    // Nothing of the sandbox runs yet: what changes in its folders from now on is its doing.
    let started = paddock_confine::jail::giveback::start_time();
    rustix::process::umask(rustix::fs::Mode::empty());
    let _ = rustix::process::setsid();
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .layer("init", "cannot tie the sandbox to its supervisor")?;
    if rustix::process::getppid().is_none_or(|p| p.as_raw_nonzero().get() == 1) {
        return Err(Failure::new("init", "the supervisor exited during setup"));
    }
    if cfg.user_namespace && !mapped {
        own_user_namespace(channel.as_fd())?;
        match reexec_mapped(&cfg, channel.as_fd())? {}
    }
    // The mount namespace is pid 1's alone (made after the fork): pivot_root moves the root of
    // every process in a mount namespace, and this outer process must keep the host's /proc to
    // write pid 1's id maps.
    let flags =
        UnshareFlags::NEWNET | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS | UnshareFlags::NEWPID;
    // SAFETY: single-threaded; the new namespaces only affect this process and its children.
    unsafe { unshare_unsafe(flags) }.layer("namespaces", "cannot create namespaces")?;
    sys::loopback_up().layer("network", "cannot bring up loopback")?;
    if cfg.egress {
        // Bound here, inside the sandbox's network namespace, before any sandbox process runs:
        // the port is ours, and the host accepts the sandbox's proxy connections from it.
        let listener = std::net::TcpListener::bind(("127.0.0.1", paddock_core::PROXY_PORT)).layer(
            "network",
            "cannot listen on 127.0.0.1:3128 for the egress proxy",
        )?;
        paddock_wire::send_fd(channel.as_fd(), &Report::EgressListener, listener.as_fd()).layer(
            "network",
            "cannot hand the proxy listener to the supervisor",
        )?;
    }
    rustix::system::sethostname(cfg.hostname.as_bytes())
        .layer("namespaces", "cannot set the host name")?;

    let execs = cfg
        .exec_socket
        .as_deref()
        .and_then(|p| exec_listener(p, cfg.user_namespace));
    // Pid 1 must start inside the cgroups.
    let premade = wait_for_cgroups(channel.as_fd())?;
    let premade = if cfg.user_namespace {
        // Only this user namespace may mount here: the jail makes what the host makes in
        // root mode.
        drop(premade);
        paddock_confine::jail::premount(&cfg)?
    } else {
        premade
    };
    let premade = split_premade(premade)?;
    // The cgroup namespace is made only now, so its root is the sandbox's own cgroup.
    // SAFETY: single-threaded; the new namespace only affects this process and its children.
    unsafe { unshare_unsafe(UnshareFlags::NEWCGROUP) }
        .layer("namespaces", "cannot create the cgroup namespace")?;
    let (from_parent_r, mut to_child_w) = pipe()?;
    let (mut from_child_r, to_parent_w) = pipe()?;
    if cfg.user_namespace {
        // Taking this user namespace's root made the jail non-dumpable, and pid 1 would
        // inherit that: its /proc files would then belong to the host's root, and this process
        // could not write its id maps. Pid 1 turns non-dumpable itself once mapped; this
        // process again right after.
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
            .layer("user namespace", "cannot prepare pid 1's id maps")?;
    }
    // The forwarded signals are blocked before the fork, so that pid 1 starts with them
    // blocked: a signal forwarded before its init has set itself up stays pending (the kernel
    // drops a signal with the default action sent to a namespace's init, but never a blocked
    // one), and init passes it on. The command itself starts with an empty mask.
    let _ = paddock_init::block_forwarded();
    // SAFETY: single-threaded, so the child may run arbitrary code.
    match unsafe { fork() }.layer("namespaces", "cannot fork pid 1")? {
        ForkResult::Child => {
            drop(to_child_w);
            drop(from_child_r);
            let code = match pid1(
                &cfg,
                channel.try_clone(),
                premade,
                from_parent_r,
                to_parent_w,
                execs,
            ) {
                Ok(never) => match never {},
                Err(f) => {
                    let _ = send_report(
                        channel.as_fd(),
                        &Report::SetupFailed {
                            layer: f.layer.into(),
                            message: f.message,
                        },
                    );
                    EXIT_SETUP_FAILED
                }
            };
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            drop(from_parent_r);
            drop(to_parent_w);
            drop(premade);
            drop(channel);
            drop(execs);
            let mut b = [0u8; 1];
            if matches!(from_child_r.read(&mut b), Ok(1)) {
                let done = userns::write_maps(child, cfg.id_base, cfg.user_namespace);
                if sys::set_non_dumpable().is_err() {
                    let _ = child_kill(child);
                    return Ok(EXIT_SETUP_FAILED);
                }
                let reply = match done {
                    Ok(()) => child.as_raw().to_le_bytes(),
                    Err(e) => {
                        eprintln!("paddock-jail: writing the id maps failed: {e}");
                        [0; 4]
                    }
                };
                let _ = to_child_w.write_all(&reply);
            }
            drop(to_child_w);
            let code = forward_and_wait(child, Target::Process, false);
            // Everything in the sandbox is gone with its pid 1: nothing writes the folders now.
            give_back_folders(&cfg, started);
            Ok(code)
        }
    }
}

/// User mode: makes the user namespace that will own every other namespace of the sandbox
/// (with a mount namespace of its own, where the jail mounts the sandbox's root), has the host
/// map it (the user is the agent, the subordinate ids the rest) and becomes its root. The
/// sandbox itself runs one user namespace further in, as in root mode, so its root has no
/// capability over the namespaces made here.
fn own_user_namespace(channel: std::os::fd::BorrowedFd<'_>) -> Result<(), Failure> {
    const LAYER: &str = "user namespace";
    // SAFETY: single-threaded; the new namespaces only affect this process and its children.
    unsafe { unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) }
        .layer(LAYER, "cannot create the user namespace")?;
    send_report(channel, &Report::UserNamespace).layer(LAYER, "cannot reach the supervisor")?;
    let mut done = [0u8; 1];
    match rustix::net::recv(channel, &mut done, rustix::net::RecvFlags::empty()) {
        Ok((1, _)) if done[0] == 1 => {}
        _ => {
            return Err(Failure::new(
                LAYER,
                "the supervisor could not map the user namespace's ids",
            ));
        }
    }
    become_root_inside()?;
    // Changing ids cleared the parent-death signal.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .layer("init", "cannot tie the sandbox to its supervisor")
}

/// User mode: runs this binary again, now that it is root of the sandbox's outer user
/// namespace, with the same configuration (in a memfd as descriptor 3), report channel
/// (descriptor 4) and streams. A process's memory belongs to the user namespace it last
/// executed in: after this, the sandbox's pid 1 (forked from here) belongs to the outer user
/// namespace instead of the host's, so that `paddock exec`, which enters that namespace as its
/// root, may enter pid 1's namespaces while the sandbox itself (one namespace further in)
/// still may not reach pid 1.
fn reexec_mapped(cfg: &JailConfig, channel: std::os::fd::BorrowedFd<'_>) -> Result<Never, Failure> {
    const LAYER: &str = "user namespace";
    let json = serde_json::to_vec(cfg).layer("config", "cannot encode the configuration")?;
    let memfd = rustix::fs::memfd_create("paddock-jail-config", rustix::fs::MemfdFlags::CLOEXEC)
        .layer(LAYER, "memfd_create")?;
    let mut file = std::fs::File::from(memfd);
    file.write_all(&json)
        .layer(LAYER, "cannot pass the configuration on")?;
    rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(0)).layer(LAYER, "lseek")?;
    // dup2 leaves the new descriptors open across exec. Descriptors 3 and 4 are this
    // process's own copies of the configuration pipe (read and dropped) and of the channel.
    for (from, to) in [(file.as_raw_fd(), 3), (channel.as_raw_fd(), 4)] {
        // SAFETY: dup2 on descriptors this process holds; whatever was at `to` is replaced.
        if unsafe { libc::dup2(from, to) } != to {
            return Err(Failure::new(
                LAYER,
                format!("dup2: {}", std::io::Error::last_os_error()),
            ));
        }
    }
    let exe = c"/proc/self/exe";
    let argv = [c"paddock-jail", MAPPED_ARG];
    let env: [&std::ffi::CStr; 0] = [];
    let err = nix::unistd::execve(exe, &argv, &env).err();
    Err(Failure::new(
        LAYER,
        format!(
            "cannot run the jail again in its user namespace: {}",
            err.map(|e| e.to_string()).unwrap_or_default()
        ),
    ))
}

/// Gives the owner of each shared read-write folder the files the sandbox made there as
/// another user than the agent (with sudo, say): in root mode those of the sandbox's host id
/// range, in user mode (where this process is root of the outer user namespace) those of any
/// sandbox id but the agent's, which is the user already.
fn give_back_folders(cfg: &JailConfig, since: i128) {
    use paddock_confine::jail::giveback::{GiveBack, give_back};
    for b in &cfg.binds {
        let Some(at) = b.give_back_at(cfg.user_namespace) else {
            continue;
        };
        let how = GiveBack::for_sandbox(
            cfg.user_namespace,
            cfg.id_base,
            (b.owner_uid, b.owner_gid),
            since,
        );
        let _ = give_back(&at, how);
    }
}

/// `paddock-jail giveback SINCE FOLDER…`: user mode, as root of a user namespace with the user's
/// map (see `paddock_confine::user::give_back`): gives the user what a gVisor sandbox left in
/// its shared folders as another id than the agent.
fn give_back_mapped(folders: &[String]) -> i32 {
    use paddock_confine::jail::giveback::{GiveBack, give_back};
    let Some(since) = folders.first().and_then(|s| s.parse::<i128>().ok()) else {
        return 2;
    };
    let how = GiveBack::for_sandbox(true, 0, (0, 0), since);
    let mut failed = 0;
    for f in &folders[1..] {
        if give_back(std::path::Path::new(f), how).is_err() {
            failed += 1;
        }
    }
    i32::from(failed > 0)
}

fn child_kill(child: nix::unistd::Pid) -> nix::Result<()> {
    nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL)
}

fn pipe() -> Result<(std::fs::File, std::fs::File), Failure> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).layer("init", "pipe")?;
    Ok((r.into(), w.into()))
}

enum Never {}

fn pid1(
    cfg: &JailConfig,
    channel: std::io::Result<OwnedFd>,
    premade: mounts::Premade,
    mut from_parent: std::fs::File,
    mut to_parent: std::fs::File,
    execs: Option<OwnedFd>,
) -> Result<Never, Failure> {
    let channel = channel.layer("init", "dup")?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .layer("init", "cannot tie pid 1 to the jail")?;
    // SAFETY: single-threaded; the new mount namespace affects only this process.
    unsafe { unshare_unsafe(UnshareFlags::NEWNS) }
        .layer("mounts", "cannot create the mount namespace")?;
    mounts::build(cfg, premade)?;

    // SAFETY: single-threaded; entering a new user namespace affects only this process.
    unsafe { unshare_unsafe(UnshareFlags::NEWUSER) }
        .layer("user namespace", "cannot create the user namespace")?;
    to_parent
        .write_all(&[1])
        .layer("user namespace", "cannot reach the jail")?;
    drop(to_parent);
    let mut pid = [0u8; 4];
    from_parent
        .read_exact(&mut pid)
        .layer("user namespace", "the jail did not map the user namespace")?;
    let host_pid = i32::from_le_bytes(pid);
    if host_pid == 0 {
        return Err(Failure::new(
            "user namespace",
            "writing uid_map/gid_map failed",
        ));
    }
    drop(from_parent);
    become_root_inside()?;
    // Changing ids cleared the parent-death signal set above: arm it again, or pid 1 (and the
    // whole sandbox) would outlive a jail killed with its supervisor.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .layer("init", "cannot tie pid 1 to the jail")?;
    sys::set_non_dumpable().layer("init", "cannot make pid 1 non-dumpable")?;
    confine(&cfg.command)?;
    paddock_init::run(&cfg.command, channel, host_pid, execs)
}

/// The sandbox's exec socket at `path` (host side, before pid 1 exists), listening, for pid 1
/// to serve: only the user may connect (mode 0600, the user's, in the user's private state
/// directory; in user mode this process is root of the outer user namespace, a subordinate id
/// on the host, so the socket is given to the agent's id, which is the user). `None` when it
/// cannot be made (a path too long for a socket, say): commands then join the sandbox through
/// `paddock-jail enter`, which needs no socket.
fn exec_listener(path: &Path, user_mode: bool) -> Option<OwnedFd> {
    use rustix::net::{
        AddressFamily, SocketAddrUnix, SocketFlags, SocketType, bind, listen, socket_with,
    };
    let addr = SocketAddrUnix::new(path).ok()?;
    let _ = std::fs::remove_file(path);
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .ok()?;
    bind(&fd, &addr).ok()?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o600)).ok()?;
    if user_mode {
        let agent = paddock_core::AGENT_ID;
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw(agent)),
            Some(rustix::fs::Gid::from_raw(agent)),
        )
        .ok()?;
    }
    listen(&fd, 256).ok()?;
    Some(fd)
}

/// Takes the ids 0 of the sandbox's user namespace (host: the sandbox's unprivileged root).
fn become_root_inside() -> Result<(), Failure> {
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).layer("user namespace", "setresgid")?;
    nix::unistd::setgroups(&[]).layer("user namespace", "setgroups")?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid).layer("user namespace", "setresuid")
}

/// The layers every process of the sandbox is under: umask, Landlock, seccomp, capabilities
/// and (when asked) no_new_privs.
fn confine(command: &paddock_wire::Command) -> Result<(), Failure> {
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o022));
    match paddock_confine::landlock::restrict_to_root() {
        Ok(_) => {}
        Err(e) if paddock_confine::landlock::kernel_abi() == 0 => drop(e),
        Err(e) => return Err(Failure::new("landlock", e.to_string())),
    }
    paddock_confine::seccomp::install().layer("seccomp", "cannot install the filter")?;
    paddock_confine::capabilities::restrict().layer("capabilities", "cannot drop capabilities")?;
    if command.no_new_privs {
        rustix::thread::set_no_new_privs(true).layer("no_new_privs", "prctl")?;
    }
    Ok(())
}

/// `paddock-jail enter`: one more command in a running sandbox, the way `docker exec` works
/// but with nothing of the host carried in. Non-dumpable first (so nothing inside can reach
/// this process through /proc), moved into the sandbox's cgroups by the supervisor, then into
/// pid 1's namespaces (those owned by the host's user namespace, then the sandbox's own user
/// namespace, as its root), under the same layers as pid 1; the command is forked into the
/// sandbox's pid namespace and this process relays its signals and exit status.
fn enter(cfg: &EnterConfig, channel: OwnedFd) -> Result<Never, Failure> {
    // SAFETY: the host side passes a pidfd of the sandbox's pid 1 as descriptor 5; nothing
    // else in this process owns it.
    let target = unsafe { OwnedFd::from_raw_fd(5) };
    let _ = rustix::io::fcntl_setfd(&target, rustix::io::FdFlags::CLOEXEC);
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .layer("init", "cannot tie the command to its supervisor")?;
    if rustix::process::getppid().is_none_or(|p| p.as_raw_nonzero().get() == 1) {
        return Err(Failure::new("init", "the supervisor exited during setup"));
    }
    sys::set_non_dumpable().layer("init", "cannot turn non-dumpable")?;
    drop(wait_for_cgroups(channel.as_fd())?);
    let setns_to = |fd: std::os::fd::BorrowedFd<'_>, flags: libc::c_int, what: &str| {
        // SAFETY: setns has no memory effects; the process is single-threaded, as entering a
        // user namespace requires.
        if unsafe { libc::setns(fd.as_raw_fd(), flags) } != 0 {
            return Err(Failure::new(
                "namespaces",
                format!(
                    "cannot enter the sandbox's {what}: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        Ok(())
    };
    if cfg.user_namespace {
        // SAFETY: the host side passes the sandbox's outer user namespace as descriptor 6;
        // nothing else in this process owns it.
        let outer = unsafe { OwnedFd::from_raw_fd(6) };
        setns_to(outer.as_fd(), libc::CLONE_NEWUSER, "user namespace")?;
        // Its root owns the sandbox's own user namespace, entered below.
        become_root_inside()?;
    }
    let setns = |flags: libc::c_int, what: &str| setns_to(target.as_fd(), flags, what);
    setns(
        libc::CLONE_NEWNS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWCGROUP,
        "namespaces",
    )?;
    setns(libc::CLONE_NEWUSER, "user namespace")?;
    become_root_inside()?;
    // Changing ids reset these two.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .layer("init", "cannot tie the command to its supervisor")?;
    sys::set_non_dumpable().layer("init", "cannot turn non-dumpable")?;
    rustix::process::chdir("/").layer("mounts", "cannot enter the sandbox's root")?;
    confine(&cfg.command)?;
    paddock_init::run(&cfg.command, channel, std::process::id() as i32, None)
}
