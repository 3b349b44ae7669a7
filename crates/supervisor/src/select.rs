//! Choosing a backend by probing: the rest of Paddock never names one.

use paddock_core::Backend;
use paddock_ns::NsBackend;

/// Why no backend could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// not a backend name
    #[error("unknown backend {0:?}: choose auto, ns, gvisor or vm")]
    Unknown(String),
    /// a backend that this build does not have yet
    #[error("the {0} backend is not built yet; use --backend ns (or auto)")]
    NotBuilt(String),
    /// the backend exists but this host cannot run it
    #[error(
        "the {backend} backend cannot run here: {reason}; `paddock doctor` shows what is missing"
    )]
    Unusable {
        /// Backend id.
        backend: String,
        /// Why.
        reason: String,
    },
}

/// Backend names accepted by `--backend`.
pub fn backend_ids() -> &'static [&'static str] {
    &["auto", "ns", "gvisor", "vm"]
}

/// Checks a `--backend` value without probing.
pub fn check_name(requested: &str) -> Result<(), SelectError> {
    if backend_ids().contains(&requested) {
        Ok(())
    } else {
        Err(SelectError::Unknown(requested.to_owned()))
    }
}

/// Resolves `requested` (`auto` or an id) to a backend that works here, and says why.
pub fn select(requested: &str) -> Result<(Box<dyn Backend>, String), SelectError> {
    check_name(requested)?;
    match requested {
        "vm" | "gvisor" => Err(SelectError::NotBuilt(requested.to_owned())),
        _ => {
            let ns = NsBackend::new();
            let probe = ns.probe();
            if !probe.usable() {
                return Err(SelectError::Unusable {
                    backend: "ns".into(),
                    reason: probe.reason().unwrap_or_default(),
                });
            }
            let why = if requested == "auto" {
                "auto: ns is the only backend built so far (vm and gvisor come later) and it works here"
            } else {
                "requested with --backend ns"
            };
            Ok((Box::new(ns), why.to_owned()))
        }
    }
}
