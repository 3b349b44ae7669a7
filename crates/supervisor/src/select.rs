//! Choosing a backend, by probing or by a sandbox's record: the rest of Paddock never names one.

use paddock_core::Backend;
use paddock_gvisor::GvisorBackend;
use paddock_ns::NsBackend;
use paddock_vm::VmBackend;

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

fn usable(b: &dyn Backend) -> Result<(), SelectError> {
    let probe = b.probe();
    if probe.usable() {
        Ok(())
    } else {
        Err(SelectError::Unusable {
            backend: b.id().into(),
            reason: probe.reason().unwrap_or_default(),
        })
    }
}

/// The backend `id` names (a sandbox's recorded one), made without probing: work on a sandbox
/// that is not running (removing, resetting, resizing its layer) must not need its backend to
/// be usable here.
pub fn backend(id: &str) -> Result<Box<dyn Backend>, SelectError> {
    Ok(match id {
        "ns" => Box::new(NsBackend::new()),
        "gvisor" => Box::new(GvisorBackend::new(VmBackend::new().kvm().works)),
        "vm" => Box::new(VmBackend::new()),
        _ => return Err(SelectError::Unknown(id.to_owned())),
    })
}

/// Every backend this build has, made without probing (for work each one may have a part in,
/// such as preparing a new image).
pub fn backends() -> Vec<Box<dyn Backend>> {
    backend_ids()
        .iter()
        .filter_map(|id| backend(id).ok())
        .collect()
}

/// Resolves `requested` (`auto` or an id) to a backend that works here, and says why.
pub fn select(requested: &str) -> Result<(Box<dyn Backend>, String), SelectError> {
    check_name(requested)?;
    match requested {
        "gvisor" => {
            let gvisor = GvisorBackend::new(VmBackend::new().kvm().works);
            usable(&gvisor)?;
            let platform = gvisor
                .runsc_info()
                .map_or("systrap", |i| i.platform.as_str());
            Ok((
                Box::new(gvisor),
                format!("requested with --backend gvisor (platform {platform})"),
            ))
        }
        "vm" => {
            let vm = VmBackend::new();
            usable(&vm)?;
            let kvm = vm.kvm();
            let why = if kvm.works {
                "requested with --backend vm (KVM)".to_owned()
            } else {
                format!(
                    "requested with --backend vm; no usable KVM ({}), so software emulation (TCG)",
                    kvm.detail
                )
            };
            Ok((Box::new(vm), why))
        }
        "auto" => {
            // The strongest boundary first, but a VM only where KVM really runs it.
            let vm = VmBackend::new();
            let kvm = vm.kvm();
            if kvm.works && usable(&vm).is_ok() {
                return Ok((
                    Box::new(vm),
                    format!("auto: vm, because KVM works here ({})", kvm.detail),
                ));
            }
            // Then a user-space kernel, where runsc works.
            let gvisor = GvisorBackend::new(kvm.works);
            let gvisor_probe = gvisor.probe();
            if gvisor_probe.usable() {
                return Ok((
                    Box::new(gvisor),
                    format!(
                        "auto: gvisor, because the vm backend needs working KVM ({})",
                        kvm.detail
                    ),
                ));
            }
            let ns = NsBackend::new();
            usable(&ns)?;
            Ok((
                Box::new(ns),
                format!(
                    "auto: ns, because the vm backend needs working KVM ({}) and gvisor cannot run here ({})",
                    kvm.detail,
                    gvisor_probe.reason().unwrap_or_default()
                ),
            ))
        }
        _ => {
            let ns = NsBackend::new();
            usable(&ns)?;
            Ok((Box::new(ns), "requested with --backend ns".to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_name_makes_that_backend() {
        let ids: Vec<&str> = backends().iter().map(|b| b.id()).collect();
        assert_eq!(ids, ["ns", "gvisor", "vm"]);
        for id in ["ns", "gvisor", "vm"] {
            assert_eq!(backend(id).map(|b| b.id()).ok(), Some(id));
        }
        for id in ["auto", "", "kvm"] {
            assert!(
                matches!(backend(id), Err(SelectError::Unknown(s)) if s == id),
                "{id}"
            );
        }
    }
}
