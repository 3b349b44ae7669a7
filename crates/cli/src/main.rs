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
    let cli = cli::Cli::parse();
    let code = match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => error::report(&e),
    };
    std::process::exit(code);
}
