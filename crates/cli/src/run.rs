//! `paddock run` and `create`: the flags checked as a whole before anything exists, the
//! sandbox recorded and started (attached, in the background, or only recorded), and the runs
//! Paddock makes itself (an agent's install).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use paddock_core::{Dirs, Launch, Network, SandboxName, SandboxSpec, Stdio};
use paddock_policy::net::{Action, Rule, Scope, UpstreamProxy};
use paddock_policy::{AbsPath, EnvVar, Limits, Mount, User};

use crate::cli::{RuleArgs, RunArgs};
use crate::commands::{Removal, ensure_image, open, remove, report_trust};
use crate::error::usage;

/// Everything `run` needs, validated before anything is created.
struct Validated {
    allow: Vec<Rule>,
    no_network: bool,
    workspace: AbsPath,
    /// Where the command starts when not in the workspace itself: the subdirectory of a git
    /// work tree whose root is the workspace.
    cwd: Option<AbsPath>,
    /// What to say about the git repository the directory lies in.
    git_note: Option<String>,
    mounts: Vec<Mount>,
    limits: Limits,
    env: Vec<EnvVar>,
    user: User,
    name: Option<SandboxName>,
    agent: Option<crate::agents::Agent>,
    allow_git_config: bool,
    mount_sockets: bool,
    ports: Vec<paddock_policy::PortMap>,
    host_ca: bool,
    agent_config: bool,
    upstream: Option<UpstreamProxy>,
    review: bool,
}

