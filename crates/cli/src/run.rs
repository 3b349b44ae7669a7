//! `paddock run` and `create`: the flags become the engine's [`RunRequest`], and its outcome
//! an exit status.

use std::io::IsTerminal;

use anyhow::Result;
use paddock_engine::{Mode as EngineMode, RunRequest};

use crate::cli::RunArgs;
use crate::error::usage;

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

/// The flags as the engine's request.
pub(crate) fn request(args: RunArgs) -> RunRequest {
    RunRequest {
        workspace: args.workspace,
        mounts: args.mounts,
        name: args.name,
        backend: Some(args.backend),
        image: Some(args.image),
        cpus: args.cpus,
        memory: args.memory,
        pids: args.pids,
        disk: args.disk,
        env: args.env,
        publish: args.publish,
        user: Some(args.user),
        no_sudo: args.no_sudo,
        rm: args.rm,
        tty: args.tty,
        review: args.review,
        dangerously_allow_git_config: args.dangerously_allow_git_config,
        dangerously_mount_sockets: args.dangerously_mount_sockets,
        allow: args.allow,
        allow_private_address: args.allow_private_address,
        agent_config: args.agent_config,
        no_host_ca: args.no_host_ca,
        policy: args.policy,
        no_network: args.no_network,
        upstream_proxy: args.upstream_proxy,
        ask_timeout: args.ask_timeout,
        ask_unlisted: args.ask_unlisted,
        agent: args.agent,
        docker: args.docker,
        command: args.command,
    }
}

pub(crate) fn run(args: RunArgs, mode: Mode) -> Result<i32> {
    if mode == Mode::Create && args.rm {
        return Err(usage("--rm makes no sense with create"));
    }
    let mode = match mode {
        Mode::Attached => EngineMode::Attached {
            tty: !args.no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
        },
        Mode::Detached => EngineMode::Detached,
        Mode::Create => EngineMode::Create,
    };
    let engine = paddock_engine::Engine::open()?;
    let report = crate::error::Terminal;
    let ran = engine.run(&request(args), mode, &report)?;
    let Some(outcome) = ran.outcome else {
        println!("{}", ran.name);
        return Ok(0);
    };
    for d in outcome.diagnostics.iter().chain(&outcome.limits) {
        eprintln!("paddock: {d}");
    }
    Ok(outcome.exit.status())
}
