//! What each subcommand does.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use paddock_core::{
    Dirs, ImageStore, Launch, LockError, Network, SandboxLock, SandboxName, SandboxSpec,
    SandboxState, Stdio, Store,
};
use paddock_image::BuildOptions;
use paddock_policy::net::{Action, Rule, Scope, UpstreamProxy};
use paddock_policy::{AbsPath, EnvVar, Limits, Mount, User};

use crate::cli::{Cli, Cmd, ExecArgs, ImageCmd, RuleArgs, RunArgs, SystemCmd};
use crate::error::usage;

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
        Cmd::Reset { name } => reset(&name),
        Cmd::Trust { name } => trust(&name),
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
}

fn validate(args: &RunArgs) -> Result<Validated> {
    paddock_supervisor::select_check(&args.backend).map_err(|e| usage(e.to_string()))?;
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

fn generated_name(workspace: &AbsPath) -> SandboxName {
    let base: String = workspace
        .components()
        .last()
        .unwrap_or("sandbox")
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "sandbox" } else { base };
    // The sanitised base always satisfies the naming rule; the fallback is for safety only.
    format!("{base}-{}", random_suffix())
        .parse()
        .unwrap_or_else(|_| fallback_name())
}

/// A name that always satisfies the naming rule.
pub(crate) fn fallback_name() -> SandboxName {
    "sandbox".parse().unwrap_or_else(|_| std::process::abort())
}

pub(crate) fn ensure_image(dirs: &Dirs, name: &str) -> Result<(paddock_core::ImageInfo, PathBuf)> {
    let store = ImageStore::new(dirs.images());
    match store.get(name) {
        Ok(info) => {
            if info.version < paddock_image::LAYOUT_VERSION {
                eprintln!(
                    "paddock: image {name} was built by an older Paddock (apt inside has no proxy setting or package lists); `paddock image build {name}` updates it, and sandboxes keep their layers"
                );
            }
            Ok((info, store.rootfs(name)?))
        }
        Err(paddock_core::ImageStoreError::NotFound(_)) if name == paddock_core::DEFAULT_IMAGE => {
            eprintln!(
                "paddock: the default image is not built yet; building it now (about a minute; needs the host's Debian apt sources)"
            );
            let opts = BuildOptions {
                progress: std::io::stderr().is_terminal(),
                ..BuildOptions::default_image(name)
            };
            let info = paddock_image::build(&store, &opts).context("building the default image")?;
            Ok((info, store.rootfs(name)?))
        }
        Err(e) => Err(e.into()),
    }
}

/// What `run` does after preparing the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Start it and attach this terminal (`run`).
    Attached,
    /// Start it in the background (`run -d`).
    Detached,
    /// Only record it (`create`).
    Create,
}

