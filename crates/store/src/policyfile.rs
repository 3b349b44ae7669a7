//! Rules as a TOML file (`paddock policy import/export`, and the built-in presets).
//!
//! ```toml
//! version = 1
//! [[rule]]
//! action = "allow"            # or "ask", or "deny"
//! host = "api.example.com"    # exact, *.one-label, **.any-depth, ** or an address/range
//! port = 8443                 # optional: a number or "any" (default: 80 plain, 443 CONNECT)
//! method = "GET"              # optional, plain HTTP (or intercepted) only
//! path = "/v1/*"              # optional, likewise
//! private_address = true      # optional: the named host may resolve to a private address
//! sandbox = "my-box"          # optional: absent means every sandbox
//!
//! [[preset]]                  # a preset the scope uses, by name (its rules are not copied)
//! name = "balanced"
//! ask_unlisted = true         # optional: it ends in an ask instead of the default deny
//! sandbox = "my-box"          # optional, as for a rule
//! ```
//!
//! A file is read whole and checked whole before anything changes; an error names the line.

use paddock_policy::net::{
    Action, HostPattern, PathGlob, PortSpec, Rule, RuleError, Scope, StoredRule, parse_method,
};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The only file version.
pub const VERSION: u32 = 1;

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// not TOML, or not of the expected shape
    #[error("{file}: {message}")]
    Syntax {
        /// The file name.
        file: String,
        /// toml's message (it names line and column).
        message: String,
    },
    /// a field does not hold a valid value
    #[error("{file}:{line}: {message}")]
    Invalid {
        /// The file name.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Spanned<u32>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    host_registries: bool,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    preset: Vec<Spanned<RawPreset>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreset {
    name: Spanned<String>,
    #[serde(default)]
    ask_unlisted: bool,
    #[serde(default)]
    sandbox: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    action: Spanned<String>,
    host: Spanned<String>,
    #[serde(default)]
    port: Option<Spanned<RawPort>>,
    #[serde(default)]
    method: Option<Spanned<String>>,
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    private_address: Option<Spanned<bool>>,
    #[serde(default)]
    sandbox: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(i64),
    Word(String),
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// What it is for.
    pub description: Option<String>,
    /// Whether the host's package registries are added when it is applied (presets).
    pub host_registries: bool,
    /// The rules, with the scope each names (`None`: not named in the file).
    pub rules: Vec<(Option<String>, Rule)>,
    /// The presets the scopes use, with the scope each names.
    pub presets: Vec<PresetUse>,
}

/// A preset a scope uses, as a policy file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetUse {
    /// The sandbox (`None`: not named in the file).
    pub sandbox: Option<String>,
    /// The preset's name (checked against the built-in presets when applied).
    pub name: String,
    /// It ends in an ask for hosts no rule names.
    pub ask_unlisted: bool,
}

