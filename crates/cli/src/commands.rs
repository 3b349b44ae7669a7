//! What each subcommand does.

use std::io::IsTerminal;

use anyhow::Result;
use clap::CommandFactory;
use paddock_core::{Dirs, ImageStore, SandboxName, SandboxState};
use paddock_image::BuildOptions;
use paddock_store::Store;

use crate::cli::{Cli, Cmd, ExecArgs, ImageCmd, SystemCmd};
use crate::error::usage;
use crate::run::{Mode, run};

pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Cmd::Run(args) => {
            let mode = if args.detach {
                Mode::Detached
            } else {
                Mode::Attached
            };
            run(args, mode)
        }
        Cmd::Create(args) => run(args, Mode::Create),
        Cmd::Agent(cmd) => crate::agent_cmd::agent(cmd),
        Cmd::Start { names } => crate::lifecycle::start_all(&names),
        Cmd::Stop { names, time } => crate::lifecycle::stop_all(&names, time),
        Cmd::Attach { name } => crate::lifecycle::attach(&name),
        Cmd::Logs { name, follow } => crate::lifecycle::logs(&name, follow),
        Cmd::Inspect { name, json } => crate::inspect::inspect(&name, json),
        Cmd::Update {
            name,
            cpus,
            memory,
            pids,
            disk,
        } => crate::lifecycle::update(
            &name,
            cpus.as_deref(),
            memory.as_deref(),
            pids.as_deref(),
            disk.as_deref(),
        ),
        Cmd::Ports {
            name,
            publish,
            unpublish,
        } => crate::lifecycle::ports(&name, &publish, &unpublish),
        Cmd::Prune {
            force,
            workspace,
            older_than,
        } => crate::prune::prune(
            &crate::prune::filter(workspace.as_deref(), older_than.as_deref())?,
            force,
        ),
        Cmd::Supervise { name } => crate::lifecycle::supervise(&name),
        Cmd::Image(cmd) => image(cmd),
        Cmd::Exec(args) => exec(args),
        Cmd::Shell { name, user } => exec(ExecArgs {
            name,
            interactive: true,
            tty: true,
            env: vec![],
            user,
            workdir: None,
            command: vec!["bash".into(), "-l".into()],
        }),
        Cmd::System(SystemCmd::Setup { user }) => system_setup(user.as_deref()),
        Cmd::Doctor { json, seccomp } => doctor(json, seccomp),
        Cmd::Ls { all, json } => ls(all, json),
        Cmd::Rm { names, force } => rm(&names, force),
        Cmd::Reset { name, force } => reset(&name, force),
        Cmd::Trust { name } => trust(&name),
        Cmd::Diff { name, commits, .. } if commits => crate::commits::diff_commits(&name),
        Cmd::Diff {
            name,
            paths,
            stat,
            name_only,
            json,
            ..
        } => crate::review::diff(
            &name,
            &paths,
            match (stat, name_only, json) {
                (true, _, _) => crate::review::Format::Stat,
                (_, true, _) => crate::review::Format::NameOnly,
                (_, _, true) => crate::review::Format::Json,
                _ => crate::review::Format::Patch,
            },
        ),
        Cmd::Apply {
            name,
            paths,
            force,
            merge,
            branch,
            commits,
        } => match branch {
            Some(b) if commits => crate::commits::apply_commits(&name, &b),
            Some(b) => crate::branch::apply_branch(&name, &paths, &b),
            None => crate::review::apply(&name, &paths, force, merge),
        },
        Cmd::Discard { name, paths, force } => crate::review::discard(&name, &paths, force),
        Cmd::Review { name } => crate::review::interactive(&name),
        Cmd::Policy(cmd) => {
            let dirs = Dirs::from_env()?;
            dirs.ensure()?;
            crate::policy::policy(&dirs, cmd)
        }
        Cmd::Secret(cmd) => {
            let dirs = Dirs::from_env()?;
            dirs.ensure()?;
            crate::secret::secret(&dirs, cmd)
        }
        Cmd::Serve(args) => crate::serve::serve(args),
        Cmd::Mcp => crate::serve::mcp(),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "paddock",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    }
}

pub(crate) fn open() -> Result<(Dirs, Store)> {
    let dirs = Dirs::from_env()?;
    dirs.ensure()?;
    let store = Store::open(&dirs.database())?;
    Ok((dirs, store))
}

/// The engine over the state directory `dirs`.
pub(crate) fn engine(dirs: &Dirs) -> Result<paddock_engine::Engine> {
    Ok(paddock_engine::Engine::at(dirs.clone())?)
}

