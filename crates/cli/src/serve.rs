//! `paddock serve`: the HTTP API (crates/api) where the flags say, until SIGINT or SIGTERM.

use std::io::Write;

use anyhow::{Context, Result};
use paddock_api::{ListenConfig, Server, TlsFiles};
use paddock_core::Dirs;

use crate::cli::ServeArgs;
use crate::error::usage;

pub fn serve(args: ServeArgs) -> Result<i32> {
    let dirs = Dirs::from_env()?;
    dirs.ensure()?;
    let config = match args.listen {
        Some(addr) => ListenConfig::Tcp {
            addr,
            token_file: dirs.api_token(),
            tls: args
                .tls_cert
                .zip(args.tls_key)
                .map(|(cert, key)| TlsFiles { cert, key }),
        },
        None => {
            let socket = match args.socket {
                Some(socket) => socket,
                None => {
                    dirs.ensure_api_dir()?;
                    dirs.api_socket()
                }
            };
            ListenConfig::Unix { socket }
        }
    };
    // Before anything is bound or made.
    config.check().map_err(|e| usage(e.to_string()))?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let shutdown =
            paddock_api::shutdown_signal().context("cannot handle SIGINT and SIGTERM")?;
        let server = Server::bind(config).await?;
        println!("paddock: serving the API on {}", server.endpoint());
        std::io::stdout().flush()?;
        let (app, _) = paddock_api::api(dirs);
        server.run(app, shutdown).await;
        Ok(0)
    })
}

/// `paddock mcp`: the MCP server on stdin and stdout. The protocol gets a duplicate of stdout,
/// and stdout itself becomes stderr, so that nothing else this process or a program it starts
/// prints (an image build's tools) can break the protocol's stream.
pub fn mcp() -> Result<i32> {
    let dirs = Dirs::from_env()?;
    dirs.ensure()?;
    let protocol = rustix::io::dup(std::io::stdout()).context("cannot duplicate stdout")?;
    rustix::stdio::dup2_stdout(std::io::stderr()).context("cannot redirect stdout")?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let out = tokio::fs::File::from_std(std::fs::File::from(protocol));
        paddock_api::mcp::serve(
            paddock_api::sandboxes::ApiState::new(dirs),
            (tokio::io::stdin(), out),
        )
        .await
        .context("the MCP server failed")?;
        Ok(0)
    })
}

/// The runtime both servers run on: two workers (blocking work, such as a sandbox's start, goes
/// to tokio's blocking pool).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the server's runtime")
}
