//! Built-in presets: plain policy files shipped with Paddock, listed and printed by
//! `paddock policy presets`. `balanced` also takes in the package registries this host's own
//! package managers use, read when the preset is applied.

use paddock_policy::net::{Action, PortSpec, Rule};

use crate::policyfile::{self, FileError, PolicyFile};
use crate::registries::RegistryHost;

/// The preset new sandboxes get.
pub const DEFAULT: &str = "balanced";

/// Name and text of every built-in preset.
pub const PRESETS: &[(&str, &str)] = &[
    ("deny-all", include_str!("../presets/deny-all.toml")),
    ("balanced", include_str!("../presets/balanced.toml")),
    ("open", include_str!("../presets/open.toml")),
];

/// Why a preset could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    /// no preset of that name
    #[error("no preset named {0:?} (presets: deny-all, balanced, open)")]
    Unknown(String),
    /// a built-in preset does not parse (a bug)
    #[error(transparent)]
    File(#[from] FileError),
}

/// The text of a preset.
pub fn text(name: &str) -> Result<&'static str, PresetError> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| PresetError::Unknown(name.into()))
}

/// A preset as parsed.
pub fn load(name: &str) -> Result<PolicyFile, PresetError> {
    Ok(policyfile::parse(&format!("preset {name}"), text(name)?)?)
}

/// Whether a preset takes in this host's package registries.
pub fn wants_registries(name: &str) -> Result<bool, PresetError> {
    Ok(load(name)?.host_registries)
}

/// The rules a preset gives: its own, plus `registries` (this host's, from
/// [`crate::registries::discover`]) where it asks for them. A host registry may resolve to a
/// private address (a company mirror): the host's owner configured it, so its rule allows that.
pub fn materialize(name: &str, registries: &[RegistryHost]) -> Result<Vec<Rule>, PresetError> {
    let file = load(name)?;
    let mut rules: Vec<Rule> = file.rules.into_iter().map(|(_, r)| r).collect();
    if file.host_registries {
        for reg in registries {
            let Ok(mut rule) = Rule::parse_target(Action::Allow, &reg.host) else {
                continue;
            };
            if let Some(p) = reg.port {
                rule.port = PortSpec::Port(p);
            }
            rule.private_address = true;
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_preset_parses() {
        for (name, _) in PRESETS {
            load(name).unwrap();
        }
        assert!(load("deny-all").unwrap().rules.is_empty());
        assert!(matches!(load("nope"), Err(PresetError::Unknown(_))));
    }

    #[test]
    fn host_registries_may_be_private_and_the_presets_own_rules_not() {
        let reg = |host: &str, port| RegistryHost {
            host: host.into(),
            port,
            source: "test".into(),
        };
        let rules = materialize(
            "balanced",
            &[
                reg("mirror.corp.test", None),
                reg("pkgs.corp.test", Some(8080)),
            ],
        )
        .unwrap();
        let own = load("balanced").unwrap().rules.len();
        assert!(rules[..own].iter().all(|r| !r.private_address));
        let added: Vec<String> = rules[own..]
            .iter()
            .map(|r| format!("{}:{} {}", r.host, r.port, r.private_address))
            .collect();
        assert_eq!(
            added,
            ["mirror.corp.test:default true", "pkgs.corp.test:8080 true"]
        );
        assert!(
            materialize("deny-all", &[reg("mirror.corp.test", None)])
                .unwrap()
                .is_empty()
        );
    }
}
