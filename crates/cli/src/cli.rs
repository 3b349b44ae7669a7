//! The command-line grammar.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Run AI coding agents (or any command) in a sandbox: full freedom inside, no reach outside.
#[derive(Debug, Parser)]
#[command(
    name = "paddock",
    version,
    about,
    propagate_version = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

/// Examples at the end of `paddock --help`.
const EXAMPLES: &str = "\
Examples:
  paddock run claude                     an agent in a sandbox on the current directory
  paddock run --name work -- bash        a named sandbox: its installed packages persist
  paddock run -d --name web -p 3000:3000 -- npm run dev
                                         in the background, port 3000 on the host's loopback
  paddock exec web -- npm test           one more command in it; `paddock stop web` ends it
  paddock policy allow api.example.com   let every sandbox reach one more host
  paddock secret set anthropic           keep a key on the host; the sandbox sees a placeholder
  paddock doctor                         what this host supports and which backend auto picks";

/// Examples at the end of `paddock run --help`.
const RUN_EXAMPLES: &str = "\
Examples:
  paddock run                                  bash in a new sandbox on this directory
  paddock run codex -- --help                  an agent preset, arguments after `--` go to it
  paddock run --rm --memory 2g --cpus 2 -- make test
  paddock run codex --agent-config             codex with your ~/.codex (login) shared
  paddock run -w ~/proj --mount ~/notes:ro -- bash
  paddock run --no-network -- ./build.sh       no network at all
  paddock run --policy deny-all --allow api.example.com:443 -- ./sync.sh
  paddock run -d -t --name agent claude && paddock attach agent";

/// The groups `paddock --help` lists the commands in (every visible one, once).
pub const COMMAND_GROUPS: &[(&str, &[&str])] = &[
    (
        "Run and reach sandboxes",
        &[
            "run", "create", "start", "stop", "attach", "exec", "shell", "logs",
        ],
    ),
    (
        "Look after sandboxes",
        &[
            "ls", "inspect", "update", "ports", "trust", "reset", "rm", "prune",
        ],
    ),
    ("Review changes", &["diff", "apply", "discard", "review"]),
    ("Network & credentials", &["policy", "secret"]),
    (
        "Host, agents & images",
        &[
            "doctor",
            "agent",
            "image",
            "system",
            "serve",
            "mcp",
            "completions",
            "help",
        ],
    ),
];

