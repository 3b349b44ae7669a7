//! A new run's request, checked as a whole before anything exists: the workspace and what
//! is shared, limits, network rules, ports, the agent preset. The command line's flags and the
//! API's JSON are the same [`RunRequest`], checked by this one code path.

use std::path::{Path, PathBuf};

use paddock_core::{Dirs, Network, SandboxName, SandboxSpec};
use paddock_policy::net::{Action, Rule, UpstreamProxy};
use paddock_policy::{AbsPath, EnvVar, Limits, Mount, User};
use serde::{Deserialize, Serialize};

use crate::policy::RuleRequest;
use crate::{Context, Reporter, Result, invalid};

/// A sandbox to make (and run): the settings of `paddock run` and `create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RunRequest {
    /// The host folder the sandbox works on (the current directory when not given; a folder
    /// inside a git work tree shares the tree's root, and the command starts in the folder).
    #[schema(value_type = String, required = true, pattern = "^/")]
    pub workspace: Option<PathBuf>,
    /// More host folders: `HOST:SANDBOX[:ro]`.
    pub mounts: Vec<String>,
    /// The sandbox's name (generated when not given).
    pub name: Option<String>,
    /// `auto`, `ns`, `gvisor` or `vm`.
    pub backend: Option<String>,
    /// The image.
    pub image: Option<String>,
    /// CPUs (e.g. `1.5`).
    pub cpus: Option<String>,
    /// Memory (e.g. `2g`).
    pub memory: Option<String>,
    /// Processes.
    pub pids: Option<String>,
    /// The layer's size (e.g. `10g`).
    pub disk: Option<String>,
    /// `NAME=VALUE` variables.
    pub env: Vec<String>,
    /// Published ports: `[ADDR:]HOST_PORT:SANDBOX_PORT`.
    pub publish: Vec<String>,
    /// `agent` (the default), `root`, or a uid.
    pub user: Option<String>,
    /// No sudo inside (`no_new_privs`).
    pub no_sudo: bool,
    /// Remove the sandbox when its command ends.
    pub rm: bool,
    /// Give the background command a terminal.
    pub tty: bool,
    /// Review mode: changes wait in a layer until the user applies them.
    pub review: bool,
    /// Let the sandbox write the workspace's `.git/config` and hooks.
    pub dangerously_allow_git_config: bool,
    /// Allow sharing sockets.
    pub dangerously_mount_sockets: bool,
    /// Hosts to allow.
    pub allow: Vec<String>,
    /// Hosts to allow even at a private address.
    pub allow_private_address: Vec<String>,
    /// Share the agent's configuration directory of the host.
    pub agent_config: bool,
    /// Do not trust the host's extra CAs inside.
    pub no_host_ca: bool,
    /// The network preset.
    pub policy: Option<String>,
    /// No network at all.
    pub no_network: bool,
    /// `none`, or the upstream proxy's URL (the host's proxy variables when not given).
    pub upstream_proxy: Option<String>,
    /// Seconds a request an `ask` rule holds waits for an answer (1 to 3600; 60 when none).
    pub ask_timeout: Option<u32>,
    /// The preset ends in an ask instead of a deny: a host no rule names waits for the user.
    pub ask_unlisted: bool,
    /// An agent preset (`claude`, `codex`, `gemini`, ...).
    pub agent: Option<String>,
    /// A Docker Engine of the sandbox's own inside (`docker` and `docker compose` work; its
    /// images and volumes live in the sandbox's layer). Its image is `IMAGE-docker`, built on
    /// first use. The vm backend runs it; the ns and gvisor backends refuse it.
    pub docker: bool,
    /// The command (bash, the agent, or keep-alive in the background, when empty).
    pub command: Vec<String>,
}

impl RunRequest {
    /// The backend asked for (`auto` when none).
    pub fn backend(&self) -> &str {
        self.backend.as_deref().unwrap_or("auto")
    }

    /// The image asked for (the default image when none).
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or(paddock_core::DEFAULT_IMAGE)
    }
}

/// Everything `run` needs, validated before anything is created.
pub(crate) struct Validated {
    pub(crate) allow: Vec<Rule>,
    pub(crate) no_network: bool,
    pub(crate) workspace: AbsPath,
    /// Where the command starts when not in the workspace itself: the subdirectory of a git
    /// work tree whose root is the workspace.
    pub(crate) cwd: Option<AbsPath>,
    /// What to say about the git repository the directory lies in.
    pub(crate) git_note: Option<String>,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) limits: Limits,
    pub(crate) env: Vec<EnvVar>,
    pub(crate) user: User,
    pub(crate) name: Option<SandboxName>,
    pub(crate) agent: Option<crate::agents::Agent>,
    pub(crate) allow_git_config: bool,
    pub(crate) mount_sockets: bool,
    pub(crate) ports: Vec<paddock_policy::PortMap>,
    pub(crate) host_ca: bool,
    pub(crate) agent_config: bool,
    pub(crate) upstream: Option<UpstreamProxy>,
    pub(crate) ask_timeout_s: Option<u32>,
    pub(crate) review: bool,
    pub(crate) docker: bool,
}