fn validate(args: &RunArgs) -> Result<Validated> {
    paddock_supervisor::select_check(&args.backend).map_err(|e| usage(e.to_string()))?;
    if args.review {
        paddock_core::review_supported().map_err(usage)?;
    }
    if args.review && args.rm {
        return Err(usage(
            "--rm would remove the changes waiting for review with the sandbox: give it a --name instead, and `paddock rm` it once its changes are applied or discarded",
        ));
    }
    let ws = match &args.workspace {
        Some(w) => w.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let canonical = std::fs::canonicalize(&ws).map_err(|e| {
        usage(format!(
            "workspace {} does not exist or is not accessible: {e}",
            ws.display()
        ))
    })?;
    if !canonical.is_dir() {
        return Err(usage(format!(
            "workspace {} is not a directory",
            ws.display()
        )));
    }
    // Which paths may be shared at all (never a system location or Paddock's own, never a
    // socket unless asked), judged with every symlink resolved.
    let rules = paddock_core::shares::ShareRules::for_user(&Dirs::from_env()?);
    let share = |p: &Path, special| match rules.check(p, special) {
        Ok(c) => {
            if let Some(w) = &c.warning {
                eprintln!("paddock: warning: {w}");
            }
            AbsPath::try_from(c.path).map_err(|e| usage(e.to_string()))
        }
        Err(e) => Err(usage(e.to_string())),
    };
    // Below a git work tree's root (and no -w): share the root, whose .git git inside needs,
    // and start the command here.
    let (canonical, cwd, git_note) = match crate::gitroot::repo_root_above(&canonical) {
        None => (canonical, None, None),
        Some(root) => {
            let home = std::env::var_os("HOME").and_then(|h| std::fs::canonicalize(h).ok());
            let refused = match rules.check(&root, false) {
                Err(e) => Some(e.to_string()),
                // In user mode the agent is the user: a root the user cannot write would be a
                // read-only workspace.
                Ok(_)
                    if paddock_confine::user::is_user_mode()
                        && !paddock_confine::user::writable(&root) =>
                {
                    Some(format!("you cannot write its root {}", root.display()))
                }
                Ok(_) => None,
            };
            match crate::gitroot::choose(
                &canonical,
                &root,
                args.workspace.is_some(),
                home.as_deref(),
                refused,
            ) {
                crate::gitroot::Choice::Root { root } => {
                    let note = format!(
                        "sharing the git repository {} (its root, so that git works inside); the command starts in {}",
                        root.display(),
                        canonical.display()
                    );
                    let here = AbsPath::try_from(canonical).map_err(|e| usage(e.to_string()))?;
                    (root, Some(here), Some(note))
                }
                crate::gitroot::Choice::Only { note } => {
                    (canonical, None, Some(format!("note: {note}")))
                }
            }
        }
    };
    let workspace = share(&canonical, false)?;
    // In user mode the agent is the user: a workspace the user cannot write would be a
    // read-only one (or, with sudo inside, would look writable to root and fail). Asked after
    // the share rules, whose refusal (a system directory, Paddock's own) says more.
    if paddock_confine::user::is_user_mode() && !paddock_confine::user::writable(&canonical) {
        return Err(usage(format!(
            "workspace {} is not writable by you, and the agent works as you; choose a folder of yours (or share it read-only with --mount {}:ro from a folder of yours)",
            ws.display(),
            ws.display()
        )));
    }
    let mut mounts = Vec::new();
    for spec in &args.mounts {
        let mut m: Mount = spec
            .parse()
            .map_err(|e: paddock_policy::MountError| usage(e.to_string()))?;
        if !m.host.as_path().exists() {
            return Err(usage(format!("mount source {} does not exist", m.host)));
        }
        m.host = share(m.host.as_path(), args.dangerously_mount_sockets)?;
        mounts.push(m);
    }
    let limits = Limits {
        cpus: parse_flag("--cpus", args.cpus.as_deref(), str::parse)?,
        memory: parse_flag("--memory", args.memory.as_deref(), Limits::parse_memory)?,
        pids: parse_flag("--pids", args.pids.as_deref(), Limits::parse_pids)?,
        disk: parse_flag("--disk", args.disk.as_deref(), Limits::parse_disk)?,
    };
    check_host_limits(&limits)?;
    let env = parse_env(&args.env)?;
    let user: User = args
        .user
        .parse()
        .map_err(|e: paddock_policy::UserError| usage(e.to_string()))?;
    let name = args
        .name
        .as_deref()
        .map(str::parse::<SandboxName>)
        .transpose()
        .map_err(|e| usage(e.to_string()))?;
    paddock_core::check_image_name(&args.image).map_err(|e| usage(e.to_string()))?;
    let allow_args = |hosts: &[String], private_address| RuleArgs {
        hosts: hosts.to_vec(),
        sandbox: None,
        port: None,
        method: None,
        path: None,
        private_address,
    };
    let mut allow = crate::policy::rules_from(Action::Allow, &allow_args(&args.allow, false))
        .map_err(|e| usage(format!("--allow: {e}")))?;
    allow.extend(
        crate::policy::rules_from(
            Action::Allow,
            &allow_args(&args.allow_private_address, true),
        )
        .map_err(|e| usage(format!("--allow-private-address: {e}")))?,
    );
    if let Some(p) = &args.policy {
        paddock_proxy::presets::text(p).map_err(|e| usage(format!("--policy: {e}")))?;
    }
    let agent = match &args.agent {
        None => None,
        Some(a) => Some(crate::agents::find(a).ok_or_else(|| {
            let names: Vec<String> = crate::agents::agents()
                .into_iter()
                .map(|a| a.name)
                .collect();
            usage(format!(
                "unknown agent {a:?}: choose {} (a command goes after `--`)",
                names.join(", ")
            ))
        })?),
    };
    // The agent's own configuration and login directory of the host, at its place inside,
    // writable (logins and token refreshes persist).
    if args.agent_config {
        let agent = agent.as_ref().ok_or_else(|| {
            usage("--agent-config goes with an agent preset (paddock run claude --agent-config)")
        })?;
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute())
            .ok_or_else(|| usage("--agent-config: HOME is not set"))?;
        let (host, inside) = crate::agents::config_share(agent, &home).ok_or_else(|| {
            usage(format!(
                "agent {} keeps no configuration directory",
                agent.name
            ))
        })?;
        if !host.exists() {
            std::fs::create_dir_all(&host)
                .and_then(|()| {
                    std::fs::set_permissions(
                        &host,
                        std::os::unix::fs::PermissionsExt::from_mode(0o700),
                    )
                })
                .with_context(|| format!("cannot create {}", host.display()))?;
        }
        eprintln!(
            "paddock: sharing {} writable at {}: what the agent writes there (settings, hooks) also applies when you run {} on this host",
            host.display(),
            inside.display(),
            agent.name
        );
        mounts.push(Mount {
            host: share(&host, false)?,
            sandbox: AbsPath::try_from(inside).map_err(|e| usage(e.to_string()))?,
            read_only: false,
        });
    }
    let mut ports = Vec::new();
    for p in &args.publish {
        for m in paddock_policy::parse_ports(p).map_err(|e| usage(format!("--publish: {e}")))? {
            check_port_free(&m)?;
            ports.push(m);
        }
    }
    if let Some(agent) = &agent {
        for p in &agent.ports {
            for mut m in paddock_policy::parse_ports(p)
                .map_err(|e| usage(format!("agent {}: {e}", agent.name)))?
            {
                m.auto = true;
                if !ports.iter().any(|have| have.host == m.host) {
                    ports.push(m);
                }
            }
        }
    }
    let upstream = upstream_proxy(args)?;
    let v = Validated {
        upstream,
        allow,
        no_network: args.no_network,
        workspace,
        cwd,
        git_note,
        mounts,
        limits,
        env,
        user,
        name,
        agent,
        allow_git_config: args.dangerously_allow_git_config,
        mount_sockets: args.dangerously_mount_sockets,
        host_ca: !args.no_host_ca,
        agent_config: args.agent_config,
        ports,
        review: args.review,
    };
    // Whole-spec checks (clashing mount targets) before anything exists.
    spec_for(
        &v,
        v.name.clone().unwrap_or_else(fallback_name),
        "ns",
        &args.image,
        args.no_sudo,
    )
    .validate()
    .map_err(|e| usage(e.to_string()))?;
    Ok(v)
}

