//! Changing a sandbox that exists: back to its clean image (`reset`), its limits (`update`) and
//! its published ports (`ports`).

use paddock_core::SandboxName;
use paddock_policy::{Limits, PortMap};
use serde::{Deserialize, Serialize};

use crate::create::{check_host_limits, check_port_free, parse_flag};
use crate::sandboxes::{lock, running};
use crate::{Context, Engine, EngineError, Result, invalid};

/// New limits, as a user writes them (`0.5`, `512m`, `200`, `20g`); what is not given stays.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsChange {
    /// CPU limit (e.g. `0.5`, `2`).
    pub cpus: Option<String>,
    /// Memory limit (e.g. `512m`, `2g`).
    pub memory: Option<String>,
    /// Process and thread limit.
    pub pids: Option<String>,
    /// Size of the writable layer (e.g. `20g`); grows a stopped sandbox's layer (it cannot
    /// shrink: reset empties it).
    pub disk: Option<String>,
}

impl LimitsChange {
    /// The limits it asks for, checked against this host; at least one must be given.
    pub fn parse(&self) -> Result<Limits> {
        let new = Limits {
            cpus: parse_flag("cpus", self.cpus.as_deref(), str::parse)?,
            memory: parse_flag("memory", self.memory.as_deref(), Limits::parse_memory)?,
            pids: parse_flag("pids", self.pids.as_deref(), Limits::parse_pids)?,
            disk: parse_flag("disk", self.disk.as_deref(), Limits::parse_disk)?,
        };
        check_host_limits(&new)?;
        if new == Limits::default() {
            return Err(invalid(
                "nothing to change: give cpus, memory, pids or disk",
            ));
        }
        Ok(new)
    }
}

/// What an update did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Updated {
    /// The sandbox's limits now recorded.
    #[schema(value_type = Object)]
    pub limits: Limits,
    /// Whether the sandbox runs and took the new limits at once (all but `later`).
    pub live: bool,
    /// The limits that apply only at its next start, each with why.
    pub later: Vec<String>,
}

impl Engine {
    /// Empties sandbox `name`'s writable layer (back to its image). Refused while it runs, and
    /// while changes wait for review unless `drop_pending`. The workspace is not touched.
    pub fn reset(&self, name: &SandboxName, drop_pending: bool) -> Result<()> {
        let rec = self.record(name)?;
        let dir = self.dirs.sandbox(name);
        let _lock = lock(&dir, name)?;
        if !drop_pending && crate::trust::review_pending(&dir) {
            return Err(EngineError::Conflict(format!(
                "sandbox {name} holds changes that wait for review (`paddock diff {name}` shows them, `paddock apply {name}` writes them); force the reset to drop them"
            )));
        }
        paddock_supervisor::backend(&rec.spec.backend)?.reset_layer(&dir)?;
        // Review mode: the changes under review and their records (renamed first, so that a
        // removal cut short never leaves half a layer to be mounted).
        let review = paddock_core::review_dirs(&dir).root;
        if review.exists() {
            let doomed = dir.join(format!(".rm-review-{}", std::process::id()));
            std::fs::rename(&review, &doomed)
                .with_context(|| format!("cannot reset {}", review.display()))?;
            paddock_confine::user::remove_tree(&doomed)
                .with_context(|| format!("cannot remove {}", doomed.display()))?;
        }
        Ok(())
    }

    /// Records new limits for sandbox `name` and applies them at once where its backend can.
    /// A disk size changes the layer, so it needs the sandbox stopped; a refusal changes nothing.
    pub fn update(&self, name: &SandboxName, new: &Limits) -> Result<Updated> {
        let mut spec = self.record(name)?.spec;
        let backend = paddock_supervisor::backend(&spec.backend)?;
        // The layer changes size only while nothing uses it: under the sandbox's lock, before
        // the new limits are recorded.
        let _lock = match new.disk {
            Some(size) => {
                let dir = self.dirs.sandbox(name);
                let held = lock(&dir, name).map_err(|_| {
                    EngineError::Conflict(format!(
                        "a disk size changes a stopped sandbox's layer; `paddock stop {name}` first"
                    ))
                })?;
                match backend.resize_disk(&dir, size.0) {
                    Err(paddock_core::BackendError::Layer { message, .. }) => {
                        return Err(invalid(format!("disk: {message}")));
                    }
                    r => r?,
                }
                spec.limits.disk = Some(size);
                held
            }
            None => None,
        };
        spec.limits.cpus = new.cpus.or(spec.limits.cpus);
        spec.limits.memory = new.memory.or(spec.limits.memory);
        spec.limits.pids = new.pids.or(spec.limits.pids);
        self.store.update_spec(&spec)?;
        // (With a disk size the lock is ours, so it is stopped.)
        if new.disk.is_some() || !running(&self.dirs, name) {
            return Ok(Updated {
                limits: spec.limits,
                live: false,
                later: Vec::new(),
            });
        }
        let later = backend.update_limits(name, new);
        Ok(Updated {
            limits: spec.limits,
            live: true,
            later,
        })
    }