/// `paddock exec NAME -- CMD`: one more command in a running sandbox.
fn exec(args: ExecArgs) -> Result<i32> {
    let name = parse_name(&args.name)?;
    let req = paddock_engine::exec::ExecRequest {
        command: args.command,
        env: args.env,
        user: args.user,
        workdir: args.workdir,
        tty: args.tty,
        stdin: args.interactive,
    };
    req.check()?;
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if args.tty && !terminal {
        return Err(usage(
            "--tty: stdin and stdout must be terminals (drop -t to run without one)",
        ));
    }
    let outcome = paddock_engine::Engine::open()?.exec(&name, req, &crate::error::Terminal)?;
    for d in &outcome.diagnostics {
        eprintln!("paddock: {d}");
    }
    Ok(outcome.exit.status())
}

/// `paddock trust NAME`: the last run's report of changed files the host may run.
fn trust(name: &str) -> Result<i32> {
    let (dirs, store) = open()?;
    let n: SandboxName = name
        .parse()
        .map_err(|e: paddock_policy::NameError| usage(e.to_string()))?;
    if store.get(&n)?.is_none() {
        return Err(usage(format!("no sandbox named {n}")));
    }
    match std::fs::read_to_string(dirs.sandbox(&n).join("trust-report.txt")) {
        Ok(t) if !t.trim().is_empty() => {
            println!("files the last run of {n} changed that your host may run or load:");
            print!("{t}");
        }
        Ok(_) => println!("the last run of {n} changed nothing your host would run"),
        Err(_) => println!("{n} has not run since reports began"),
    }
    Ok(0)
}

pub(crate) fn remove_sandbox(dirs: &Dirs, store: &Store, name: &SandboxName) -> Result<()> {
    remove(dirs, store, name, Removal::Full)
}

pub(crate) use paddock_engine::remove::Removal;

pub(crate) fn remove(dirs: &Dirs, _store: &Store, name: &SandboxName, how: Removal) -> Result<()> {
    Ok(engine(dirs)?.remove(name, how)?)
}

/// The record of sandbox `name`, or the usage error every command gives for an unknown one.
pub(crate) fn record(store: &Store, name: &SandboxName) -> Result<paddock_core::SandboxRecord> {
    store
        .get(name)?
        .ok_or_else(|| usage(format!("no sandbox named {name}")))
}

pub(crate) fn parse_name(s: &str) -> Result<SandboxName> {
    Ok(paddock_engine::sandboxes::parse_name(s)?)
}

/// Removes the secrets stored for sandbox `name`, which `rm` or `prune` just removed.
pub(crate) fn forget_secrets(dirs: &Dirs, name: &SandboxName) {
    if let Ok(e) = engine(dirs) {
        e.forget_secrets(name, &crate::error::Terminal);
    }
}

fn rm(names: &[String], force: bool) -> Result<i32> {
    let names: Vec<SandboxName> = names.iter().map(|n| parse_name(n)).collect::<Result<_>>()?;
    let (dirs, store) = open()?;
    for name in names {
        if store.get(&name)?.is_none() {
            if force {
                continue;
            }
            return Err(usage(format!("no sandbox named {name}")));
        }
        if !crate::review::confirm_drop(&dirs.sandbox(&name), &name, force, "rm")? {
            return Ok(1);
        }
        if force {
            crate::lifecycle::stop(&dirs, &store, &name, 0)?;
        } else if crate::lifecycle::running(&dirs, &name) {
            return Err(usage(format!(
                "sandbox {name} is running; `paddock stop {name}` first, or `paddock rm -f {name}` stops and removes it"
            )));
        }
        remove_sandbox(&dirs, &store, &name)?;
        forget_secrets(&dirs, &name);
        println!("{name}");
    }
    Ok(0)
}

fn reset(name: &str, force: bool) -> Result<i32> {
    let name = parse_name(name)?;
    let (dirs, store) = open()?;
    let rec = record(&store, &name)?;
    // Asked here, with the terminal; the engine refuses again if changes wait and it was not.
    let confirmed = crate::review::confirm_drop(&dirs.sandbox(&name), &name, force, "reset")?;
    if !confirmed {
        return Ok(1);
    }
    engine(&dirs)?.reset(&name, true)?;
    println!("{name} reset to image {}", rec.spec.image);
    Ok(0)
}

