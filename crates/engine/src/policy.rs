//! Network rules as a request gives them, checked before any is stored, and the presets.

use std::time::Duration;

use paddock_core::Dirs;
use paddock_policy::net::{Action, PathGlob, PortSpec, Rule, Scope, parse_method};
use paddock_proxy::presets;
use paddock_proxy::registries::{HostConfig, RegistryHost, discover};
use paddock_store::Store;
use serde::{Deserialize, Serialize};

use crate::{Reporter, Result, invalid};

/// Rules to add: hosts (`HOST[:PORT]`, `*.HOST`, `**.HOST`), with an optional port, method
/// and path for all of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleRequest {
    /// The hosts.
    pub hosts: Vec<String>,
    /// The sandbox the rules are for (every sandbox when none).
    pub sandbox: Option<String>,
    /// A port or range.
    pub port: Option<String>,
    /// An HTTP method (the host is intercepted to see it).
    pub method: Option<String>,
    /// A path glob (the host is intercepted to see it).
    pub path: Option<String>,
    /// The hosts may resolve to private addresses.
    pub private_address: bool,
}

/// Builds rules from `allow`/`deny` arguments, all checked before any is stored.
pub fn rules_from(action: Action, args: &RuleRequest, report: &dyn Reporter) -> Result<Vec<Rule>> {
    let port = args
        .port
        .as_deref()
        .map(PortSpec::parse)
        .transpose()
        .map_err(|e| invalid(format!("--port: {e}")))?;
    let method = args
        .method
        .as_deref()
        .map(parse_method)
        .transpose()
        .map_err(|e| invalid(format!("--method: {e}")))?;
    let path = args
        .path
        .as_deref()
        .map(PathGlob::parse)
        .transpose()
        .map_err(|e| invalid(format!("--path: {e}")))?;
    args.hosts
        .iter()
        .map(|h| {
            let mut r = Rule::parse_target(action, h).map_err(|e| invalid(e.to_string()))?;
            if let Some(p) = port {
                if r.port != PortSpec::Default {
                    return Err(invalid(format!(
                        "{h}: give the port either in HOST:PORT or with --port, not both"
                    )));
                }
                r.port = p;
            }
            r.method = method.clone();
            r.path = path.clone();
            r.private_address = args.private_address;
            vet(&r, h, report)?;
            Ok(r)
        })
        .collect()
}

/// Refuses a rule a user wrote that allows every host or opens non-public addresses through
/// a range; says what a non-public address named exactly is.
pub fn vet(rule: &Rule, written: &str, report: &dyn Reporter) -> Result<()> {
    match rule.vet() {
        Ok(None) => Ok(()),
        Ok(Some(w)) => {
            report.warn(&format!("{written}: {w}"));
            Ok(())
        }
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// How long a discovery of the host's registries is reused for new sandboxes.
const REGISTRY_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// This host's package registries: discovered now when `fresh` (asking pip and npm takes most of
/// a second), else reused from the last discovery of the past day.
pub fn registries(dirs: &Dirs, fresh: bool) -> Vec<RegistryHost> {
    let cache = dirs.home().join("registries.json");
    if !fresh {
        let young = std::fs::metadata(&cache)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < REGISTRY_CACHE_TTL);
        if young
            && let Some(hosts) = std::fs::read(&cache)
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<RegistryHost>>(&b).ok())
        {
            return hosts;
        }
    }
    let hosts = discover(&HostConfig::from_env());
    if let Ok(json) = serde_json::to_vec_pretty(&hosts) {
        let tmp = cache.with_extension("json.tmp");
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, &cache);
        }
    }
    hosts
}

/// Applies a preset to a scope (with this host's registries for `balanced`; `fresh` reads them
/// again instead of reusing the last day's discovery).
pub fn apply_preset(
    dirs: &Dirs,
    store: &Store,
    scope: &Scope,
    name: &str,
    fresh: bool,
) -> Result<usize> {
    let regs = if presets::wants_registries(name).map_err(|e| invalid(e.to_string()))? {
        registries(dirs, fresh)
    } else {
        Vec::new()
    };
    let rules = presets::materialize(name, &regs).map_err(|e| invalid(e.to_string()))?;
    Ok(store.apply_preset(scope, name, &rules)?.len())
}