fn spec_for(
    v: &Validated,
    name: SandboxName,
    backend: &str,
    image: &str,
    no_sudo: bool,
) -> SandboxSpec {
    SandboxSpec {
        name,
        backend: backend.to_owned(),
        image: image.to_owned(),
        workspace: v.workspace.clone(),
        mounts: v.mounts.clone(),
        limits: v.limits.clone(),
        env: v.env.clone(),
        user: v.user,
        no_new_privs: no_sudo,
        network: if v.no_network {
            Network::None
        } else {
            Network::Proxy
        },
        allow_git_config: v.allow_git_config,
        ports: v.ports.clone(),
        dangerously_mount_sockets: v.mount_sockets,
        host_ca: v.host_ca,
        upstream_proxy: if v.no_network {
            None
        } else {
            v.upstream.clone()
        },
        review: v.review,
        discard_layer: false,
    }
}

/// The upstream proxy a new run's settings get: `--upstream-proxy`, else the host's proxy
/// variables as they are now.
fn upstream_proxy(args: &RunArgs) -> Result<Option<UpstreamProxy>> {
    if args.no_network {
        return Ok(None);
    }
    let env = |k: &str| std::env::var(k).ok();
    match &args.upstream_proxy {
        Some(flag) => {
            UpstreamProxy::from_flag(flag, env).map_err(|e| usage(format!("--upstream-proxy: {e}")))
        }
        None => {
            let found = UpstreamProxy::from_env(env).map_err(|e| {
                usage(format!(
                    "{e} (from this shell's proxy variables; fix them, or pass --upstream-proxy none or --upstream-proxy URL)"
                ))
            })?;
            if let Some(u) = &found
                && std::io::stderr().is_terminal()
            {
                eprintln!(
                    "paddock: allowed connections go on through the upstream proxy {u} (from this shell's proxy variables; --upstream-proxy none ignores them)"
                );
            }
            Ok(found)
        }
    }
}

