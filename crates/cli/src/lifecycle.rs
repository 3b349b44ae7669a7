//! Sandboxes in the background: `start`, `run -d`, `stop`, `logs`, and the
//! detached supervisor they start (`paddock __supervise NAME`).
//!
//! A background sandbox is one supervisor process of its own (a new session, no terminal, its
//! output and the command's in `sandboxes/NAME/output.log`), holding the sandbox's lock while
//! it runs. The lock is the truth about "running": a supervisor killed with SIGKILL releases it,
//! and its sandbox dies with it (every backend ties the sandbox to the supervisor's life).

use std::io::{IsTerminal, Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use paddock_core::{Dirs, Launch, Network, SandboxLock, SandboxName, SandboxState, Stdio};
use paddock_store::Store;
use serde::{Deserialize, Serialize};

use crate::commands::{open, parse_name, record};
use crate::error::usage;

/// The command of a background sandbox started without one: it only keeps the sandbox alive
/// for `exec` and `shell`.
pub const KEEP_ALIVE: &[&str] = &["sleep", "infinity"];

/// What a background start runs (`sandboxes/NAME/main.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Main {
    /// The command.
    pub argv: Vec<String>,
    /// Remove the sandbox when it ends.
    #[serde(default)]
    pub rm: bool,
    /// Give the command a terminal (`paddock attach` reaches it).
    #[serde(default)]
    pub tty: bool,
    /// Where the command starts, when not in the workspace (a subdirectory of the git work
    /// tree whose root is the workspace).
    #[serde(default)]
    pub cwd: Option<String>,
}

fn main_file(dirs: &Dirs, name: &SandboxName) -> PathBuf {
    dirs.sandbox(name).join("main.json")
}

pub(crate) fn log_file(dirs: &Dirs, name: &SandboxName) -> PathBuf {
    dirs.sandbox(name).join("output.log")
}