    /// Sandbox `name`'s published ports.
    pub fn ports(&self, name: &SandboxName) -> Result<Vec<PortMap>> {
        Ok(self.record(name)?.spec.ports)
    }

    /// Publishes `maps` for sandbox `name`: kept with it, and opened now if it runs. Each is
    /// recorded once it is open, so a refusal keeps the ones before it.
    pub fn publish(&self, name: &SandboxName, maps: &[PortMap]) -> Result<Vec<PortMap>> {
        let mut spec = self.record(name)?.spec;
        let live = running(&self.dirs, name);
        for m in maps {
            if spec
                .ports
                .iter()
                .any(|have| have.host == m.host && have.addr == m.addr)
            {
                return Err(EngineError::Conflict(format!(
                    "port {}:{} is already published for {name}",
                    m.addr, m.host
                )));
            }
            if live {
                use paddock_supervisor::control::ControlError;
                match self.control(name).publish(*m) {
                    Ok(()) => {}
                    Err(ControlError::Refused { message, .. }) => return Err(invalid(message)),
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("the supervisor of {name} did not answer"));
                    }
                }
            } else {
                check_port_free(m)?;
            }
            spec.ports.push(*m);
            self.store.update_spec(&spec)?;
        }
        Ok(spec.ports)
    }

    /// Stops publishing host ports `hosts` of sandbox `name` (closed now if it runs).
    pub fn unpublish(&self, name: &SandboxName, hosts: &[u16]) -> Result<Vec<PortMap>> {
        let mut spec = self.record(name)?.spec;
        if let Some(host) = hosts
            .iter()
            .find(|h| !spec.ports.iter().any(|m| m.host == **h))
        {
            return Err(EngineError::NotFound(format!(
                "port {host} is not published for {name}"
            )));
        }
        let live = running(&self.dirs, name);
        for host in hosts {
            spec.ports.retain(|m| m.host != *host);
            if live {
                // Gone already when the sandbox stopped meanwhile: nothing to close.
                let _ = self.control(name).unpublish(*host);
            }
            self.store.update_spec(&spec)?;
        }
        Ok(spec.ports)
    }

    fn control(&self, name: &SandboxName) -> paddock_supervisor::control::Client {
        paddock_supervisor::control::Client::new(&self.dirs.control_socket(name), name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_parsed_and_checked() {
        let none = LimitsChange::default().parse().unwrap_err();
        assert!(matches!(none, EngineError::Invalid(_)), "{none}");
        let bad = LimitsChange {
            memory: Some("lots".into()),
            ..LimitsChange::default()
        }
        .parse()
        .unwrap_err();
        assert!(bad.to_string().starts_with("memory: "), "{bad}");
        let small = LimitsChange {
            memory: Some("1m".into()),
            ..LimitsChange::default()
        };
        assert!(small.parse().is_err());
        let ok = LimitsChange {
            pids: Some("200".into()),
            memory: Some("512m".into()),
            ..LimitsChange::default()
        }
        .parse()
        .unwrap();
        assert_eq!(ok.pids, Some(200));
        assert_eq!(ok.memory.map(|m| m.0), Some(512 << 20));
        assert!(ok.cpus.is_none() && ok.disk.is_none());
        let unknown: std::result::Result<LimitsChange, _> = serde_json::from_str(r#"{"cpu": "1"}"#);
        assert!(unknown.is_err());
    }
}
