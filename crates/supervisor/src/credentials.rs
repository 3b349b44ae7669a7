//! Credentials for one run: the secrets that apply to the sandbox, its CA, the trust store that
//! makes clients inside accept the proxy's certificates, and the placeholder variables.

use std::path::Path;

use paddock_core::{BackendError, TRUST_STORE};
use paddock_proxy::channel::CredentialSettings;
use paddock_proxy::intercept::{Binding, Put, SandboxCa, Secret};
use paddock_secrets::{Entry, Injection, SecretStore};

/// The plain bindings of secret `e` for the proxy: one per host it is bound to.
fn bindings(e: &Entry) -> Vec<Binding> {
    e.inject
        .iter()
        .map(|i| Binding {
            host: i.host().to_owned(),
            name: e.name.clone(),
            put: match i {
                Injection::Header { header, prefix, .. } => Put::Header {
                    header: header.clone(),
                    prefix: prefix.clone(),
                },
                Injection::Basic { user, .. } => Put::Basic { user: user.clone() },
                Injection::Placeholder { .. } => Put::Placeholder,
            },
            placeholder: e.placeholder.clone(),
            value: Secret::new(e.value.expose().to_owned()),
        })
        .collect()
}

/// What a run with credentials needs.
#[derive(Debug)]
pub struct Prepared {
    /// For the proxy process: the CA's key and the secrets that apply.
    pub credentials: CredentialSettings,
    /// Variables for the command: placeholders and the trust-store pointers.
    pub env: Vec<(String, String)>,
    /// The sandbox's CA, for its trust store.
    pub ca_pem: String,
}

/// The variables that point clients with trust stores of their own (Node, Python's requests,
/// curl builds, git) at the sandbox's trust store, when it holds more than the image's.
fn trust_env() -> Vec<(String, String)> {
    [
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ]
    .into_iter()
    .map(|var| (var.to_owned(), TRUST_STORE.to_owned()))
    .collect()
}

fn layer(message: String) -> BackendError {
    BackendError::Layer {
        layer: "credentials".into(),
        message,
    }
}

/// Prepares the credentials of sandbox `name`. Every sandbox with the network has its CA, so
/// that the proxy can intercept a host whose rules limit methods or paths (rules may change
/// while it runs) and explain a refused HTTPS request over TLS; the sandbox's trust store holds
/// it, which curl, git, Python and OpenSSL read, and Node.js is pointed at it. The variables
/// that make other clients read that store (`REQUESTS_CA_BUNDLE`, ...) are set only when a
/// secret applies: they would override a client's own choice (`pip --cert`).
pub fn prepare(
    store: &SecretStore,
    name: &str,
    sandbox_dir: &Path,
) -> Result<Prepared, BackendError> {
    let entries = store
        .for_sandbox(name)
        .map_err(|e| {
            layer(format!(
                "cannot read the secrets: {e}; restore the key file, or move {} aside to run without secrets",
                store.path().display()
            ))
        })?;
    let ca = SandboxCa::load_or_create(&sandbox_dir.join("ca"), name)
        .map_err(|e| layer(format!("cannot make the sandbox's CA: {e}")))?;
    let mut env = Vec::new();
    for e in &entries {
        for var in &e.env {
            env.push((var.clone(), e.placeholder.clone()));
        }
    }
    if entries.is_empty() {
        env.push((
            "NODE_EXTRA_CA_CERTS".to_owned(),
            paddock_core::TRUST_STORE.to_owned(),
        ));
    } else {
        env.extend(trust_env());
    }
    let ca_pem = ca.pem().to_owned();
    let credentials = CredentialSettings {
        ca_key_pem: ca.key_pem(),
        bindings: entries.iter().flat_map(bindings).collect(),
    };
    Ok(Prepared {
        credentials,
        env,
        ca_pem,
    })
}