/// Records what a background start of `name` runs.
pub fn write_main(dirs: &Dirs, name: &SandboxName, main: &Main) -> Result<()> {
    let dir = dirs.sandbox(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = main_file(dirs, name);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(main)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

pub(crate) fn read_main(dirs: &Dirs, name: &SandboxName) -> Main {
    std::fs::read(main_file(dirs, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| Main {
            argv: KEEP_ALIVE.iter().map(|s| s.to_string()).collect(),
            rm: false,
            tty: false,
            cwd: None,
        })
}

/// Whether a supervisor holds the sandbox's lock (the truth about "running").
pub fn running(dirs: &Dirs, name: &SandboxName) -> bool {
    SandboxLock::is_held(&dirs.sandbox(name).join("lock"))
}

/// Starts the supervisor of `name` in the background and waits until its sandbox runs.
pub fn start_detached(dirs: &Dirs, name: &SandboxName) -> Result<()> {
    if running(dirs, name) {
        return Err(usage(format!("sandbox {name} is already running")));
    }
    let path = log_file(dirs, name);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let offset = log.seek(std::io::SeekFrom::End(0)).unwrap_or(0);
    let _ = writeln!(log, "--- paddock start {name}");
    let exe = std::env::current_exe().context("cannot find the paddock executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__supervise")
        .arg(name.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the child execs right after. A session of its own:
    // closing this terminal does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the supervisor")?;
    let socket = dirs.control_socket(name);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Some(status) = child.try_wait()? {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&path) {
                let _ = f.seek(std::io::SeekFrom::Start(offset));
                let _ = f.read_to_string(&mut text);
            }
            anyhow::bail!(
                "sandbox {name} did not start ({status}):\n{}",
                text.lines()
                    .filter(|l| !l.starts_with("--- "))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let up = paddock_supervisor::control::Client::new(&socket, name.as_str())
            .status()
            .is_ok_and(|s| s.sandbox_pid > 0);
        if up {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "sandbox {name} is still starting after 15 minutes; `paddock logs {name}` shows what it does"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Parses `names` and checks that each is a sandbox, before anything is done to any of them.
fn known(store: &Store, names: &[String]) -> Result<Vec<SandboxName>> {
    let names: Vec<SandboxName> = names.iter().map(|n| parse_name(n)).collect::<Result<_>>()?;
    for name in &names {
        record(store, name)?;
    }
    Ok(names)
}

/// `paddock start NAME…`.
pub fn start_all(names: &[String]) -> Result<i32> {
    let (dirs, store) = open()?;
    let names = known(&store, names)?;
    for name in &names {
        if running(&dirs, name) {
            println!("{name} is already running");
            continue;
        }
        start_detached(&dirs, name)?;
        println!("{name}");
    }
    Ok(0)
}

/// The detached supervisor: runs the sandbox's background command until it ends or is stopped.
pub fn supervise(name: &str) -> Result<i32> {
    let name = parse_name(name)?;
    let (dirs, store) = open()?;
    let rec = record(&store, &name)?;
    let main = read_main(&dirs, &name);
    let spec = paddock_core::SandboxSpec {
        discard_layer: main.rm,
        ..rec.spec
    };
    let (image, rootfs) = crate::commands::ensure_image(&dirs, &spec.image)?;
    let (backend, _) = paddock_supervisor::select(&spec.backend)?;
    let uid = spec.user.uid();
    let launch = Launch {
        argv: main.argv.clone(),
        env: paddock_supervisor::environment(
            std::env::vars(),
            &spec.env,
            uid,
            main.tty,
            name.as_str(),
            spec.network == Network::Proxy,
        ),
        cwd: main
            .cwd
            .clone()
            .unwrap_or_else(|| spec.workspace.to_string()),
        uid,
        stdio: if main.tty { Stdio::Pty } else { Stdio::Inherit },
    };
    eprintln!(
        "paddock: supervisor {} runs {name} on the {} backend: {}",
        std::process::id(),
        backend.id(),
        main.argv.join(" ")
    );
    let started = std::time::SystemTime::now();
    let result = paddock_supervisor::run_attached(
        &dirs,
        &store,
        &spec,
        backend.as_ref(),
        &image,
        rootfs,
        &launch,
        paddock_supervisor::catch_signals(main.tty)?,
    );
    crate::commands::report_trust(&dirs, &spec, started, true);
    let code = match &result {
        Ok(o) => {
            for d in &o.diagnostics {
                eprintln!("paddock: {d}");
            }
            eprintln!("paddock: {name} stopped (exit status {})", o.exit.status());
            o.exit.status()
        }
        Err(e) => {
            eprintln!("paddock: {name} failed: {e}");
            125
        }
    };
    if main.rm {
        crate::commands::remove_sandbox(&dirs, &store, &name)?;
    }
    result?;
    Ok(code)
}

/// Stops `name` if it runs: SIGTERM to its command, SIGKILL after `grace` seconds, and as a last
/// resort SIGKILL to its supervisor (the sandbox dies with it). Returns whether it was running.
pub fn stop(dirs: &Dirs, store: &Store, name: &SandboxName, grace: u64) -> Result<bool> {
    if !running(dirs, name) {
        return Ok(false);
    }
    let socket = dirs.control_socket(name);
    let wait = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while running(dirs, name) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    };
    let control = paddock_supervisor::control::Client::new(&socket, name.as_str());
    // A supervisor that is gone or does not answer: the waits below see the end either way.
    let signal = |sig: i32| {
        let _ = control.signal(sig);
    };
    signal(libc::SIGTERM);
    if wait(Duration::from_secs(grace)) {
        return Ok(true);
    }
    signal(libc::SIGKILL);
    // A VM powers off cleanly after its command ends, slowly under emulation.
    if wait(Duration::from_secs(60)) {
        return Ok(true);
    }
    if let Some(pid) = store.get(name)?.and_then(|r| r.supervisor_pid) {
        // SAFETY: kill has no memory effects; the pid is the supervisor recorded for the sandbox
        // whose lock is still held, so it is alive and ours.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    if !wait(Duration::from_secs(10)) {
        anyhow::bail!("sandbox {name} does not stop; its supervisor is stuck");
    }
    Ok(true)
}

/// `paddock attach NAME`.
pub fn attach(name: &str) -> Result<i32> {
    let name = parse_name(name)?;
    let (dirs, store) = open()?;
    record(&store, &name)?;
    if !running(&dirs, &name) {
        return Err(usage(format!(
            "sandbox {name} is not running (`paddock start {name}` starts it)"
        )));
    }
    if !read_main(&dirs, &name).tty {
        // Nothing to type into: follow what it writes from now on, as `docker attach` does.
        eprintln!(
            "paddock: {name}'s command has no terminal: following its output (input is not passed; Ctrl-C stops following, {name} goes on)"
        );
        copy_log(&dirs, &name, true, true)?;
        eprintln!("paddock: {name}'s command ended");
        return Ok(0);
    }
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return Err(usage("attach needs a terminal (stdin and stdout)"));
    }
    // Raw terminal by then: a line ends with \r\n.
    let ready = || eprint!("paddock: attached to {name}; Ctrl-P Ctrl-Q detaches\r\n");
    match paddock_supervisor::attach(&dirs, &name, ready) {
        Ok(paddock_supervisor::AttachEnd::Detached) => {
            eprintln!("\r\npaddock: detached; {name} goes on");
            Ok(0)
        }
        Ok(paddock_supervisor::AttachEnd::Ended) => {
            eprintln!("\r\npaddock: {name}'s command ended");
            Ok(0)
        }
        Err(paddock_supervisor::SupervisorError::Control(e)) => Err(usage(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// `paddock stop NAME…`.
pub fn stop_all(names: &[String], grace: u64) -> Result<i32> {
    let (dirs, store) = open()?;
    let names = known(&store, names)?;
    for name in &names {
        if stop(&dirs, &store, name, grace)? {
            println!("{name}");
        } else {
            println!("{name} is not running");
        }
    }
    Ok(0)
}

/// `paddock logs NAME [-f]`.
pub fn logs(name: &str, follow: bool) -> Result<i32> {
    let name = parse_name(name)?;
    let (dirs, store) = open()?;
    record(&store, &name)?;
    if !copy_log(&dirs, &name, false, follow)? {
        eprintln!("{name} has not run in the background yet (nothing logged)");
    }
    Ok(0)
}

/// Copies the output log of `name` to stdout (from its current end with `from_end`), and with
/// `follow` what comes while the sandbox runs. `false` when there is no log.
fn copy_log(dirs: &Dirs, name: &SandboxName, from_end: bool, follow: bool) -> Result<bool> {
    let path = log_file(dirs, name);
    let Ok(mut f) = std::fs::File::open(&path) else {
        return Ok(false);
    };
    if from_end {
        f.seek(std::io::SeekFrom::End(0))?;
    }
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            continue;
        }
        if !follow || !running(dirs, name) {
            break;
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    // What came between the last read and the end.
    std::io::copy(&mut f, &mut out)?;
    out.flush()?;
    Ok(true)
}

/// The state as it is: the lock decides between running and not.
pub fn state(dirs: &Dirs, rec: &paddock_core::SandboxRecord) -> SandboxState {
    match (running(dirs, &rec.spec.name), rec.state) {
        (true, _) => SandboxState::Running,
        (false, SandboxState::Created) => SandboxState::Created,
        (false, _) => SandboxState::Stopped,
    }
}

/// `paddock update NAME --cpus/--memory/--pids/--disk`.
pub fn update(
    name: &str,
    cpus: Option<&str>,
    memory: Option<&str>,
    pids: Option<&str>,
    disk: Option<&str>,
) -> Result<i32> {
    use paddock_policy::Limits;

    use crate::run::parse_flag;
    let name = parse_name(name)?;
    let new = Limits {
        cpus: parse_flag("--cpus", cpus, str::parse)?,
        memory: parse_flag("--memory", memory, Limits::parse_memory)?,
        pids: parse_flag("--pids", pids, Limits::parse_pids)?,
        disk: parse_flag("--disk", disk, Limits::parse_disk)?,
    };
    crate::run::check_host_limits(&new)?;
    if new == Limits::default() {
        return Err(usage(
            "nothing to change: give --cpus, --memory, --pids or --disk",
        ));
    }
    let (dirs, store) = open()?;
    let mut spec = record(&store, &name)?.spec;
    // The layer changes size only while nothing uses it: under the sandbox's lock, before the
    // new limits are recorded (a refusal changes nothing).
    let _lock = match new.disk {
        Some(size) => {
            let dir = dirs.sandbox(&name);
            let lock = crate::commands::lock(&dir, &name).map_err(|_| {
                usage(format!(
                    "--disk changes a stopped sandbox's layer; `paddock stop {name}` first"
                ))
            })?;
            let resized = match spec.backend.as_str() {
                "vm" => paddock_vm::resize_disk(&dir, size.0),
                _ => paddock_confine::rootfs::resize_layer(&dir, size.0),
            };
            match resized {
                Err(paddock_core::BackendError::Layer { message, .. }) => {
                    return Err(usage(format!("--disk: {message}")));
                }
                r => r?,
            }
            spec.limits.disk = Some(size);
            lock
        }
        None => None,
    };
    spec.limits.cpus = new.cpus.or(spec.limits.cpus);
    spec.limits.memory = new.memory.or(spec.limits.memory);
    spec.limits.pids = new.pids.or(spec.limits.pids);
    store.update_spec(&spec)?;
    // (With --disk the lock is ours, so it is stopped.)
    if new.disk.is_some() || !running(&dirs, &name) {
        println!("{name}: the new limits apply at its next start");
        return Ok(0);
    }
    let later = match spec.backend.as_str() {
        // gVisor's own process limit is fixed at start; its host cgroups change now.
        "ns" | "gvisor" => {
            let mut live = new.clone();
            if spec.backend == "gvisor" {
                live.pids = None;
            }
            let mut skipped = paddock_confine::cgroup::SandboxCgroups::update(
                &paddock_confine::cgroup::CgroupHost::detect(),
                name.as_str(),
                &live,
            );
            if spec.backend == "gvisor" && new.pids.is_some() {
                skipped.push("--pids: gVisor's process limit is set at start".into());
            }
            skipped
        }
        _ => vec!["the VM's memory, CPUs and process limit are set when it boots".into()],
    };
    if later.is_empty() {
        println!("{name}: updated (in effect now)");
    } else {
        println!(
            "{name}: updated; applies at its next start for: {}",
            later.join("; ")
        );
    }
    Ok(0)
}

/// `paddock ports NAME [--publish SPEC]… [--unpublish HOST_PORT]…`.
pub fn ports(name: &str, publish: &[String], unpublish: &[u16]) -> Result<i32> {
    let name = parse_name(name)?;
    let mut maps = Vec::new();
    for p in publish {
        maps.extend(paddock_policy::parse_ports(p).map_err(|e| usage(format!("--publish: {e}")))?);
    }
    let (dirs, store) = open()?;
    let mut spec = record(&store, &name)?.spec;
    let control =
        paddock_supervisor::control::Client::new(&dirs.control_socket(&name), name.as_str());
    let live = running(&dirs, &name);
    for host in unpublish {
        if !spec.ports.iter().any(|m| m.host == *host) {
            return Err(usage(format!("port {host} is not published for {name}")));
        }
        spec.ports.retain(|m| m.host != *host);
        if live {
            let _ = control.unpublish(*host);
        }
        store.update_spec(&spec)?;
    }
    for m in maps {
        if spec
            .ports
            .iter()
            .any(|have| have.host == m.host && have.addr == m.addr)
        {
            return Err(usage(format!(
                "port {}:{} is already published for {name}",
                m.addr, m.host
            )));
        }
        if live {
            use paddock_supervisor::control::ControlError;
            match control.publish(m) {
                Ok(()) => {}
                Err(ControlError::Refused { message, .. }) => return Err(usage(message)),
                Err(e) => anyhow::bail!("the supervisor of {name} did not answer: {e}"),
            }
        } else {
            crate::run::check_port_free(&m)?;
        }
        spec.ports.push(m);
        store.update_spec(&spec)?;
    }
    for m in &spec.ports {
        println!("{m}{}", if m.auto { " (agent preset)" } else { "" });
    }
    Ok(0)
}