pub(crate) fn validate(args: &RunRequest, report: &dyn Reporter) -> Result<Validated> {
    paddock_supervisor::select_check(args.backend()).map_err(|e| invalid(e.to_string()))?;
    if args.review {
        paddock_core::review_supported().map_err(invalid)?;
    }
    if args.review && args.rm {
        return Err(invalid(
            "--rm would remove the changes waiting for review with the sandbox: give it a --name instead, and `paddock rm` it once its changes are applied or discarded",
        ));
    }
    let ws = match &args.workspace {
        Some(w) => w.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let canonical = std::fs::canonicalize(&ws).map_err(|e| {
        invalid(format!(
            "workspace {} does not exist or is not accessible: {e}",
            ws.display()
        ))
    })?;
    if !canonical.is_dir() {
        return Err(invalid(format!(
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
                report.warn(w);
            }
            AbsPath::try_from(c.path).map_err(|e| invalid(e.to_string()))
        }
        Err(e) => Err(invalid(e.to_string())),
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
                    let here = AbsPath::try_from(canonical).map_err(|e| invalid(e.to_string()))?;
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
        return Err(invalid(format!(
            "workspace {} is not writable by you, and the agent works as you; choose a folder of yours (or share it read-only with --mount {}:ro from a folder of yours)",
            ws.display(),
            ws.display()
        )));
    }
    let mut mounts = Vec::new();
    for spec in &args.mounts {
        let mut m: Mount = spec
            .parse()
            .map_err(|e: paddock_policy::MountError| invalid(e.to_string()))?;
        if !m.host.as_path().exists() {
            return Err(invalid(format!("mount source {} does not exist", m.host)));
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
        .as_deref()
        .unwrap_or("agent")
        .parse()
        .map_err(|e: paddock_policy::UserError| invalid(e.to_string()))?;
    let name = args
        .name
        .as_deref()
        .map(str::parse::<SandboxName>)
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    paddock_core::check_image_name(args.image()).map_err(|e| invalid(e.to_string()))?;
    let allow_args = |hosts: &[String], private_address| RuleRequest {
        hosts: hosts.to_vec(),
        sandbox: None,
        port: None,
        method: None,
        path: None,
        private_address,
    };
    let mut allow =
        crate::policy::rules_from(Action::Allow, &allow_args(&args.allow, false), report)
            .map_err(|e| invalid(format!("--allow: {e}")))?;
    allow.extend(
        crate::policy::rules_from(
            Action::Allow,
            &allow_args(&args.allow_private_address, true),
            report,
        )
        .map_err(|e| invalid(format!("--allow-private-address: {e}")))?,
    );
    if let Some(p) = &args.policy {
        paddock_store::presets::text(p).map_err(|e| invalid(format!("--policy: {e}")))?;
    }
    let agent = match &args.agent {
        None => None,
        Some(a) => Some(crate::agents::find(a).ok_or_else(|| {
            let names: Vec<String> = crate::agents::agents()
                .into_iter()
                .map(|a| a.name)
                .collect();
            invalid(format!(
                "unknown agent {a:?}: choose {} (a command goes after `--`)",
                names.join(", ")
            ))
        })?),
    };
    // The agent's own configuration and login directory of the host, at its place inside,
    // writable (logins and token refreshes persist).
    if args.agent_config {
        let agent = agent.as_ref().ok_or_else(|| {
            invalid("--agent-config goes with an agent preset (paddock run claude --agent-config)")
        })?;
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute())
            .ok_or_else(|| invalid("--agent-config: HOME is not set"))?;
        let (host, inside) = crate::agents::config_share(agent, &home).ok_or_else(|| {
            invalid(format!(
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
        report.note(&format!(
            "sharing {} writable at {}: what the agent writes there (settings, hooks) also applies when you run {} on this host",
            host.display(),
            inside.display(),
            agent.name
        ));
        mounts.push(Mount {
            host: share(&host, false)?,
            sandbox: AbsPath::try_from(inside).map_err(|e| invalid(e.to_string()))?,
            read_only: false,
        });
    }
    let mut ports = Vec::new();
    for p in &args.publish {
        for m in paddock_policy::parse_ports(p).map_err(|e| invalid(format!("--publish: {e}")))? {
            check_port_free(&m)?;
            ports.push(m);
        }
    }
    if let Some(agent) = &agent {
        for p in &agent.ports {
            for mut m in paddock_policy::parse_ports(p)
                .map_err(|e| invalid(format!("agent {}: {e}", agent.name)))?
            {
                m.auto = true;
                if !ports.iter().any(|have| have.host == m.host) {
                    ports.push(m);
                }
            }
        }
    }
    let upstream = upstream_proxy(args, report)?;
    if args.no_network && (args.ask_unlisted || args.ask_timeout.is_some()) {
        return Err(invalid(
            "--ask-unlisted and --ask-timeout go with the network; --no-network has none",
        ));
    }
    if let Some(t) = args.ask_timeout
        && !(1..=3600).contains(&t)
    {
        return Err(invalid(format!(
            "--ask-timeout {t}: give the seconds a held request waits, from 1 to 3600"
        )));
    }
    let docker = args.docker || agent.as_ref().is_some_and(|a| a.docker);
    if docker && args.no_sudo {
        return Err(invalid(
            "--docker gives the agent Docker's engine, which is root inside the sandbox; it cannot go with --no-sudo",
        ));
    }
    let v = Validated {
        upstream,
        ask_timeout_s: args.ask_timeout,
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
        docker,
    };
    // Whole-spec checks (clashing mount targets) before anything exists.
    spec_for(
        &v,
        v.name.clone().unwrap_or_else(fallback_name),
        "ns",
        args.image(),
        args.no_sudo,
    )
    .validate()
    .map_err(|e| invalid(e.to_string()))?;
    Ok(v)
}

pub(crate) fn spec_for(
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
        ask_timeout_s: v.ask_timeout_s,
        docker: v.docker,
    }
}

/// The upstream proxy a new run's settings get: `--upstream-proxy`, else the host's proxy
/// variables as they are now.
fn upstream_proxy(args: &RunRequest, report: &dyn Reporter) -> Result<Option<UpstreamProxy>> {
    if args.no_network {
        return Ok(None);
    }
    let env = |k: &str| std::env::var(k).ok();
    match &args.upstream_proxy {
        Some(flag) => UpstreamProxy::from_flag(flag, env)
            .map_err(|e| invalid(format!("--upstream-proxy: {e}"))),
        None => {
            let found = UpstreamProxy::from_env(env).map_err(|e| {
                invalid(format!(
                    "{e} (from this shell's proxy variables; fix them, or pass --upstream-proxy none or --upstream-proxy URL)"
                ))
            })?;
            if let Some(u) = &found
                && report.interactive()
            {
                report.note(&format!(
                    "allowed connections go on through the upstream proxy {u} (from this shell's proxy variables; --upstream-proxy none ignores them)"
                ));
            }
            Ok(found)
        }
    }
}

/// Refuses a host port that is taken now (the check is repeated when the sandbox starts).
pub fn check_port_free(m: &paddock_policy::PortMap) -> Result<()> {
    match std::net::TcpListener::bind((m.addr, m.host)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(invalid(format!(
            "port {}:{} is already in use on the host; choose another with -p HOST_PORT:{}",
            m.addr, m.host, m.sandbox
        ))),
        Err(e) => Err(invalid(format!(
            "cannot listen on {}:{}: {e}",
            m.addr, m.host
        ))),
    }
}

/// The file in the state directory that holds the last `auto` backend note shown.
pub(crate) const AUTO_NOTE: &str = "auto-backend-note";

/// Whether `note` differs from the one recorded in `marker` (then it is recorded): a note is
/// shown once, and again when it changes. A marker that cannot be written shows it every time.
pub(crate) fn note_is_new(marker: &Path, note: &str) -> bool {
    if std::fs::read_to_string(marker).is_ok_and(|had| had == note) {
        return false;
    }
    let _ = std::fs::write(marker, note);
    true
}

/// Why sandbox `name`, whose workspace is `had`, is not run on `asked`, and what to do.
pub(crate) fn moved_workspace(name: &SandboxName, had: &AbsPath, asked: &AbsPath) -> String {
    format!(
        "sandbox {name} belongs to workspace {had}, not {asked}; run it there (-w {had}), choose another --name for {asked}, or `paddock rm {name}` first"
    )
}

/// Refuses a CPU or memory limit beyond this host's (it could never be reached: a slip).
pub fn check_host_limits(limits: &Limits) -> Result<()> {
    limits
        .check_host(&paddock_core::host_capacity())
        .map_err(|e| invalid(e.to_string()))
}

/// Parses an optional flag value; a bad value is a usage error naming the flag.
pub fn parse_flag<T, E: std::fmt::Display>(
    flag: &str,
    value: Option<&str>,
    parse: impl FnOnce(&str) -> std::result::Result<T, E>,
) -> Result<Option<T>> {
    value
        .map(parse)
        .transpose()
        .map_err(|e| invalid(format!("{flag}: {e}")))
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
pub fn workspace_label(workspace: &AbsPath, max: usize) -> String {
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

pub(crate) fn generated_name(workspace: &AbsPath) -> SandboxName {
    let base = workspace_label(workspace, 32);
    let base = if base.is_empty() { "sandbox" } else { &base };
    // The sanitised base always satisfies the naming rule; the fallback is for safety only.
    format!("{base}-{}", random_suffix())
        .parse()
        .unwrap_or_else(|_| fallback_name())
}

/// A name that always satisfies the naming rule.
pub fn fallback_name() -> SandboxName {
    "sandbox".parse().unwrap_or_else(|_| std::process::abort())
}

/// `-e NAME=VALUE` values.
pub fn parse_env(values: &[String]) -> Result<Vec<EnvVar>> {
    values
        .iter()
        .map(|e| e.parse::<EnvVar>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))
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