/// Refuses a host port that is taken now (the check is repeated when the sandbox starts).
pub(crate) fn check_port_free(m: &paddock_policy::PortMap) -> Result<()> {
    match std::net::TcpListener::bind((m.addr, m.host)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(usage(format!(
            "port {}:{} is already in use on the host; choose another with -p HOST_PORT:{}",
            m.addr, m.host, m.sandbox
        ))),
        Err(e) => Err(usage(format!(
            "cannot listen on {}:{}: {e}",
            m.addr, m.host
        ))),
    }
}

/// The file in the state directory that holds the last `auto` backend note shown.
const AUTO_NOTE: &str = "auto-backend-note";

/// Whether `note` differs from the one recorded in `marker` (then it is recorded): a note is
/// shown once, and again when it changes. A marker that cannot be written shows it every time.
fn note_is_new(marker: &Path, note: &str) -> bool {
    if std::fs::read_to_string(marker).is_ok_and(|had| had == note) {
        return false;
    }
    let _ = std::fs::write(marker, note);
    true
}

/// Why sandbox `name`, whose workspace is `had`, is not run on `asked`, and what to do.
fn moved_workspace(name: &SandboxName, had: &AbsPath, asked: &AbsPath) -> String {
    format!(
        "sandbox {name} belongs to workspace {had}, not {asked}; run it there (-w {had}), choose another --name for {asked}, or `paddock rm {name}` first"
    )
}

/// Refuses a CPU or memory limit beyond this host's (it could never be reached: a slip).
pub(crate) fn check_host_limits(limits: &Limits) -> Result<()> {
    limits
        .check_host(&paddock_core::host_capacity())
        .map_err(|e| usage(e.to_string()))
}

