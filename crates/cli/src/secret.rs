//! `paddock secret`: credentials kept on the host.

use anyhow::{Context, Result};
use paddock_core::Dirs;
use paddock_policy::SandboxName;
use paddock_policy::net::Host;
use paddock_secrets::{Entry, Injection, Scope, SecretStore, find_service, placeholder_for};

use crate::cli::SecretCmd;
use crate::error::usage;

/// The store for `dirs`.
pub fn store(dirs: &Dirs) -> SecretStore {
    SecretStore::at_default(dirs.home())
}

fn scope(sandbox: Option<String>) -> Result<Scope> {
    match sandbox {
        None => Ok(Scope::Global),
        Some(s) => {
            let n: SandboxName = s
                .parse()
                .map_err(|e| usage(format!("--sandbox {s:?}: {e}")))?;
            Ok(Scope::Sandbox(n.to_string()))
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "secret name {name:?}: use letters, digits, '-' and '_' (at most 64)"
        )))
    }
}

fn check_env(var: &str) -> Result<()> {
    let ok = !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(usage(format!("--env {var:?} is not a variable name")))
    }
}

/// Runs a `paddock secret` subcommand.
pub fn secret(dirs: &Dirs, cmd: SecretCmd) -> Result<i32> {
    let store = store(dirs);
    match cmd {
        SecretCmd::Set { service, sandbox } => {
            let svc = find_service(&service).ok_or_else(|| {
                let names: Vec<&str> = paddock_secrets::services()
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                usage(format!(
                    "unknown service {service:?}: choose {} (or `paddock secret set-custom`)",
                    names.join(", ")
                ))
            })?;
            let scope = scope(sandbox)?;
            let value = paddock_secrets::read_secret(&format!("{} secret: ", svc.name))
                .context("reading the secret")?;
            store.set(Entry {
                name: svc.name.clone(),
                scope: scope.clone(),
                service: Some(svc.name.clone()),
                env: svc.env.clone(),
                inject: svc.inject.clone(),
                placeholder: placeholder_for(&svc.name),
                value,
            })?;
            let hosts: Vec<&str> = svc.inject.iter().map(|i| i.host()).collect();
            eprintln!(
                "paddock: stored {} ({scope}); sent only to {}{}",
                svc.name,
                hosts.join(", "),
                placeholders_inside(&svc.env)
            );
            Ok(0)
        }
        SecretCmd::SetCustom {
            name,
            host,
            header,
            prefix,
            placeholder,
            env,
            sandbox,
        } => {
            check_name(&name)?;
            for v in &env {
                check_env(v)?;
            }
            let host = match Host::parse(&host) {
                Ok(Host::Name(n)) => n,
                Ok(Host::Ip(_)) => {
                    return Err(usage(format!(
                        "--host {host}: give the host's name (TLS is checked against it)"
                    )));
                }
                Err(e) => return Err(usage(format!("--host: {e}"))),
            };
            let inject = match (header, placeholder) {
                (Some(h), _) => {
                    let valid = http_header_name(&h);
                    if !valid {
                        return Err(usage(format!("--header {h:?} is not a header name")));
                    }
                    Injection::Header {
                        host,
                        header: h.to_ascii_lowercase(),
                        prefix,
                    }
                }
                (None, true) => Injection::Placeholder { host },
                (None, false) => {
                    return Err(usage(
                        "say how the secret is sent: --header NAME (set on every request) or --placeholder (replaced where the client puts it)",
                    ));
                }
            };
            let scope = scope(sandbox)?;
            let value = paddock_secrets::read_secret(&format!("{name} secret: "))
                .context("reading the secret")?;
            store.set(Entry {
                name: name.clone(),
                scope: scope.clone(),
                service: None,
                env,
                inject: vec![inject],
                placeholder: placeholder_for(&name),
                value,
            })?;
            eprintln!("paddock: stored {name} ({scope})");
            Ok(0)
        }
        SecretCmd::Ls { json } => {
            let list = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                eprintln!("no secrets; `paddock secret set SERVICE` stores one");
            } else {
                println!("{:<16} {:<18} {:<40} VARIABLES", "NAME", "SCOPE", "HOSTS");
                for e in list {
                    println!(
                        "{:<16} {:<18} {:<40} {}",
                        e.name,
                        e.scope,
                        e.hosts.join(","),
                        e.env.join(",")
                    );
                }
            }
            Ok(0)
        }
        SecretCmd::Rm { name, sandbox } => {
            let scope = scope(sandbox)?;
            if store.remove(&name, &scope)? {
                eprintln!("paddock: removed {name} ({scope})");
                Ok(0)
            } else {
                Err(usage(format!(
                    "no secret {name:?} ({scope}); `paddock secret ls` lists them"
                )))
            }
        }
    }
}

/// `; inside, A holds a placeholder` or `; inside, A and B hold placeholders` (nothing for no
/// variable).
fn placeholders_inside(vars: &[String]) -> String {
    match vars {
        [] => String::new(),
        [one] => format!("; inside, {one} holds a placeholder"),
        [rest @ .., last] => format!("; inside, {} and {last} hold placeholders", rest.join(", ")),
    }
}

fn http_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_notes_agree_in_number() {
        let vars = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], &str)] = &[
            (&[], ""),
            (
                &["ANTHROPIC_API_KEY"],
                "; inside, ANTHROPIC_API_KEY holds a placeholder",
            ),
            (
                &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
                "; inside, GEMINI_API_KEY and GOOGLE_API_KEY hold placeholders",
            ),
            (&["A", "B", "C"], "; inside, A, B and C hold placeholders"),
        ];
        for (v, want) in cases {
            assert_eq!(placeholders_inside(&vars(v)), *want);
        }
    }
}