/// The command line with `paddock --help` listing the commands by [`COMMAND_GROUPS`].
pub fn command() -> clap::Command {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut list = String::new();
    for (heading, names) in COMMAND_GROUPS {
        list.push_str(&format!("{heading}:\n"));
        for name in *names {
            let about = cmd
                .find_subcommand(name)
                .and_then(|c| c.get_about())
                .map(|a| a.to_string())
                .unwrap_or_else(|| {
                    "Print this message or the help of the given subcommand(s)".into()
                });
            list.push_str(&format!("  {name:<12} {about}\n"));
        }
        list.push('\n');
    }
    cmd.help_template(format!(
        "{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{list}Options:\n{{options}}{{after-help}}"
    ))
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a command in a sandbox (created if needed); the current directory is the workspace.
    #[command(after_help = RUN_EXAMPLES)]
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
    /// The agent cache: agents installed once for every sandbox (list, update, remove).
    #[command(subcommand)]
    Agent(AgentCmd),
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
        /// Stop running ones first, drop changes waiting for review without asking, and do not
        /// fail when a sandbox does not exist.
        #[arg(short, long)]
        force: bool,
    },
    /// Reset a sandbox to the clean image (deletes its writable layer, and in review mode the
    /// changes not yet applied, after asking; the workspace is untouched).
    Reset {
        /// Sandbox name.
        name: String,
        /// Do not ask before dropping changes waiting for review.
        #[arg(short, long)]
        force: bool,
    },
    /// Show what the sandbox's last run changed in the workspace that the host may run (CI
    /// files, build files, git hooks and config, editor tasks, agent settings, executable bits,
    /// symlinks leading out).
    Trust {
        /// Sandbox name.
        name: String,
    },
    /// Show what a review-mode sandbox changed, compared with the workspace as it is now
    /// (risky files first; conflicts marked), or the commits its agent made with git.
    Diff {
        /// Sandbox name.
        name: String,
        /// Only these files or directories (relative to the current directory inside the
        /// workspace, else to the workspace).
        #[arg(value_name = "PATH")]
        paths: Vec<std::ffi::OsString>,
        /// One line per change, with lines added and removed.
        #[arg(long, conflicts_with_all = ["name_only", "json"])]
        stat: bool,
        /// Only the changed paths, one per line.
        #[arg(long, conflicts_with = "json")]
        name_only: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// List the commits the agent made with git inside (reachable from the sandbox's HEAD)
        /// that the workspace's repository does not have, one line each.
        #[arg(long, conflicts_with_all = ["paths", "stat", "name_only", "json"])]
        commits: bool,
    },
    /// Write a review-mode sandbox's changes (all, or those under PATHs) to the workspace, each
    /// file whole or not at all; a file the host changed meanwhile is a conflict. With
    /// --branch, commit them to a new branch of the workspace's git repository instead.
    Apply {
        /// Sandbox name.
        name: String,
        /// Only these files or directories.
        #[arg(value_name = "PATH")]
        paths: Vec<std::ffi::OsString>,
        /// Overwrite conflicting files with the sandbox's version.
        #[arg(long, conflicts_with_all = ["merge", "branch"])]
        force: bool,
        /// Merge conflicting text files (three-way) where the merge is clean.
        #[arg(long, conflicts_with = "branch")]
        merge: bool,
        /// Commit the changes to BRANCH, a new branch of the workspace's repository (parent:
        /// HEAD), instead of writing them to the working tree; the working tree, the index and
        /// HEAD stay as they are, the changes stay in the sandbox. The host's git runs as the
        /// workspace's owner, with hooks and program-running configuration off. An existing
        /// branch is never moved.
        #[arg(long, value_name = "BRANCH")]
        branch: Option<String>,
        /// With --branch: make BRANCH point at the commits the agent made with git inside
        /// (the sandbox's HEAD), their objects copied into the host's repository.
        #[arg(long, requires = "branch", conflicts_with = "paths")]
        commits: bool,
    },
    /// Drop a stopped review-mode sandbox's changes (all, or those under PATHs).
    Discard {
        /// Sandbox name.
        name: String,
        /// Only these files or directories.
        #[arg(value_name = "PATH")]
        paths: Vec<std::ffi::OsString>,
        /// Do not ask before dropping every change.
        #[arg(short, long)]
        force: bool,
    },
    /// Go through a review-mode sandbox's changes in the terminal, file by file (accept,
    /// reject, skip, quit), then apply what you accepted.
    Review {
        /// Sandbox name.
        name: String,
    },
    /// Network rules, presets, checks and the audit log.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Credentials kept on the host and injected by the proxy (the sandbox sees placeholders).
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Serve the HTTP API on a unix socket only you can use, or on TCP with --listen.
    ///
    /// The socket (mode 0600) answers only connections of your own uid. Over TCP every request
    /// needs the bearer token, and an address that is not loopback needs TLS. Runs until
    /// SIGINT or SIGTERM, then removes its socket. `GET /v1/openapi.json` describes the API.
    Serve(ServeArgs),
    /// Serve the sandboxes as tools of a Model Context Protocol server on stdin and stdout,
    /// for an agent that runs outside a sandbox: make a sandbox, run commands in it, list,
    /// stop, start and delete sandboxes. Runs until the client closes its end.
    ///
    /// For example, in an MCP client's configuration: {"command": "paddock", "args": ["mcp"]}.
    Mcp,
    /// Print shell completions.
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