/// Parses an optional flag value; a bad value is a usage error naming the flag.
pub(crate) fn parse_flag<T, E: std::fmt::Display>(
    flag: &str,
    value: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>> {
    value
        .map(parse)
        .transpose()
        .map_err(|e| usage(format!("{flag}: {e}")))
}

fn random_suffix() -> String {
    let mut b = [0u8; 3];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The workspace's last component as part of a sandbox name: lower case, each character that
/// is not a letter or digit a '-', at most `max` characters, no '-' at either end (perhaps
/// empty).
pub(crate) fn workspace_label(workspace: &AbsPath, max: usize) -> String {
    let label: String = workspace
        .components()
        .last()
        .unwrap_or_default()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(max)
        .collect();
    label.trim_matches('-').to_owned()
}

fn generated_name(workspace: &AbsPath) -> SandboxName {
    let base = workspace_label(workspace, 32);
    let base = if base.is_empty() { "sandbox" } else { &base };
    // The sanitised base always satisfies the naming rule; the fallback is for safety only.
    format!("{base}-{}", random_suffix())
        .parse()
        .unwrap_or_else(|_| fallback_name())
}

/// A name that always satisfies the naming rule.
pub(crate) fn fallback_name() -> SandboxName {
    "sandbox".parse().unwrap_or_else(|_| std::process::abort())
}

/// What `run` does after preparing the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Start it and attach this terminal (`run`).
    Attached,
    /// Start it in the background (`run -d`).
    Detached,
    /// Only record it (`create`).
    Create,
}

pub(crate) fn run(args: RunArgs, mode: Mode) -> Result<i32> {
    run_with(args, mode, Internal::default())
}

/// What Paddock adds to a run it makes itself (an agent's install sandbox).
#[derive(Debug, Default)]
pub(crate) struct Internal {
    /// No report of what the run changed in the workspace (Paddock's own directory).
    pub quiet: bool,
}

/// `paddock run` as [`Mode::Attached`], for a run Paddock makes itself.
pub(crate) fn run_internal(args: RunArgs, internal: Internal) -> Result<i32> {
    run_with(args, Mode::Attached, internal)
}

fn run_with(args: RunArgs, mode: Mode, internal: Internal) -> Result<i32> {
    if mode == Mode::Create && args.rm {
        return Err(usage("--rm makes no sense with create"));
    }
    let mut v = validate(&args)?;
    // An agent runs in one sandbox per workspace unless --name or --rm says otherwise (and
    // from the agent cache, installed below once the other checks are done).
    if v.name.is_none()
        && !args.rm
        && let Some(agent) = &v.agent
    {
        v.name = Some(crate::agent_cmd::sandbox_name(&agent.name, &v.workspace));
    }
    let (dirs, store) = open()?;
    let existing = match &v.name {
        Some(n) => store.get(n)?,
        None => None,
    };
    // A sandbox made on the subdirectory itself (before roots were shared) keeps it.
    if let Some(old) = &existing
        && v.cwd.as_ref() == Some(&old.spec.workspace)
    {
        v.workspace = old.spec.workspace.clone();
        v.cwd = None;
        v.git_note = None;
    }
    if let Some(note) = &v.git_note {
        eprintln!("paddock: {note}");
    }
    if mode == Mode::Create
        && let Some(old) = &existing
    {
        return Err(usage(format!(
            "a sandbox named {} already exists (`paddock start {}` starts it)",
            old.spec.name, old.spec.name
        )));
    }
    // A sandbox keeps its workspace: its layer and its agent's state belong to that project.
    if let Some(old) = &existing
        && old.spec.workspace != v.workspace
    {
        return Err(usage(moved_workspace(
            &old.spec.name,
            &old.spec.workspace,
            &v.workspace,
        )));
    }
    // A sandbox keeps its backend: its disk and packages live there.
    let requested = match (&existing, args.backend.as_str()) {
        (Some(old), "auto") => old.spec.backend.clone(),
        _ => args.backend.clone(),
    };
    let (backend, why) = paddock_supervisor::select(&requested)?;
    // Which backend `auto` picked for a new sandbox, and why: on a terminal, once per user and
    // host until the choice or its reason changes (`paddock ls` shows the backend afterwards,
    // `paddock doctor` the reason).
    if existing.is_none() && requested == "auto" && std::io::stderr().is_terminal() {
        let note = format!("backend {}: {why}", backend.id());
        if note_is_new(&dirs.home().join(AUTO_NOTE), &note) {
            eprintln!("paddock: {note} (said once; `paddock doctor` says it again)");
        }
    }
    if let Some(old) = &existing
        && old.spec.backend != backend.id()
    {
        return Err(usage(format!(
            "sandbox {} runs on the {} backend (its installed packages live there); `paddock rm {}` first to move it to {}",
            old.spec.name,
            old.spec.backend,
            old.spec.name,
            backend.id()
        )));
    }
    let name = v
        .name
        .clone()
        .unwrap_or_else(|| generated_name(&v.workspace));
    let mut spec = spec_for(&v, name.clone(), backend.id(), &args.image, args.no_sudo);
    // Review mode stays with a sandbox: its layer may hold changes not yet applied, which a
    // run on the workspace itself would hide.
    spec.review |= existing.as_ref().is_some_and(|old| old.spec.review);
    // Limits: the flags, else this host's defaults (a share of its memory and free disk, so
    // that no sandbox can take the host's), as every other setting of a reused sandbox comes
    // from this command's flags. The disk belongs to the layer: a reused sandbox keeps its
    // size (a layer made without one cannot be given one in place).
    let mut defaults = backend.default_limits(dirs.home());
    if let Some(old) = &existing {
        defaults.disk = old.spec.limits.disk;
    }
    spec.limits = spec.limits.or(&defaults);
    backend
        .check_limits(&spec.limits)
        .map_err(|e| usage(e.to_string()))?;
    // After every check that needs no image, so that bad input never waits for a build.
    let (image, rootfs) = ensure_image(&dirs, &args.image)?;
    // Likewise the agent's install, the first time.
    if let Some(agent) = v.agent.as_ref().filter(|a| a.package.is_some())
        && !v.no_network
    {
        let installed = crate::agent_cmd::ensure_installed(agent, &args.backend, false)?;
        spec.mounts.push(Mount {
            host: AbsPath::try_from(installed.dir).map_err(|e| usage(e.to_string()))?,
            sandbox: AbsPath::try_from(PathBuf::from(crate::agents::INSIDE))
                .map_err(|e| usage(e.to_string()))?,
            read_only: true,
        });
    }
    let created = existing.is_none();
    let tty = mode == Mode::Attached
        && !args.no_tty
        && std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal();
    // Caught before the sandbox is recorded: a stop signal from here on ends the start cleanly.
    let signals = match mode {
        Mode::Attached => Some(paddock_supervisor::catch_signals(tty)?),
        _ => None,
    };
    if let Some(old) = &existing {
        if old.spec.image != spec.image {
            return Err(usage(format!(
                "sandbox {name} uses image {}; `paddock rm {name}` first to change its image",
                old.spec.image
            )));
        }
        // Its settings are not replaced under a running sandbox.
        if crate::lifecycle::running(&dirs, &name) {
            return Err(usage(format!(
                "sandbox {name} is running; `paddock exec {name} -- …` runs more commands in it, `paddock stop {name}` stops it"
            )));
        }
        store.update_spec(&spec)?;
    } else {
        store.insert(&spec)?;
    }
    if !args.no_network {
        let rules = &store;
        let scope = Scope::Sandbox(name.to_string());
        let preset = match (&args.policy, rules.preset_of(&scope)?) {
            (Some(p), _) => Some(p.as_str()),
            (None, None) => Some(paddock_proxy::presets::DEFAULT),
            (None, Some(_)) => None,
        };
        if let Some(p) = preset {
            crate::policy::apply_preset(&dirs, rules, &scope, p, false)?;
        }
        let have = rules.rules_for(name.as_str())?;
        let fresh: Vec<Rule> = v
            .allow
            .iter()
            .filter(|r| !have.iter().any(|h| h.scope == scope && h.rule == **r))
            .cloned()
            .collect();
        rules.add(&scope, &fresh, "run")?;
    }
    if let Some(agent) = &v.agent {
        agent_hints(&dirs, agent, &name, &v);
    }
    let argv = match &v.agent {
        Some(agent) => crate::agents::argv(agent, &args.command),
        None if args.command.is_empty() && mode != Mode::Attached => crate::lifecycle::KEEP_ALIVE
            .iter()
            .map(|s| s.to_string())
            .collect(),
        None if args.command.is_empty() => vec!["bash".to_owned()],
        None => args.command.clone(),
    };
    if mode != Mode::Attached {
        crate::lifecycle::write_main(
            &dirs,
            &name,
            &crate::lifecycle::Main {
                argv,
                rm: args.rm,
                tty: args.tty || v.agent.is_some(),
                cwd: v.cwd.as_ref().map(ToString::to_string),
            },
        )?;
        if mode == Mode::Detached {
            crate::lifecycle::start_detached(&dirs, &name)?;
        }
        println!("{name}");
        return Ok(0);
    }
    let uid = spec.user.uid();
    let launch = Launch {
        argv,
        env: paddock_supervisor::environment(
            std::env::vars(),
            &spec.env,
            uid,
            tty,
            name.as_str(),
            spec.network == Network::Proxy,
        ),
        cwd: v.cwd.as_ref().unwrap_or(&spec.workspace).to_string(),
        uid,
        stdio: if tty { Stdio::Pty } else { Stdio::Inherit },
    };
    let started = std::time::SystemTime::now();
    let spec = SandboxSpec {
        discard_layer: args.rm,
        ..spec
    };
    let signals = match signals {
        Some(s) => s,
        None => paddock_supervisor::catch_signals(tty)?,
    };
    let result = paddock_supervisor::run_attached(
        &dirs,
        &store,
        &spec,
        backend.as_ref(),
        &image,
        rootfs,
        &launch,
        signals,
    );
    // What the run changed that the host may later run: shown now, kept for `paddock trust`.
    if !internal.quiet {
        report_trust(&dirs, &spec, started, true);
    }
    // A failed first start of a sandbox with a generated name leaves nothing behind; a sandbox
    // the user named is never removed by a failure (its layer may hold the agent's work).
    let remove_after = args.rm || (created && v.name.is_none() && result.is_err());
    if !remove_after && result.is_err() && v.name.is_some() {
        eprintln!("paddock: sandbox {name} is kept as it was (`paddock rm {name}` removes it)");
    }
    if remove_after {
        let how = match result {
            Ok(_) => Removal::AfterRun,
            Err(_) => Removal::Full,
        };
        let _ = remove(&dirs, &store, &name, how);
    }
    let outcome = match result {
        Ok(o) => o,
        // A stop signal during the start (timeout, Ctrl-C) is what ended it, whatever failed.
        Err(e) => match e.signal() {
            Some(sig) if remove_after => {
                return Err(crate::error::interrupted(
                    format!("{e}; nothing was kept"),
                    sig,
                ));
            }
            Some(sig) => return Err(crate::error::interrupted(e.to_string(), sig)),
            None => return Err(e.into()),
        },
    };
    for d in outcome.diagnostics.iter().chain(&outcome.limits) {
        eprintln!("paddock: {d}");
    }
    Ok(outcome.exit.status())
}

/// What an agent preset needs that is missing: its secrets, its network, its configuration.
fn agent_hints(dirs: &Dirs, agent: &crate::agents::Agent, name: &SandboxName, v: &Validated) {
    if v.no_network && agent.package.is_some() {
        eprintln!(
            "paddock: {} is installed from the npm registry on first use; with --no-network that cannot happen (and an installed one is not used)",
            agent.name
        );
    }
    let have = crate::secret::store(dirs)
        .for_sandbox(name.as_str())
        .unwrap_or_default();
    for svc in &agent.services {
        if !have
            .iter()
            .any(|e| e.service.as_deref() == Some(svc.as_str()))
        {
            eprintln!(
                "paddock: no {svc} secret stored; `paddock secret set {svc}` keeps it on the host (or log in inside the sandbox)"
            );
        }
    }
    if let (Some(home), true) = (std::env::var_os("HOME"), !v.agent_config)
        && let Some((dir, inside)) = crate::agents::config_share(agent, Path::new(&home))
        && dir.is_dir()
    {
        eprintln!(
            "paddock: {} (your {} settings and login) is not shared; --agent-config shares it at {} (else the sandbox keeps its own)",
            dir.display(),
            agent.name,
            inside.display()
        );
    }
}

/// `-e NAME=VALUE` values.
pub(crate) fn parse_env(values: &[String]) -> Result<Vec<EnvVar>> {
    values
        .iter()
        .map(|e| e.parse::<EnvVar>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_said_once_and_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join(AUTO_NOTE);
        let gvisor = "backend gvisor: auto: gvisor, because the vm backend needs working KVM (x)";
        assert!(note_is_new(&marker, gvisor));
        assert!(!note_is_new(&marker, gvisor));
        assert!(!note_is_new(&marker, gvisor));
        assert!(note_is_new(
            &marker,
            "backend vm: auto: vm, because KVM works here (y)"
        ));
        assert!(note_is_new(&marker, gvisor));
    }
}