/// Reads a policy file; `file` is the name used in messages.
pub fn parse(file: &str, text: &str) -> Result<PolicyFile, FileError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| FileError::Syntax {
        file: file.into(),
        message: e.to_string().trim_end().replace('\n', "\n  "),
    })?;
    let line =
        |span: std::ops::Range<usize>| text[..span.start.min(text.len())].matches('\n').count() + 1;
    let invalid = |span: std::ops::Range<usize>, message: String| FileError::Invalid {
        file: file.into(),
        line: line(span),
        message,
    };
    if *raw.version.get_ref() != VERSION {
        return Err(invalid(
            raw.version.span(),
            format!(
                "version {} is not supported (only {VERSION})",
                raw.version.get_ref()
            ),
        ));
    }
    let sandbox_of = |s: &Option<Spanned<String>>| -> Result<Option<String>, FileError> {
        s.as_ref()
            .map(|s| {
                s.get_ref()
                    .parse::<paddock_policy::SandboxName>()
                    .map(|n| n.to_string())
                    .map_err(|e| invalid(s.span(), e.to_string()))
            })
            .transpose()
    };
    let mut rules = Vec::new();
    for r in raw.rule {
        let r = r.into_inner();
        let Some(action) = Action::parse(r.action.get_ref()) else {
            return Err(invalid(
                r.action.span(),
                format!(
                    "action {:?}: use \"allow\", \"ask\" or \"deny\"",
                    r.action.get_ref()
                ),
            ));
        };
        let mut rule = Rule::parse_target(action, r.host.get_ref())
            .map_err(|e| invalid(r.host.span(), e.to_string()))?;
        if let Some(p) = &r.port {
            let spec = match p.get_ref() {
                RawPort::Number(n) => u16::try_from(*n)
                    .ok()
                    .filter(|n| *n != 0)
                    .map(PortSpec::Port)
                    .ok_or_else(|| invalid(p.span(), format!("port {n} is not from 1 to 65535"))),
                RawPort::Word(w) => {
                    PortSpec::parse(w).map_err(|e| invalid(p.span(), e.to_string()))
                }
            }?;
            rule.port = spec;
        }
        if let Some(m) = &r.method {
            rule.method =
                Some(parse_method(m.get_ref()).map_err(|e| invalid(m.span(), e.to_string()))?);
        }
        if let Some(p) = &r.path {
            rule.path =
                Some(PathGlob::parse(p.get_ref()).map_err(|e| invalid(p.span(), e.to_string()))?);
        }
        if let Some(p) = &r.private_address {
            rule.private_address = *p.get_ref();
            if let Err(e @ RuleError::PrivateNeedsName(_)) = rule.vet() {
                return Err(invalid(p.span(), e.to_string()));
            }
        }
        rules.push((sandbox_of(&r.sandbox)?, rule));
    }
    let mut presets = Vec::new();
    for p in raw.preset {
        let p = p.into_inner();
        if !crate::presets::PRESETS
            .iter()
            .any(|(n, _)| n == p.name.get_ref())
        {
            let names: Vec<&str> = crate::presets::PRESETS.iter().map(|(n, _)| *n).collect();
            return Err(invalid(
                p.name.span(),
                format!(
                    "no preset named {:?} (there are {})",
                    p.name.get_ref(),
                    names.join(", ")
                ),
            ));
        }
        presets.push(PresetUse {
            sandbox: sandbox_of(&p.sandbox)?,
            name: p.name.into_inner(),
            ask_unlisted: p.ask_unlisted,
        });
    }
    Ok(PolicyFile {
        description: raw.description,
        host_registries: raw.host_registries,
        rules,
        presets,
    })
}

#[derive(Debug, Serialize)]
struct OutFile {
    version: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    preset: Vec<OutPreset>,
    rule: Vec<OutRule>,
}

#[derive(Debug, Serialize)]
struct OutPreset {
    name: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ask_unlisted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<String>,
}

#[derive(Debug, Serialize)]
struct OutRule {
    action: String,
    host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<toml::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    private_address: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<String>,
}