fn run(args: RunArgs, mode: Mode) -> Result<i32> {
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
    // An agent runs from the agent cache (installed once, in a sandbox of its own), in one
    // sandbox per workspace unless --name or --rm says otherwise.
    if let Some(agent) = v.agent.clone() {
        if v.name.is_none() && !args.rm {
            v.name = Some(crate::agent_cmd::sandbox_name(&agent.name, &v.workspace));
        }
        if agent.package.is_some() && !v.no_network {
            let installed = crate::agent_cmd::ensure_installed(&agent, &args.backend, false)?;
            v.mounts.push(Mount {
                host: AbsPath::try_from(installed.dir.clone()).map_err(|e| usage(e.to_string()))?,
                sandbox: AbsPath::try_from(std::path::PathBuf::from(crate::agents::INSIDE))
                    .map_err(|e| usage(e.to_string()))?,
                read_only: true,
            });
        }
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
        let mut rules = crate::policy::open_store(&dirs)?;
        let scope = Scope::Sandbox(name.to_string());
        let preset = match (&args.policy, rules.preset_of(&scope)?) {
            (Some(p), _) => Some(p.as_str()),
            (None, None) => Some(paddock_proxy::presets::DEFAULT),
            (None, Some(_)) => None,
        };
        if let Some(p) = preset {
            crate::policy::apply_preset(&dirs, &mut rules, &scope, p, false)?;
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
        report_trust(&dirs, &spec, started);
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

/// `paddock exec NAME -- CMD`: one more command in a running sandbox.
fn exec(args: ExecArgs) -> Result<i32> {
    let name = parse_name(&args.name)?;
    let env = parse_env(&args.env)?;
    let user: Option<User> = args
        .user
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: paddock_policy::UserError| usage(e.to_string()))?;
    if let Some(w) = &args.workdir
        && !w.starts_with('/')
    {
        return Err(usage(format!("--workdir {w}: give an absolute path")));
    }
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if args.tty && !terminal {
        return Err(usage(
            "--tty: stdin and stdout must be terminals (drop -t to run without one)",
        ));
    }
    let (dirs, store) = open()?;
    let rec = record(&store, &name)?;
    if !crate::lifecycle::running(&dirs, &name) {
        return Err(usage(format!(
            "sandbox {name} is not running (`paddock start {name}` starts it)"
        )));
    }
    let spec = rec.spec;
    let (backend, _) = paddock_supervisor::select(&spec.backend)?;
    if !args.interactive && !args.tty {
        // The command reads nothing: stdin is /dev/null.
        let null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
        rustix::stdio::dup2_stdin(&null).context("cannot redirect stdin")?;
    }
    let uid = user.unwrap_or(spec.user).uid();
    let mut extra = spec.env.clone();
    extra.extend(env);
    let launch = Launch {
        argv: args.command,
        env: paddock_supervisor::environment(
            std::env::vars(),
            &extra,
            uid,
            args.tty,
            name.as_str(),
            spec.network == Network::Proxy,
        ),
        cwd: args.workdir.unwrap_or_else(|| spec.workspace.to_string()),
        uid,
        stdio: if args.tty { Stdio::Pty } else { Stdio::Inherit },
    };
    let started = std::time::SystemTime::now();
    let outcome = paddock_supervisor::run_exec(&dirs, &spec, backend.as_ref(), &launch);
    report_trust(&dirs, &spec, started);
    let outcome = outcome?;
    for d in &outcome.diagnostics {
        eprintln!("paddock: {d}");
    }
    Ok(outcome.exit.status())
}

/// Shows (and keeps for `paddock trust`) what changed since `started` that the host may run.
pub(crate) fn report_trust(dirs: &Dirs, spec: &SandboxSpec, started: std::time::SystemTime) {
    // Every folder the sandbox could write: the workspace first (shown relative), then the
    // read-write mounts.
    let roots: Vec<PathBuf> = std::iter::once(&spec.workspace)
        .chain(spec.mounts.iter().filter(|m| !m.read_only).map(|m| &m.host))
        .filter_map(|p| std::fs::canonicalize(p.as_path()).ok())
        .collect();
    let findings = paddock_core::trust::report(&roots, started, !spec.allow_git_config);
    let text = paddock_core::trust::render(&findings);
    if !findings.is_empty() {
        eprintln!(
            "paddock: this run changed files your host may run or load; review them before you do:\n{}",
            text.trim_end()
        );
    }
    let _ = std::fs::write(dirs.sandbox(&spec.name).join("trust-report.txt"), &text);
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

pub(crate) fn remove_sandbox(dirs: &Dirs, store: &Store, name: &SandboxName) -> Result<()> {
    remove(dirs, store, name, Removal::Full)
}

/// How a removal goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// `rm`, `prune`, a start that failed: the tree is gone when the call returns, and what a
    /// killed supervisor may have left on the host (cgroups, socket directories) is swept.
    Full,
    /// After a `--rm` run that its backend ended: the backend removed its own cgroups and
    /// directories, and `rm -rf` deletes the renamed tree in the background (the caller waits
    /// for the command's status, not for the disk: a layer with installed packages takes
    /// seconds to delete).
    AfterRun,
}

fn remove(dirs: &Dirs, store: &Store, name: &SandboxName, how: Removal) -> Result<()> {
    let dir = dirs.sandbox(name);
    let _lock = lock(&dir, name)?;
    // Rename first so a half-removed layer is never started again, and the name is free at
    // once. `paddock prune` removes renamed trees whose removal was interrupted.
    let doomed = dirs
        .sandboxes()
        .join(format!(".rm-{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(&dir, &doomed)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let detached = how == Removal::AfterRun && remove_in_background(&doomed);
    // The host's leftovers and (unless detached) the tree go while the rows are cleared.
    let rest = (how == Removal::Full || !detached).then(|| {
        let doomed = doomed.clone();
        let name = name.clone();
        std::thread::spawn(move || {
            if how == Removal::Full {
                // A vm run whose supervisor was killed may have left its socket directory.
                paddock_vm::remove_stale_run_dirs(name.as_str());
                paddock_gvisor::remove_stale_run_dirs(name.as_str());
                paddock_confine::cgroup::SandboxCgroups::remove_leftovers(
                    &paddock_confine::cgroup::CgroupHost::detect(),
                    name.as_str(),
                );
            }
            if detached {
                return Ok(());
            }
            paddock_confine::user::remove_tree(&doomed)
        })
    });
    let rows = (|| -> Result<()> {
        store.delete(name)?;
        paddock_proxy::store::remove_sandbox_rules(
            store.connection(),
            store.path(),
            name.as_str(),
        )?;
        Ok(())
    })();
    let removed = rest.map_or(Ok(()), |t| {
        t.join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the removal thread panicked")))
    });
    rows?;
    removed.with_context(|| format!("cannot remove {}", doomed.display()))
}

/// Starts `rm -rf` on `tree` in a process group of its own (the terminal's Ctrl-C does not
/// reach it), with nothing of this process but /dev/null as its standard streams (a pipe
/// reading this command's output ends when this command does). False when it cannot start.
fn remove_in_background(tree: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("rm");
    cmd.args(["-rf", "--one-file-system", "--"])
        .arg(tree)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if !paddock_confine::user::is_user_mode() {
        return cmd.spawn().is_ok();
    }
    // The layer holds files of the sandbox's root and other users: the user's subordinate ids.
    paddock_confine::user::current_user_ids()
        .ok()
        .and_then(|ids| paddock_confine::user::spawn_mapped(&mut cmd, &ids).ok())
        .is_some()
}

pub(crate) fn lock(dir: &Path, name: &SandboxName) -> Result<Option<SandboxLock>> {
    if !dir.exists() {
        return Ok(None);
    }
    match SandboxLock::try_acquire(&dir.join("lock")) {
        Ok(l) => Ok(Some(l)),
        Err(LockError::Busy) => Err(usage(format!(
            "sandbox {name} is running; stop it first (`paddock stop {name}`)"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The record of sandbox `name`, or the usage error every command gives for an unknown one.
pub(crate) fn record(store: &Store, name: &SandboxName) -> Result<paddock_core::SandboxRecord> {
    store
        .get(name)?
        .ok_or_else(|| usage(format!("no sandbox named {name}")))
}

/// `-e NAME=VALUE` values.
fn parse_env(values: &[String]) -> Result<Vec<EnvVar>> {
    values
        .iter()
        .map(|e| e.parse::<EnvVar>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(e.to_string()))
}

pub(crate) fn parse_name(s: &str) -> Result<SandboxName> {
    s.parse()
        .map_err(|e: paddock_core::NameError| usage(e.to_string()))
}

/// Removes the secrets stored for sandbox `name`, which `rm` or `prune` just removed: a later
/// sandbox of this name starts without them. A store that cannot be read is said, not fatal
/// (the sandbox is gone already).
pub(crate) fn forget_secrets(dirs: &Dirs, name: &SandboxName) {
    match paddock_secrets::SecretStore::at_default(dirs.home()).remove_sandbox(name.as_str()) {
        Ok(0) => {}
        Ok(n) => eprintln!("paddock: removed {name}'s {n} secret(s)"),
        Err(e) => eprintln!(
            "paddock: warning: {name}'s own secrets could not be removed ({e}); `paddock secret ls` shows them, `paddock secret rm NAME --sandbox {name}` removes one"
        ),
    }
}

/// Removes sandbox `name` (stopping it first) if it exists, and its secrets; quiet.
pub(crate) fn remove_quietly(name: &str) -> Result<()> {
    let name = parse_name(name)?;
    let (dirs, store) = open()?;
    if store.get(&name)?.is_some() {
        crate::lifecycle::stop(&dirs, &store, &name, 0)?;
        remove_sandbox(&dirs, &store, &name)?;
        forget_secrets(&dirs, &name);
    }
    Ok(())
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

fn reset(name: &str) -> Result<i32> {
    let name = parse_name(name)?;
    let (dirs, store) = open()?;
    if store.get(&name)?.is_none() {
        return Err(usage(format!("no sandbox named {name}")));
    }
    let dir = dirs.sandbox(&name);
    let _lock = lock(&dir, &name)?;
    paddock_confine::rootfs::remove_layer_dirs(&dir)?;
    // A size-limited layer's image (ns, gvisor): the next start makes a fresh one if asked.
    let layer = dir.join(paddock_confine::rootfs::LAYER_IMAGE);
    if layer.exists() {
        std::fs::remove_file(&layer)
            .with_context(|| format!("cannot reset {}", layer.display()))?;
    }
    // The vm backend's disk layer: the next start makes a fresh one over the image's disk.
    let disk = dir.join(paddock_vm::DISK_LAYER);
    if disk.exists() {
        std::fs::remove_file(&disk).with_context(|| format!("cannot reset {}", disk.display()))?;
    }
    println!(
        "{name} reset to image {}",
        store.get(&name)?.map(|r| r.spec.image).unwrap_or_default()
    );
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
        } => {
            paddock_core::check_image_name(&name).map_err(|e| usage(e.to_string()))?;
            let mut opts = BuildOptions::default_image(&name);
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
            // The vm backend's kernel, initramfs and disk, from the same tree, where the
            // backend can run; otherwise the first `--backend vm` run prepares them.
            let vm = paddock_vm::VmBackend::new();
            if paddock_core::Backend::probe(&vm).usable() {
                let a = paddock_vm::artifacts::Artifacts::prepare(
                    &store.rootfs(&info.name)?,
                    &info.idmap,
                    &mut |m| eprintln!("paddock: {m}"),
                )?;
                println!(
                    "prepared the image for the vm backend (kernel {})",
                    a.info.kernel_release
                );
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
