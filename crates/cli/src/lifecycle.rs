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
    let name = parse_name(name)?;
    let change = paddock_engine::manage::LimitsChange {
        cpus: cpus.map(str::to_owned),
        memory: memory.map(str::to_owned),
        pids: pids.map(str::to_owned),
        disk: disk.map(str::to_owned),
    };
    // The flags' names in what a bad value is told with.
    let new = change.parse().map_err(|e| match e {
        paddock_engine::EngineError::Invalid(m) if m.starts_with("nothing to change") => {
            usage("nothing to change: give --cpus, --memory, --pids or --disk")
        }
        paddock_engine::EngineError::Invalid(m) => usage(format!("--{m}")),
        e => e.into(),
    })?;
    let (dirs, _) = open()?;
    let updated = crate::commands::engine(&dirs)?.update(&name, &new)?;
    if !updated.live {
        println!("{name}: the new limits apply at its next start");
    } else if updated.later.is_empty() {
        println!("{name}: updated (in effect now)");
    } else {
        println!(
            "{name}: updated; applies at its next start for: {}",
            updated.later.join("; ")
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
    let (dirs, _) = open()?;
    let engine = crate::commands::engine(&dirs)?;
    let mut ports = engine.ports(&name)?;
    if !unpublish.is_empty() {
        ports = engine.unpublish(&name, unpublish)?;
    }
    if !maps.is_empty() {
        ports = engine.publish(&name, &maps)?;
    }
    for m in &ports {
        println!("{m}{}", if m.auto { " (agent preset)" } else { "" });
    }
    Ok(0)
}
