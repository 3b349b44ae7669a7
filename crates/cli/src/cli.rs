//! The command-line grammar.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Run AI coding agents (or any command) in a sandbox: full freedom inside, no reach outside.
#[derive(Debug, Parser)]
#[command(name = "paddock", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a command in a sandbox (created if needed); the current directory is the workspace.
    Run(RunArgs),
    /// Create a sandbox without starting it (same options as run).
    Create(RunArgs),
    /// Start a stopped sandbox in the background (its command, or a shell-less keep-alive).
    Start {
        /// Sandbox names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop running sandboxes: SIGTERM to the command, then SIGKILL after the grace period.
    Stop {
        /// Sandbox names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
    },
    /// Show the output of a sandbox started in the background, and its supervisor's messages.
    Logs {
        /// Sandbox name.
        name: String,
        /// Keep printing while the sandbox runs.
        #[arg(short, long)]
        follow: bool,
    },
    /// Change a sandbox's limits (applied at once where the backend can: ns and gvisor cgroups;
    /// otherwise at the next start).
    Update {
        /// Sandbox name.
        name: String,
        /// CPU limit (e.g. 0.5, 2).
        #[arg(long)]
        cpus: Option<String>,
        /// Memory limit (e.g. 512m, 2g).
        #[arg(long)]
        memory: Option<String>,
        /// Process/thread limit.
        #[arg(long)]
        pids: Option<String>,
        /// Size of the writable layer (e.g. 20g); grows a stopped sandbox's layer (it cannot
        /// shrink: reset empties it).
        #[arg(long)]
        disk: Option<String>,
    },
    /// List, publish or unpublish ports: host 127.0.0.1:PORT forwarded to a port inside.
    Ports {
        /// Sandbox name.
        name: String,
        /// Publish [ADDR:][HOST_PORT:]SANDBOX_PORT or a range (repeatable; kept with the
        /// sandbox, and opened now if it runs).
        #[arg(long, value_name = "SPEC")]
        publish: Vec<String>,
        /// Stop publishing HOST_PORT (repeatable).
        #[arg(long, value_name = "HOST_PORT")]
        unpublish: Vec<u16>,
    },
    /// Show everything known about a sandbox (times in local time with their age).
    Inspect {
        /// Sandbox name.
        name: String,
        /// Print JSON (Unix times; the environment's values too).
        #[arg(long)]
        json: bool,
    },
    /// Remove stopped sandboxes: every one, or those the filters pick (filters combine); and
    /// leftovers of interrupted removals.
    Prune {
        /// Do not ask.
        #[arg(short, long)]
        force: bool,
        /// Only sandboxes whose workspace is DIR or lies inside it (DIR need not exist any more).
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// Only sandboxes not used for DURATION (e.g. 30m, 12h, 7d, 2w): last started that long
        /// ago, or, never started, created that long ago.
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
    },
    #[command(hide = true, name = "__supervise")]
    Supervise {
        /// Sandbox name.
        name: String,
    },
    /// Attach this terminal to a background sandbox's command (started with -t or as an agent);
    /// Ctrl-P Ctrl-Q detaches and leaves it running.
    Attach {
        /// Sandbox name.
        name: String,
    },
    /// Run a command in a running sandbox (several may run at once; the exit status and
    /// signals pass through).
    Exec(ExecArgs),
    /// Open an interactive shell in a running sandbox.
    Shell {
        /// Sandbox name.
        name: String,
        /// User inside: agent (default), root, or a uid.
        #[arg(short, long)]
        user: Option<String>,
    },
    /// Build, list and remove images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Prepare the host for an ordinary user (as root, once): subordinate ids, cgroup
    /// delegation, /dev/kvm.
    #[command(subcommand)]
    System(SystemCmd),
    /// Show what this host supports, what is missing and how to fix it.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print the seccomp rule table with the reason for each rule.
        #[arg(long)]
        seccomp: bool,
    },
    /// List running sandboxes (with --all, stopped ones too).
    Ls {
        /// Also list stopped sandboxes.
        #[arg(short, long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove sandboxes and their writable layers (the workspace is untouched).
    Rm {
        /// Sandbox names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Stop running ones first, and do not fail when a sandbox does not exist.
        #[arg(short, long)]
        force: bool,
    },
    /// Reset a sandbox to the clean image (deletes its writable layer; the workspace is untouched).
    Reset {
        /// Sandbox name.
        name: String,
    },
    /// Show what the sandbox's last run changed in the workspace that the host may run (CI
    /// files, build files, git hooks and config, editor tasks, agent settings, executable bits,
    /// symlinks leading out).
    Trust {
        /// Sandbox name.
        name: String,
    },
    /// Network rules, presets, checks and the audit log.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Credentials kept on the host and injected by the proxy (the sandbox sees placeholders).
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Print shell completions.
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workspace directory, shared read-write at the same path (default: the current directory).
    #[arg(short, long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Share a host path: HOST[:SANDBOX][:ro|:rw]. Repeatable.
    #[arg(long = "mount", value_name = "SPEC")]
    pub mounts: Vec<String>,
    /// Sandbox name (an existing stopped sandbox of this name is reused with its layer, in its
    /// own workspace only).
    #[arg(long)]
    pub name: Option<String>,
    /// Isolation backend: auto, ns, gvisor, vm.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Image.
    #[arg(long, default_value = paddock_core::DEFAULT_IMAGE)]
    pub image: String,
    /// CPU limit (e.g. 0.5, 2).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Memory limit (e.g. 512m, 2g).
    #[arg(long)]
    pub memory: Option<String>,
    /// Process/thread limit.
    #[arg(long)]
    pub pids: Option<String>,
    /// Size of the sandbox's writable layer (e.g. 8g; at least 1g): an ext4 image for ns and
    /// gvisor, the disk layer for vm. Set when the layer is first made; `reset` drops it.
    #[arg(long)]
    pub disk: Option<String>,
    /// Set an environment variable inside: NAME=VALUE. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Publish a port: [ADDR:][HOST_PORT:]SANDBOX_PORT, or a range like 1455-1465 (the host
    /// side listens on 127.0.0.1 unless ADDR is given). Repeatable.
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// User inside: agent (default), root, or a uid.
    #[arg(short, long, default_value = "agent")]
    pub user: String,
    /// Set no_new_privs for every process (sudo inside stops working).
    #[arg(long)]
    pub no_sudo: bool,
    /// Remove the sandbox when the command exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background (the command, or a keep-alive without one); prints the name.
    /// `paddock exec`, `shell`, `logs` and `stop` reach it.
    #[arg(short, long)]
    pub detach: bool,
    /// With -d (or create): give the command a terminal, so `paddock attach` can reach it
    /// (an agent preset always gets one).
    #[arg(short = 't', long, conflicts_with = "no_tty")]
    pub tty: bool,
    /// Leave `.git/hooks` and `.git/config` writable inside (by default they are read-only,
    /// since the host's git runs the hooks and obeys the config).
    #[arg(long)]
    pub dangerously_allow_git_config: bool,
    /// Let --mount share a socket, device or FIFO (a Docker socket, say, gives the agent
    /// whatever listens behind it: with Docker's, the host).
    #[arg(long)]
    pub dangerously_mount_sockets: bool,
    /// Never allocate a terminal, even when stdin and stdout are terminals.
    #[arg(short = 'T', long)]
    pub no_tty: bool,
    /// Allow HOST[:PORT] for this sandbox (repeatable; kept with a named sandbox).
    #[arg(long = "allow", value_name = "HOST")]
    pub allow: Vec<String>,
    /// Network preset (deny-all, balanced, open); a new sandbox gets balanced.
    #[arg(long = "policy", value_name = "PRESET")]
    pub policy: Option<String>,
    /// No network at all: no proxy, only the sandbox's own loopback.
    #[arg(long, conflicts_with_all = ["allow", "policy"])]
    pub no_network: bool,
    /// An agent to run (claude, codex, gemini, shell): installed into the sandbox on first use
    /// and started in the workspace; arguments after `--` go to it.
    #[arg(value_name = "AGENT")]
    pub agent: Option<String>,
    /// The command (default: bash).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Sandbox name.
    pub name: String,
    /// Keep stdin open (without it the command reads nothing).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal (stdin and stdout must be terminals).
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable inside: NAME=VALUE. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// User inside: agent, root, or a uid (default: the sandbox's user).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside (default: the workspace).
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// The command.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build an image from the host's Debian apt sources.
    Build {
        /// Image name.
        #[arg(default_value = paddock_core::DEFAULT_IMAGE)]
        name: String,
        /// Rebuild if it exists.
        #[arg(long)]
        force: bool,
        /// Debian suite (default: the host's, or bookworm).
        #[arg(long)]
        suite: Option<String>,
        /// Mirror URL (default: the host's apt sources).
        #[arg(long)]
        mirror: Option<String>,
    },
    /// List images.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image.
    Rm {
        /// Image name.
        name: String,
    },
}