fn ls(all: bool, json: bool) -> Result<i32> {
    let (dirs, store) = open()?;
    let mut rows = Vec::new();
    let mut hidden = 0;
    for r in store.list()? {
        // The lock is the truth: a supervisor killed with SIGKILL leaves a "running" row behind.
        let state = crate::lifecycle::state(&dirs, &r);
        if all || state == SandboxState::Running {
            rows.push((r, state));
        } else {
            hidden += 1;
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let uptime = |r: &paddock_core::SandboxRecord, s: SandboxState| match (s, r.started_at) {
        (SandboxState::Running, Some(t)) => Some(now.saturating_sub(t)),
        _ => None,
    };
    let host = paddock_confine::cgroup::CgroupHost::detect();
    // What a running sandbox uses, from its host cgroups (a VM's: its VMM and device helpers).
    let usage = |r: &paddock_core::SandboxRecord, s: SandboxState| match s {
        SandboxState::Running => {
            paddock_confine::cgroup::SandboxCgroups::usage(&host, r.spec.name.as_str())
        }
        _ => (None, None),
    };
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(r, s)| (r, s, usage(r, *s)))
            .map(|(r, s, (memory, cpu))| serde_json::json!({
                "name": r.spec.name, "backend": r.spec.backend, "state": s, "image": r.spec.image,
                "workspace": r.spec.workspace, "created_at": r.created_at, "started_at": r.started_at,
                "last_exit": r.last_exit, "limits": r.spec.limits,
                "uptime_seconds": uptime(r, *s), "last_cause": r.last_cause,
                "memory_bytes": memory, "cpu_seconds": cpu,
            }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "{:<24} {:<8} {:<8} {:<8} {:>8} {:>8} {:<12} WORKSPACE",
        "NAME", "BACKEND", "STATE", "UPTIME", "CPU", "MEMORY", "LAST-EXIT"
    );
    for (r, s) in rows {
        let mut exit = r
            .last_exit
            .map(|e| e.to_string())
            .unwrap_or_else(|| "-".into());
        if let Some(c) = &r.last_cause {
            // "memory limit: …" -> "137 (memory limit)"
            let short: Vec<&str> = c.split("; ").filter_map(|x| x.split(':').next()).collect();
            exit = format!("{exit} ({})", short.join(", "));
        }
        let up = uptime(&r, s).map_or_else(
            || "-".into(),
            |t| match t {
                t if t < 120 => format!("{t}s"),
                t if t < 7200 => format!("{}m", t / 60),
                t => format!("{}h", t / 3600),
            },
        );
        let (mem, cpu) = usage(&r, s);
        let cpu = cpu.map_or_else(|| "-".into(), |c| format!("{c:.1}s"));
        let mem = mem.map_or_else(|| "-".into(), |m| format!("{}M", m / 1_000_000));
        println!(
            "{:<24} {:<8} {:<8} {:<8} {:>8} {:>8} {:<12} {}",
            r.spec.name.as_str(),
            r.spec.backend,
            s.as_str(),
            up,
            cpu,
            mem,
            exit,
            r.spec.workspace
        );
    }
    if hidden > 0 {
        eprintln!("({hidden} stopped, not shown: paddock ls --all)");
    }
    Ok(0)
}

fn image(cmd: ImageCmd) -> Result<i32> {
    let dirs = Dirs::from_env()?;
    dirs.ensure()?;
    let store = ImageStore::new(dirs.images());
    match cmd {
        ImageCmd::Build {
            name,
            force,
            suite,
            mirror,
            packages,
            packages_file,
            docker,
        } => {
            paddock_core::check_image_name(&name).map_err(|e| usage(e.to_string()))?;
            let mut opts = BuildOptions::default_image(&name);
            opts.docker = docker;
            opts.force = force;
            opts.mirror = mirror;
            opts.progress = std::io::stderr().is_terminal();
            if let Some(s) = suite {
                opts.suite = s;
            }
            let mut extra = packages;
            if let Some(file) = &packages_file {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| usage(format!("--packages-file {}: {e}", file.display())))?;
                extra.extend(paddock_image::packages_in(&text));
            }
            if docker {
                extra.extend(
                    paddock_image::docker::PACKAGES
                        .iter()
                        .map(|p| (*p).to_owned()),
                );
            }
            opts.packages = paddock_image::package_list(&opts.packages, &extra)
                .map_err(|e| usage(e.to_string()))?;
            // An image built from the same list, suite and layout is kept; a changed list
            // rebuilds it without --force.
            if let Ok(old) = store.get(&name)
                && !force
            {
                match paddock_image::changes(&old, &opts) {
                    None => {
                        println!(
                            "image {name} is up to date ({} packages, Debian {}); --force rebuilds it",
                            old.packages.len(),
                            old.suite
                        );
                        return Ok(0);
                    }
                    Some(why) => {
                        eprintln!("paddock: {why}: rebuilding image {name}");
                        opts.force = true;
                    }
                }
            }
            let started = std::time::Instant::now();
            let info = paddock_image::build(&store, &opts)?;
            println!(
                "built image {} (Debian {}, {:.0} MB) in {:.0?}",
                info.name,
                info.suite,
                info.size as f64 / 1e6,
                started.elapsed()
            );
            // What each backend that can run here needs from the same tree (the vm backend's
            // kernel, initramfs and disk); otherwise its first run prepares it.
            let rootfs = store.rootfs(&info.name)?;
            for backend in paddock_supervisor::backends() {
                let prepared = backend
                    .prepare_image(&rootfs, &info.idmap, &mut |m| eprintln!("paddock: {m}"))?;
                if let Some(done) = prepared {
                    println!("{done}");
                }
            }
        }
        ImageCmd::Ls { json } => {
            let list = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<16} {:<10} {:>8}  PACKAGES", "NAME", "SUITE", "SIZE");
                for i in list {
                    println!(
                        "{:<16} {:<10} {:>6}MB  {}",
                        i.name,
                        i.suite,
                        i.size / 1_000_000,
                        i.packages.join(",")
                    );
                }
            }
        }
        ImageCmd::Rm { name } => {
            store.remove(&name, paddock_confine::user::remove_tree)?;
            println!("{name}");
        }
    }
    Ok(0)
}