/// The groups of `run`'s options in its help.
const WORKSPACE: &str = "Workspace & files";
const SANDBOX: &str = "Sandbox";
const RESOURCES: &str = "Resources";
const NETWORK: &str = "Network";
const LIFECYCLE: &str = "Lifecycle";
const TERMINAL: &str = "Terminal";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workspace directory, shared read-write at the same path (default: the current directory).
    #[arg(short, long, value_name = "DIR", help_heading = WORKSPACE)]
    pub workspace: Option<PathBuf>,
    /// Share a host path: HOST[:SANDBOX][:ro|:rw]. Repeatable.
    #[arg(long = "mount", value_name = "SPEC", help_heading = WORKSPACE)]
    pub mounts: Vec<String>,
    /// Sandbox name (an existing stopped sandbox of this name is reused with its layer, in its
    /// own workspace only).
    #[arg(long, help_heading = SANDBOX)]
    pub name: Option<String>,
    /// Isolation backend: auto, ns, gvisor, vm.
    #[arg(long, default_value = "auto", help_heading = SANDBOX)]
    pub backend: String,
    /// Image.
    #[arg(long, default_value = paddock_core::DEFAULT_IMAGE, help_heading = SANDBOX)]
    pub image: String,
    /// A Docker Engine of the sandbox's own inside (`docker`, `docker compose`; never the
    /// host's): it starts with the sandbox, keeps images and volumes in its layer, and pulls
    /// through the egress proxy under the same rules. Its image is IMAGE-docker, built on first
    /// use (IMAGE itself if built with `image build --docker`). vm backend; kept with a named
    /// sandbox.
    #[arg(long, help_heading = SANDBOX)]
    pub docker: bool,
    /// CPU limit (e.g. 0.5, 2).
    #[arg(long, help_heading = RESOURCES)]
    pub cpus: Option<String>,
    /// Memory limit (e.g. 512m, 2g).
    #[arg(long, help_heading = RESOURCES)]
    pub memory: Option<String>,
    /// Process/thread limit.
    #[arg(long, help_heading = RESOURCES)]
    pub pids: Option<String>,
    /// Size of the sandbox's writable layer (e.g. 8g; at least 1g): an ext4 image for ns and
    /// gvisor, the disk layer for vm. Set when the layer is first made; `reset` drops it.
    #[arg(long, help_heading = RESOURCES)]
    pub disk: Option<String>,
    /// Set an environment variable inside: NAME=VALUE. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE", help_heading = SANDBOX)]
    pub env: Vec<String>,
    /// Publish a port: [ADDR:][HOST_PORT:]SANDBOX_PORT, or a range like 1455-1465 (the host
    /// side listens on 127.0.0.1 unless ADDR is given). Repeatable.
    #[arg(short = 'p', long = "publish", value_name = "SPEC", help_heading = NETWORK)]
    pub publish: Vec<String>,
    /// User inside: agent (default), root, or a uid.
    #[arg(short, long, default_value = "agent", help_heading = SANDBOX)]
    pub user: String,
    /// Set no_new_privs for every process (sudo inside stops working).
    #[arg(long, help_heading = SANDBOX)]
    pub no_sudo: bool,
    /// Remove the sandbox when the command exits.
    #[arg(long, help_heading = LIFECYCLE)]
    pub rm: bool,
    /// Run in the background (the command, or a keep-alive without one); prints the name.
    /// `paddock exec`, `shell`, `logs` and `stop` reach it.
    #[arg(short, long, help_heading = LIFECYCLE)]
    pub detach: bool,
    /// With -d (or create): give the command a terminal, so `paddock attach` can reach it
    /// (an agent preset always gets one).
    #[arg(short = 't', long, conflicts_with = "no_tty", help_heading = TERMINAL)]
    pub tty: bool,
    /// Review mode: the agent's changes to the workspace wait in the sandbox's layer until
    /// you apply them (`paddock diff`, `apply`, `discard`, `review`); the workspace does not
    /// change meanwhile. Kept with a named sandbox.
    #[arg(long, help_heading = WORKSPACE)]
    pub review: bool,
    /// Leave `.git/hooks` and `.git/config` writable inside (by default they are read-only,
    /// since the host's git runs the hooks and obeys the config).
    #[arg(long, help_heading = WORKSPACE)]
    pub dangerously_allow_git_config: bool,
    /// Let --mount share a socket, device or FIFO (a Docker socket, say, gives the agent
    /// whatever listens behind it: with Docker's, the host).
    #[arg(long, help_heading = WORKSPACE)]
    pub dangerously_mount_sockets: bool,
    /// Never allocate a terminal, even when stdin and stdout are terminals.
    #[arg(short = 'T', long, help_heading = TERMINAL)]
    pub no_tty: bool,
    /// Allow HOST[:PORT] for this sandbox (repeatable; kept with a named sandbox).
    #[arg(long = "allow", value_name = "HOST", help_heading = NETWORK)]
    pub allow: Vec<String>,
    /// Allow HOST[:PORT] even where it resolves to a private, reserved or carrier-grade NAT
    /// address (a company mirror); one host name, never a wildcard (repeatable). Loopback,
    /// link-local and metadata addresses are allowed only by naming the address.
    #[arg(long = "allow-private-address", value_name = "HOST", help_heading = NETWORK)]
    pub allow_private_address: Vec<String>,
    /// Share the agent preset's configuration and login directory of this host (~/.claude,
    /// ~/.codex, ~/.gemini) at its place inside, writable: logins and token refreshes persist,
    /// and what the agent writes there applies to the agent on the host too.
    #[arg(long, help_heading = WORKSPACE)]
    pub agent_config: bool,
    /// Do not trust the host's extra certificate authorities inside (by default a sandbox
    /// trusts the CAs the host trusts and the image lacks: a company's TLS-inspecting proxy, a
    /// private registry's CA; `paddock doctor` lists them).
    #[arg(long, help_heading = NETWORK)]
    pub no_host_ca: bool,
    /// Network preset (deny-all, balanced, open); a new sandbox gets balanced.
    #[arg(long = "policy", value_name = "PRESET", help_heading = NETWORK)]
    pub policy: Option<String>,
    /// No network at all: no proxy, only the sandbox's own loopback.
    #[arg(
        long,
        conflicts_with_all = ["allow", "allow_private_address", "policy", "upstream_proxy", "ask_unlisted", "ask_timeout"],
        help_heading = NETWORK
    )]
    pub no_network: bool,
    /// Send allowed connections on through this proxy of the host's network
    /// (http://[USER:PASSWORD@]HOST[:PORT]), or `none` for no upstream proxy. By default the
    /// host's HTTPS_PROXY, HTTP_PROXY and NO_PROXY, as set when the sandbox's settings are
    /// made (run, create). Paddock's rules still decide first.
    #[arg(long, value_name = "URL", help_heading = NETWORK)]
    pub upstream_proxy: Option<String>,
    /// Seconds a request an `ask` rule holds waits for your answer before it is denied
    /// (default 60).
    #[arg(long, value_name = "SECS", help_heading = NETWORK)]
    pub ask_timeout: Option<u32>,
    /// Ask instead of deny: a request to a host no rule names waits for your answer
    /// (`paddock policy approve`/`deny`; the run's terminal says what waits).
    #[arg(long, help_heading = NETWORK)]
    pub ask_unlisted: bool,
    /// An agent to run (claude, codex, gemini, shell): installed into the sandbox on first use
    /// and started in the workspace; arguments after `--` go to it.
    #[arg(value_name = "AGENT")]
    pub agent: Option<String>,
    /// The command (default: bash).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen on TCP ADDR (IP:PORT, e.g. 127.0.0.1:7300) instead of the unix socket. Every
    /// request needs the bearer token, made on first use in the state directory's `api-token`
    /// (mode 0600). An address that is not loopback needs --tls-cert and --tls-key as well.
    #[arg(long, value_name = "ADDR", conflicts_with = "socket")]
    pub listen: Option<std::net::SocketAddr>,
    /// With --listen: serve HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "PEM", requires_all = ["listen", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// With --listen: the certificate's private key (PEM).
    #[arg(long, value_name = "PEM", requires_all = ["listen", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// The unix socket's path (default: $XDG_RUNTIME_DIR/paddock/api.sock, else in the state
    /// directory); its directory must exist.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
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
        /// Extra Debian packages, besides the default set (comma-separated, repeatable). An
        /// image whose package list changed is rebuilt; one that has the same list is kept.
        #[arg(long, value_delimiter = ',', value_name = "PKG,...")]
        packages: Vec<String>,
        /// Extra Debian packages from a file: one or more per line, '#' starts a comment.
        #[arg(long, value_name = "FILE")]
        packages_file: Option<std::path::PathBuf>,
        /// Add Docker's engine and tools, for sandboxes run with --docker (the image
        /// IMAGE-docker that --docker uses is built this way on first use).
        #[arg(long)]
        docker: bool,
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

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// List the agent presets and what the cache holds of each.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install the newest version of an agent (sandboxes use it from their next start).
    Update {
        /// Agent: claude, codex, gemini.
        name: String,
        /// Backend of the install sandbox where ns does not run.
        #[arg(long, default_value = "auto")]
        backend: String,
    },
    /// Remove an agent from the cache (the next run installs it again).
    Rm {
        /// Agent: claude, codex, gemini.
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
    /// The host (one name, no wildcard) may resolve to a private, reserved or carrier-grade
    /// NAT address, such as a company mirror (allow rules only).
    #[arg(long)]
    pub private_address: bool,
}