/// Hosts and the optional port/method/path of new rules.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Host patterns: api.example.com, *.example.com (one label), **.example.com (any depth,
    /// and the name itself), 10.0.0.0/8, with an optional :PORT.
    #[arg(required = true, value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only this sandbox (default: every sandbox).
    #[arg(long)]
    pub sandbox: Option<String>,
    /// Port: a number or "any" (default: 80 for plain HTTP, 443 for HTTPS).
    #[arg(long)]
    pub port: Option<String>,
    /// Only this HTTP method (checked where the request is visible).
    #[arg(long)]
    pub method: Option<String>,
    /// Only paths matching this pattern ('*' matches any run of characters).
    #[arg(long)]
    pub path: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Store the secret of a built-in service (the value is read from a prompt without echo,
    /// or from stdin; never from the command line).
    Set {
        /// Service: anthropic, openai, gemini (google), mistral, groq, xai, github.
        service: String,
        /// Only for this sandbox (it overrides a global secret of the same name).
        #[arg(long)]
        sandbox: Option<String>,
    },
    /// Store a secret for another host (value from a prompt or stdin).
    SetCustom {
        /// Its name.
        name: String,
        /// The host it belongs to (exact name; the only host that ever receives it).
        #[arg(long)]
        host: String,
        /// Set this header to the value in every request to the host.
        #[arg(long, conflicts_with = "placeholder")]
        header: Option<String>,
        /// Written before the value in the header (e.g. "Bearer ").
        #[arg(long, requires = "header", default_value = "")]
        prefix: String,
        /// Replace the placeholder wherever the client puts it in a request to the host.
        #[arg(long)]
        placeholder: bool,
        /// Variables that hold the placeholder inside the sandbox (repeatable).
        #[arg(long = "env", value_name = "VAR")]
        env: Vec<String>,
        /// Only for this sandbox.
        #[arg(long)]
        sandbox: Option<String>,
    },
    /// List secrets: names, bound hosts and variables, never values.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret.
    Rm {
        /// Its name.
        name: String,
        /// The sandbox it was stored for (default: the global one).
        #[arg(long)]
        sandbox: Option<String>,
    },
}