/// Writes rules and the presets their scopes use in the file format (importing the result
/// gives the same rules and presets). A preset's own rules are not written: the preset is,
/// by name. With `unnamed`, no sandbox is named (the file is for one scope, whichever
/// imports it).
pub fn export(rules: &[StoredRule], presets: &[PresetUse], unnamed: bool) -> String {
    let name = |s: &Option<String>| s.clone().filter(|_| !unnamed);
    let out = OutFile {
        version: VERSION,
        preset: presets
            .iter()
            .map(|p| OutPreset {
                name: p.name.clone(),
                ask_unlisted: p.ask_unlisted,
                sandbox: name(&p.sandbox),
            })
            .collect(),
        rule: rules
            .iter()
            .filter(|r| !matches!(r.scope, Scope::Preset(_)))
            .map(|r| OutRule {
                action: r.rule.action.to_string(),
                host: match &r.rule.host {
                    // A bare IPv6 address would read as host:port; brackets keep it whole.
                    HostPattern::Net(n) if n.addr().is_ipv6() && n.prefix_len() == 128 => {
                        format!("[{}]", n.addr())
                    }
                    h => h.to_string(),
                },
                port: match r.rule.port {
                    PortSpec::Default => None,
                    PortSpec::Any => Some(toml::Value::String("any".into())),
                    PortSpec::Port(p) => Some(toml::Value::Integer(p.into())),
                },
                method: r.rule.method.clone(),
                path: r.rule.path.as_ref().map(|p| p.as_str().to_owned()),
                private_address: r.rule.private_address,
                sandbox: match &r.scope {
                    Scope::Sandbox(n) if !unnamed => Some(n.clone()),
                    _ => None,
                },
            })
            .collect(),
    };
    toml::to_string_pretty(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let text = "version = 1\n\n[[rule]]\naction = \"allow\"\nhost = \"exa mple.com\"\n";
        let e = parse("p.toml", text).unwrap_err().to_string();
        assert!(e.starts_with("p.toml:5: invalid host pattern"), "{e}");
        let text = "version = 1\n[[rule]]\naction = \"allow\"\nhost = \"a.com\"\nport = 70000\n";
        assert!(
            parse("p.toml", text)
                .unwrap_err()
                .to_string()
                .starts_with("p.toml:5: port 70000")
        );
        let text = "version = 1\n[[rule]]\naction = \"permit\"\nhost = \"a.com\"\n";
        assert!(
            parse("p.toml", text)
                .unwrap_err()
                .to_string()
                .starts_with("p.toml:3: action")
        );
        let text = "version = 1\n[[rule]]\naction = \"allow\"\nhost = \"a.com\"\ncolour = 1\n";
        let e = parse("p.toml", text).unwrap_err().to_string();
        assert!(e.contains("line 5") && e.contains("colour"), "{e}");
        let text = "version = 2\n";
        assert!(
            parse("p.toml", text)
                .unwrap_err()
                .to_string()
                .starts_with("p.toml:1: version 2")
        );
    }

    #[test]
    fn export_then_parse_is_the_same() {
        let text = r#"version = 1
[[rule]]
action = "allow"
host = "*.example.com"
port = 8443
[[rule]]
action = "deny"
host = "api.example.com"
method = "DELETE"
path = "/repos/*"
sandbox = "box"
[[rule]]
action = "allow"
host = "10.0.0.0/8"
port = "any"
[[rule]]
action = "allow"
host = "[::1]"
[[rule]]
action = "allow"
host = "mirror.corp.test"
private_address = true
"#;
        let f = parse("a", text).unwrap();
        let stored: Vec<StoredRule> = f
            .rules
            .iter()
            .enumerate()
            .map(|(i, (s, r))| StoredRule {
                id: i as i64,
                scope: s.clone().map(Scope::Sandbox).unwrap_or(Scope::Global),
                source: "user".into(),
                rule: r.clone(),
            })
            .collect();
        assert!(f.rules[4].1.private_address && !f.rules[0].1.private_address);
        let again = parse("b", &export(&stored, &[], false)).unwrap();
        assert_eq!(again.rules, f.rules);
        // A preset is written by name, and its rules not at all; unnamed, no sandbox is named.
        let presets = [PresetUse {
            sandbox: Some("box".into()),
            name: "balanced".into(),
            ask_unlisted: true,
        }];
        let mut with_preset = stored.clone();
        with_preset.push(StoredRule {
            id: 99,
            scope: Scope::Preset("balanced".into()),
            source: "preset:balanced".into(),
            rule: f.rules[0].1.clone(),
        });
        let named = parse("c", &export(&with_preset, &presets, false)).unwrap();
        assert_eq!(
            (named.rules, named.presets),
            (f.rules.clone(), presets.to_vec())
        );
        let unnamed = parse("d", &export(&with_preset, &presets, true)).unwrap();
        assert!(unnamed.rules.iter().all(|(s, _)| s.is_none()));
        assert_eq!(unnamed.presets[0].sandbox, None);
        assert_eq!(unnamed.rules.len(), f.rules.len());
        let e = parse("e", "version = 1\n[[preset]]\nname = \"lax\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("e:3: no preset named \"lax\""), "{e}");
    }

    #[test]
    fn a_private_address_needs_one_named_host() {
        for (host, action) in [
            ("*.corp.test", "allow"),
            ("10.0.0.1", "allow"),
            ("a.test", "deny"),
        ] {
            let text = format!(
                "version = 1\n[[rule]]\naction = \"{action}\"\nhost = \"{host}\"\nprivate_address = true\n"
            );
            let e = parse("p.toml", &text).unwrap_err().to_string();
            assert!(
                e.starts_with("p.toml:5: ") && e.contains("one host exactly"),
                "{e}"
            );
        }
    }
}