/// `policy deny`: rules, or one waiting request.
#[derive(Debug, Args)]
pub struct DenyArgs {
    #[command(flatten)]
    pub rule: RuleArgs,
    /// With a request's number: also deny its host and port from now on (a rule for its
    /// sandbox).
    #[arg(long)]
    pub always: bool,
}

/// `policy approve`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("lasting").args(["once", "for_run", "always"])))]
#[command(group(clap::ArgGroup::new("shape").args(["host_only", "path"])))]
pub struct ApproveArgs {
    /// The request's number (from `policy pending`, or the notice that it waits).
    pub id: i64,
    /// Only the requests waiting now (the default): the next identical one asks again.
    #[arg(long)]
    pub once: bool,
    /// Add a rule for the sandbox's current run; it goes when the sandbox stops.
    #[arg(long)]
    pub for_run: bool,
    /// Add a rule that stays (until `policy rm`).
    #[arg(long)]
    pub always: bool,
    /// The rule is for this sandbox (default: the one that asked).
    #[arg(long, conflicts_with = "global")]
    pub sandbox: Option<String>,
    /// The rule is for every sandbox.
    #[arg(long)]
    pub global: bool,
    /// The rule covers every method and path on the host and port (by default it covers the
    /// request's method and path, where they were visible).
    #[arg(long)]
    pub host_only: bool,
    /// The rule covers paths starting with PREFIX.
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// The rule covers this method only.
    #[arg(long, value_name = "METHOD")]
    pub method: Option<String>,
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
    /// Deny hosts (an explicit deny beats every allow), or, given a request's number, deny
    /// that waiting request.
    Deny(DenyArgs),
    /// Ask before allowing hosts: a request no allow rule covers waits until you approve or
    /// deny it (`policy pending`, `approve`, `deny`). `ask '**' --port any` asks about every
    /// host no other rule names.
    Ask(RuleArgs),
    /// List the requests waiting for your answer.
    Pending {
        /// Only this sandbox's.
        #[arg(long)]
        sandbox: Option<String>,
        /// Keep printing requests as they come and go.
        #[arg(short, long)]
        follow: bool,
        /// Print JSON (with --follow: one object per line, each new request).
        #[arg(long)]
        json: bool,
    },
    /// Let a waiting request through: once (the default), for the sandbox's run, or always.
    Approve(ApproveArgs),
    /// Remove rules by id.
    Rm {
        /// Rule ids (from `policy ls`).
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Show the decision for a URL and the rule that makes it, as the proxy decides (an HTTPS
    /// host whose rules limit methods or paths: the request inside), without sending anything.
    /// Exits 0 when allowed, 1 when denied or when it would wait for your answer (ask).
    Check {
        /// http://host[:port]/path, https://host[:port]/path, or host[:port] (as HTTPS).
        url: String,
        /// Decide with this sandbox's rules (default: as in a new sandbox: the global rules and
        /// the preset it gets).
        #[arg(long)]
        sandbox: Option<String>,
        /// The request's method (default GET).
        #[arg(long)]
        method: Option<String>,
    },
    /// Apply a preset (replaces the rules of the previous preset, keeps rules you added).
    Preset {
        /// deny-all, balanced or open.
        name: String,
        /// End in an ask instead of a deny: a host no rule names waits for your answer.
        #[arg(long)]
        ask_unlisted: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_listed_in_one_group() {
        let cmd = command();
        let mut listed: Vec<&str> = COMMAND_GROUPS
            .iter()
            .flat_map(|(_, n)| n.iter().copied())
            .collect();
        listed.sort_unstable();
        let mut visible: Vec<&str> = cmd
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name())
            .chain(["help"])
            .collect();
        visible.sort_unstable();
        assert_eq!(listed, visible);
    }

    #[test]
    fn help_is_grouped_and_has_examples() {
        let mut cmd = command();
        let top = cmd.render_help().to_string();
        for heading in COMMAND_GROUPS.iter().map(|(h, _)| h) {
            assert!(top.contains(&format!("\n{heading}:\n")), "{top}");
        }
        assert!(top.contains("\nExamples:\n  paddock run claude"), "{top}");
        let run = cmd
            .find_subcommand_mut("run")
            .map(|r| r.render_help().to_string())
            .unwrap_or_default();
        for heading in [WORKSPACE, SANDBOX, RESOURCES, NETWORK, LIFECYCLE, TERMINAL] {
            assert!(run.contains(&format!("\n{heading}:\n")), "{run}");
        }
        assert!(run.contains("\nResources:\n      --cpus <CPUS>"), "{run}");
        assert!(run.contains("\nExamples:\n  paddock run "), "{run}");
    }
}