/// `paddock system` subcommands.
#[derive(Debug, Subcommand)]
pub enum SystemCmd {
    /// Give USER what running sandboxes without root takes: the distribution's newuidmap and
    /// newgidmap, 65,536 subordinate uids and gids, a cgroup subtree of their own for limits,
    /// access to /dev/kvm. Changes only what is missing; run it again after a reboot.
    Setup {
        /// The user (default: the one who ran sudo).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// List rules (with --sandbox: the global ones and that sandbox's).
    Ls {
        /// Only rules that apply to this sandbox.
        #[arg(long)]
        sandbox: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Allow hosts.
    Allow(RuleArgs),
    /// Deny hosts (an explicit deny beats every allow).
    Deny(RuleArgs),
    /// Remove rules by id.
    Rm {
        /// Rule ids (from `policy ls`).
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Show the decision for a URL and the rule that makes it, without sending anything.
    /// Exits 0 when allowed, 1 when denied.
    Check {
        /// http://host[:port]/path, https://host[:port], or host[:port] (as HTTPS).
        url: String,
        /// Decide with this sandbox's rules (default: the global rules only).
        #[arg(long)]
        sandbox: Option<String>,
        /// Method of a plain-HTTP request (default GET).
        #[arg(long)]
        method: Option<String>,
    },
    /// Apply a preset (replaces the rules of the previous preset, keeps rules you added).
    Preset {
        /// deny-all, balanced or open.
        name: String,
        /// Only this sandbox (default: global).
        #[arg(long)]
        sandbox: Option<String>,
    },
    /// List the presets, or print one.
    Presets {
        /// The preset to print.
        name: Option<String>,
    },
    /// Show the audit log: every decision the proxy made.
    Log {
        /// Only this sandbox.
        #[arg(long)]
        sandbox: Option<String>,
        /// Only denials.
        #[arg(long)]
        denied: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// At most this many (the newest; default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Keep printing new decisions.
        #[arg(short, long)]
        follow: bool,
    },
    /// Add rules from a TOML file (checked whole first: an error changes nothing).
    Import {
        /// The file.
        file: PathBuf,
        /// Put every rule in this sandbox's scope.
        #[arg(long)]
        sandbox: Option<String>,
        /// Replace the rules you added before (preset rules are kept).
        #[arg(long)]
        replace: bool,
    },
    /// Print rules as a TOML file.
    Export {
        /// Only the rules that apply to this sandbox.
        #[arg(long)]
        sandbox: Option<String>,
    },
}