/// `paddock system setup`: one line per step as it ends.
fn system_setup(user: Option<&str>) -> Result<i32> {
    paddock_supervisor::system::setup(user, |d| {
        let mark = if d.changed { "made" } else { "ok  " };
        println!("[{mark}] {:<22} {}", d.step, d.detail);
    })
    .map_err(|e| usage(e.to_string()))?;
    Ok(0)
}

fn doctor(json: bool, seccomp: bool) -> Result<i32> {
    if seccomp {
        for r in paddock_supervisor::seccomp_rules() {
            println!("{:<20} {:<8} {}", r.0, r.1, r.2);
        }
        return Ok(0);
    }
    let rootfs = Dirs::from_env()
        .ok()
        .and_then(|d| {
            ImageStore::new(d.images())
                .rootfs(paddock_core::DEFAULT_IMAGE)
                .ok()
        })
        .filter(|r| r.exists());
    let mut report = paddock_supervisor::doctor::collect(rootfs.as_deref());
    // The credential store: readable with its key, and how many secrets it holds.
    if let Ok(dirs) = Dirs::from_env() {
        let store = crate::secret::store(&dirs);
        report.host.push(match store.list() {
            Ok(list) => paddock_core::ProbeItem {
                name: "secrets store".into(),
                ok: true,
                detail: format!("{} secret(s) in {}", list.len(), store.path().display()),
                fix: None,
                required: false,
            },
            Err(e) => paddock_core::ProbeItem {
                name: "secrets store".into(),
                ok: false,
                detail: e.to_string(),
                fix: Some(format!(
                    "restore the key file, or move {} aside (sandboxes refuse to start until then)",
                    store.path().display()
                )),
                required: false,
            },
        });
    }
    // The host's CAs the image lacks: sandboxes trust them unless made with --no-host-ca.
    if let Some(rootfs) = &rootfs {
        let extras = paddock_core::hostca::extras(rootfs);
        let bundle = paddock_core::hostca::host_bundle();
        report.host.push(paddock_core::ProbeItem {
            name: "host CAs".into(),
            ok: true,
            detail: match extras.len() {
                0 => format!("the image trusts every CA in {}", bundle.display()),
                n => format!(
                    "{} trusts {n} CA(s) the image lacks ({}); sandboxes trust them too unless made with --no-host-ca",
                    bundle.display(),
                    paddock_core::hostca::describe(&extras)
                ),
            },
            fix: None,
            required: false,
        });
    }
    // The limits a new sandbox gets where none is given, per backend.
    if let Ok(dirs) = Dirs::from_env() {
        for id in paddock_supervisor::backend_ids()
            .iter()
            .filter(|b| **b != "auto")
        {
            let Ok((backend, _)) = paddock_supervisor::select(id) else {
                continue;
            };
            let l = backend.default_limits(dirs.home());
            let show =
                |b: Option<paddock_policy::ByteSize>| b.map_or("none".into(), |b| b.to_string());
            report.host.push(paddock_core::ProbeItem {
                name: format!("{id} defaults"),
                ok: true,
                detail: format!(
                    "a new sandbox gets memory {}, disk {}, {} processes (flags and `paddock update` change them)",
                    show(l.memory),
                    show(l.disk),
                    l.pids.map_or("unlimited".into(), |p| p.to_string()),
                ),
                fix: None,
                required: false,
            });
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", paddock_supervisor::doctor::render(&report));
    }
    let usable = report.backends.iter().any(|b| b.usable);
    Ok(if usable { 0 } else { 1 })
}
