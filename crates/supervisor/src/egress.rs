//! Starts the egress proxy for a running sandbox, on the listener its backend handed over.

use std::path::Path;
use std::time::Duration;

use paddock_core::{BackendError, Egress};
use paddock_proxy::audit::AuditWriter;
use paddock_proxy::resolve::{Resolver, TEST_OVERRIDE_ENV};
use paddock_proxy::rules::RuleSource;
use paddock_proxy::{Listener, ProxyConfig, ProxyHandle};

/// The proxy of one sandbox; stop it after the sandbox ends so every decision is written.
#[derive(Debug)]
pub struct RunningProxy {
    handle: ProxyHandle,
    writer: AuditWriter,
}

impl RunningProxy {
    /// Stops accepting, ends open tunnels and waits for the audit log to be written.
    pub fn stop(self) {
        self.handle.stop();
        self.writer.close();
    }
}

fn layer(message: String) -> BackendError {
    BackendError::Layer {
        layer: "network".into(),
        message,
    }
}

/// Starts the proxy for `sandbox` on `egress`.
pub fn start(
    db: &Path,
    sandbox: &str,
    egress: Option<Egress>,
    credentials: Option<std::sync::Arc<paddock_proxy::intercept::Credentials>>,
) -> Result<RunningProxy, BackendError> {
    let listener = match egress {
        Some(Egress::TcpListener(fd)) => Listener::Tcp(std::net::TcpListener::from(fd)),
        Some(Egress::UnixListener(fd)) => {
            Listener::Unix(std::os::unix::net::UnixListener::from(fd))
        }
        None => {
            return Err(layer(
                "the backend gave no egress channel; refusing to run without the proxy".into(),
            ));
        }
    };
    let resolver = match std::env::var(TEST_OVERRIDE_ENV) {
        Ok(spec) => Resolver::with_overrides(
            Resolver::parse_overrides(&spec)
                .map_err(|e| layer(format!("{TEST_OVERRIDE_ENV}: {e}")))?,
        ),
        Err(_) => Resolver::system(),
    };
    let rules =
        RuleSource::live(db, sandbox).map_err(|e| layer(format!("cannot read the rules: {e}")))?;
    let (writer, audit) =
        AuditWriter::start(db).map_err(|e| layer(format!("cannot open the audit log: {e}")))?;
    let handle = paddock_proxy::start(
        ProxyConfig {
            sandbox: sandbox.to_owned(),
            rules,
            audit,
            resolver,
            connect_timeout: Duration::from_secs(15),
            credentials,
        },
        vec![listener],
        2,
    )
    .map_err(|e| layer(e.to_string()))?;
    Ok(RunningProxy { handle, writer })
}
