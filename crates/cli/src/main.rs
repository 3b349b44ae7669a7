//! `paddock`: the command line.

mod agent_cmd;
mod branch;
mod branch_plan;
mod cli;
mod commands;
mod commits;
mod error;
mod hostgit;
mod inspect;
mod lifecycle;
mod policy;
mod prune;
mod review;
mod review_helper;
mod review_tui;
mod run;
mod secret;
mod serve;

use clap::FromArgMatches;

/// Whether `cmd` only prints and ends: not one that supervises or relays a sandbox's command,
/// whose output pipe closing must not end the sandbox with it.
fn prints_and_ends(cmd: &cli::Cmd) -> bool {
    !matches!(
        cmd,
        cli::Cmd::Run(_)
            | cli::Cmd::Exec(_)
            | cli::Cmd::Shell { .. }
            | cli::Cmd::Attach { .. }
            | cli::Cmd::Supervise { .. }
            | cli::Cmd::Serve(_)
            | cli::Cmd::Mcp
    )
}

fn main() {
    // The egress proxy's own process (started by the supervisor, never by hand): before
    // anything else, so it starts with nothing but what its parent sends.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(paddock_supervisor::egress::WORKER_ARG))
    {
        std::process::exit(paddock_supervisor::egress_worker::main());
    }
    // The relay process of a command's streams (started by the supervisor): the same.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(paddock_confine::relay::RELAY_ARG))
    {
        std::process::exit(paddock_confine::relay::main());
    }
    // The review helper (started by `diff`, `apply`, the supervisor): it confines itself
    // before it reads a byte of a sandbox's layer.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("__review")) {
        std::process::exit(review_helper::main(std::env::args_os().skip(2).collect()));
    }
    // One command of `paddock serve`'s exec, with streams of its own.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(paddock_engine::exec::EXEC_ARG))
    {
        let args: Vec<_> = std::env::args_os().skip(2).collect();
        std::process::exit(paddock_engine::exec::exec_main(&args, &error::Terminal));
    }
    let cli = match cli::Cli::from_arg_matches(&cli::command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if prints_and_ends(&cli.command) {
        // Read by `head` or a pager that stops early: end quietly, as other command-line tools
        // do, instead of failing a print with a panic (Rust starts with SIGPIPE ignored).
        // SAFETY: restores a signal's default action before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let code = match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => error::report(&e),
    };
    std::process::exit(code);
}
