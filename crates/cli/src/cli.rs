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
    /// Build, list and remove images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Show what this host supports, what is missing and how to fix it.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print the seccomp rule table with the reason for each rule.
        #[arg(long)]
        seccomp: bool,
    },
    /// List sandboxes.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove sandboxes and their writable layers (the workspace is untouched).
    Rm {
        /// Sandbox names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Do not fail when a sandbox does not exist.
        #[arg(short, long)]
        force: bool,
    },
    /// Reset a sandbox to the clean image (deletes its writable layer; the workspace is untouched).
    Reset {
        /// Sandbox name.
        name: String,
    },
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
    /// Sandbox name (an existing stopped sandbox of this name is reused with its layer).
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
    /// Set an environment variable inside: NAME=VALUE. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// User inside: agent (default), root, or a uid.
    #[arg(short, long, default_value = "agent")]
    pub user: String,
    /// Set no_new_privs for every process (sudo inside stops working).
    #[arg(long)]
    pub no_sudo: bool,
    /// Remove the sandbox when the command exits.
    #[arg(long)]
    pub rm: bool,
    /// Never allocate a terminal, even when stdin and stdout are terminals.
    #[arg(short = 'T', long)]
    pub no_tty: bool,
    /// The command (default: bash).
    #[arg(last = true, value_name = "COMMAND")]
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
