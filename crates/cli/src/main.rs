//! `paddock`: the command line.

mod agents;
mod cli;
mod commands;
mod error;
mod lifecycle;
mod policy;
mod secret;

use clap::Parser;

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
    let cli = cli::Cli::parse();
    let code = match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => error::report(&e),
    };
    std::process::exit(code);
}
