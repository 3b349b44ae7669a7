//! Sandboxes in the background: `start`, `run -d`, `stop`, `logs`, and the
//! detached supervisor they start (`paddock __supervise NAME`).
//!
//! A background sandbox is one supervisor process of its own (a new session, no terminal, its
//! output and the command's in `sandboxes/NAME/output.log`), holding the sandbox's lock while
//! it runs. The lock is the truth about "running": a supervisor killed with SIGKILL releases it,
//! and its sandbox dies with it (every backend ties the sandbox to the supervisor's life).

use std::io::{IsTerminal, Read, Seek, Write};
use std::time::Duration;

use anyhow::Result;
use paddock_core::{Dirs, SandboxName};
pub use paddock_engine::background::{Main, log_file, read_main};
pub use paddock_engine::sandboxes::{running, state};
use paddock_store::Store;

use crate::commands::{open, parse_name, record};
use crate::error::usage;

fn engine(dirs: &Dirs) -> Result<paddock_engine::Engine> {
    Ok(paddock_engine::Engine::at(dirs.clone())?)
}

/// Starts the supervisor of `name` in the background and waits until its sandbox runs.
pub fn start_detached(dirs: &Dirs, name: &SandboxName) -> Result<()> {
    Ok(engine(dirs)?.start_detached(name)?)
}

/// Stops `name` if it runs ([`paddock_engine::Engine::stop`]); whether it was running.
pub fn stop(dirs: &Dirs, _store: &Store, name: &SandboxName, grace: u64) -> Result<bool> {
    Ok(engine(dirs)?.stop(name, grace)?)
}

/// The detached supervisor (`paddock __supervise NAME`).
pub fn supervise(name: &str) -> Result<i32> {
    let name = parse_name(name)?;
    Ok(paddock_engine::Engine::open()?.supervise(&name, &crate::error::Terminal)?)
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

/// `paddock update NAME …`.
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
    let backend = paddock_supervisor::backend(&spec.backend)?;
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
            match backend.resize_disk(&dir, size.0) {
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
    let later = backend.update_limits(&name, &new);
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
