//! `paddock policy …`: the network rules, presets, checks and the audit log.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use paddock_core::Dirs;
use paddock_policy::SandboxName;
use paddock_policy::net::{
    Action, Host, Kind, PortSpec, Rule, Scope, StoredRule, Target, decide, decide_address,
    parse_method, split_host_port,
};
use paddock_proxy::{policyfile, presets};
use paddock_store::{AuditQuery, AuditRow, Store};

use crate::cli::{PolicyCmd, RuleArgs};
use crate::error::{Terminal, usage};

fn scope_of(sandbox: Option<&str>) -> Result<Scope> {
    match sandbox {
        None => Ok(Scope::Global),
        Some(s) => {
            let n: SandboxName = s
                .parse()
                .map_err(|e: paddock_policy::NameError| usage(format!("--sandbox: {e}")))?;
            Ok(Scope::Sandbox(n.to_string()))
        }
    }
}

/// Opens the state database (for its rules, presets and audit log).
pub fn open_store(dirs: &Dirs) -> Result<Store> {
    Ok(Store::open(&dirs.database())?)
}

fn note_unknown_sandbox(store: &Store, scope: &Scope) {
    if let Scope::Sandbox(n) = scope {
        let known = n
            .parse::<SandboxName>()
            .ok()
            .and_then(|name| store.get(&name).ok().flatten())
            .is_some();
        if !known {
            eprintln!(
                "paddock: note: no sandbox named {n} exists yet; its rules apply once it is created"
            );
        }
    }
}

/// One line per built-in preset: its name and description (a preset that adds this host's
/// package registries says so in its description, or gets it said after it).
fn preset_list() -> Result<String> {
    let mut out = String::new();
    for (n, _) in presets::PRESETS {
        let f = presets::load(n)?;
        let description = f.description.unwrap_or_default();
        let extra = if f.host_registries && !description.contains("package registries") {
            " + this host's package registries"
        } else {
            ""
        };
        out.push_str(&format!("{n:<10} {description}{extra}\n"));
    }
    Ok(out)
}

/// Builds rules from `allow`/`deny` arguments, all checked before any is stored.
fn rules_from(action: Action, args: &RuleArgs) -> Result<Vec<Rule>> {
    let request = paddock_engine::policy::RuleRequest {
        hosts: args.hosts.clone(),
        sandbox: args.sandbox.clone(),
        port: args.port.clone(),
        method: args.method.clone(),
        path: args.path.clone(),
        private_address: args.private_address,
    };
    Ok(paddock_engine::policy::rules_from(
        action, &request, &Terminal,
    )?)
}

fn vet(rule: &Rule, written: &str) -> Result<()> {
    Ok(paddock_engine::policy::vet(rule, written, &Terminal)?)
}

fn apply_preset(dirs: &Dirs, store: &Store, scope: &Scope, name: &str) -> Result<usize> {
    Ok(paddock_engine::policy::apply_preset(
        dirs, store, scope, name, true,
    )?)
}

/// `paddock policy …`.
pub fn policy(dirs: &Dirs, cmd: PolicyCmd) -> Result<i32> {
    match cmd {
        PolicyCmd::Ls { sandbox, json } => ls(dirs, sandbox.as_deref(), json),
        PolicyCmd::Allow(args) => add(dirs, Action::Allow, &args),
        PolicyCmd::Deny(args) => add(dirs, Action::Deny, &args),
        PolicyCmd::Rm { ids } => {
            let store = open_store(dirs)?;
            // Check every id first so a typo removes nothing.
            let all = store.all()?;
            if let Some(missing) = ids.iter().find(|id| !all.iter().any(|r| r.id == **id)) {
                return Err(usage(format!(
                    "no rule with id {missing} (see `paddock policy ls`)"
                )));
            }
            for id in ids {
                let r = store.remove(id)?;
                println!("removed {}", describe(&r));
            }
            Ok(0)
        }
        PolicyCmd::Check {
            url,
            sandbox,
            method,
        } => check(dirs, &url, sandbox.as_deref(), method.as_deref()),
        PolicyCmd::Preset { name, sandbox } => {
            let scope = scope_of(sandbox.as_deref())?;
            presets::text(&name).map_err(|e| usage(e.to_string()))?;
            let store = open_store(dirs)?;
            note_unknown_sandbox(&store, &scope);
            let n = apply_preset(dirs, &store, &scope, &name)?;
            println!(
                "applied preset {name} to {scope}: {n} rules (rules you added yourself are kept)"
            );
            Ok(0)
        }
        PolicyCmd::Presets { name } => {
            match name {
                Some(n) => print!("{}", presets::text(&n).map_err(|e| usage(e.to_string()))?),
                None => {
                    print!("{}", preset_list()?);
                    println!(
                        "\n`paddock policy presets NAME` prints one; `paddock policy preset NAME [--sandbox S]` applies it."
                    );
                }
            }
            Ok(0)
        }
        PolicyCmd::Log {
            sandbox,
            denied,
            json,
            limit,
            follow,
        } => log(dirs, sandbox, denied, json, limit, follow),
        PolicyCmd::Import {
            file,
            sandbox,
            replace,
        } => import(dirs, &file, sandbox.as_deref(), replace),
        PolicyCmd::Export { sandbox } => {
            let store = open_store(dirs)?;
            let rules = match &sandbox {
                Some(s) => store.rules_for(scope_of(Some(s))?.to_string().as_str())?,
                None => store.all()?,
            };
            print!("{}", policyfile::export(&rules));
            Ok(0)
        }
    }
}

fn describe(r: &StoredRule) -> String {
    let mut s = format!("rule {}: {} {}", r.id, r.rule.action, r.rule.host);
    if r.rule.port != PortSpec::Default {
        s += &format!(" port {}", r.rule.port);
    }
    if let Some(m) = &r.rule.method {
        s += &format!(" method {m}");
    }
    if let Some(p) = &r.rule.path {
        s += &format!(" path {}", p.as_str());
    }
    if r.rule.private_address {
        s += " (private address allowed)";
    }
    s + &format!(" ({}, {})", r.scope, r.source)
}

fn add(dirs: &Dirs, action: Action, args: &RuleArgs) -> Result<i32> {
    let scope = scope_of(args.sandbox.as_deref())?;
    let rules = rules_from(action, args)?;
    let store = open_store(dirs)?;
    note_unknown_sandbox(&store, &scope);
    let ids = store.add(&scope, &rules, "user")?;
    for (id, rule) in ids.iter().zip(rules) {
        println!(
            "{}",
            describe(&StoredRule {
                id: *id,
                scope: scope.clone(),
                source: "user".into(),
                rule,
            })
        );
    }
    Ok(0)
}

fn ls(dirs: &Dirs, sandbox: Option<&str>, json: bool) -> Result<i32> {
    let store = open_store(dirs)?;
    let rules = match sandbox {
        Some(s) => store.rules_for(&scope_of(Some(s))?.to_string())?,
        None => store.all()?,
    };
    if json {
        let v: Vec<serde_json::Value> = rules
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "scope": r.scope.to_string(),
                    "action": r.rule.action.to_string(),
                    "host": r.rule.host.to_string(),
                    "port": r.rule.port.to_string(),
                    "method": r.rule.method,
                    "path": r.rule.path.as_ref().map(|p| p.as_str()),
                    "private_address": r.rule.private_address,
                    "source": r.source,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    if let Some(s) = sandbox {
        let preset = store.preset_of(&scope_of(Some(s))?)?;
        println!(
            "sandbox {s}: preset {}",
            preset.as_deref().unwrap_or("(none)")
        );
    }
    if rules.is_empty() {
        println!("no rules: every request is denied");
        return Ok(0);
    }
    println!(
        "{:>5}  {:<16} {:<6} {:<36} {:<8} {:<7} {:<16} SOURCE",
        "ID", "SCOPE", "ACTION", "HOST", "PORT", "METHOD", "PATH"
    );
    for r in rules {
        println!(
            "{:>5}  {:<16} {:<6} {:<36} {:<8} {:<7} {:<16} {}",
            r.id,
            r.scope.to_string(),
            r.rule.action.to_string(),
            r.rule.host.to_string(),
            r.rule.port.to_string(),
            r.rule.method.as_deref().unwrap_or("*"),
            r.rule.path.as_ref().map(|p| p.as_str()).unwrap_or("*"),
            match r.rule.private_address {
                true => format!("{} (private address allowed)", r.source),
                false => r.source,
            }
        );
    }
    Ok(0)
}

/// Reads `http://host[:port]/path`, `https://…`, or a bare `host[:port]` (as https).
fn parse_url(url: &str, method: Option<&str>) -> Result<Target> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("https".to_owned(), url),
    };
    let (auth, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if auth.contains('@') {
        return Err(usage("user information in the URL is not supported"));
    }
    let (h, p) = split_host_port(auth).map_err(|e| usage(e.to_string()))?;
    let host = Host::parse(h).map_err(|e| usage(e.to_string()))?;
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let path = if path.is_empty() { "/" } else { path };
    let kind = match scheme.as_str() {
        "http" | "ws" => Kind::Http {
            method: method
                .map(parse_method)
                .transpose()
                .map_err(|e| usage(e.to_string()))?
                .unwrap_or_else(|| "GET".into()),
            path: path.to_owned(),
        },
        "https" | "wss" => Kind::Connect,
        other => return Err(usage(format!("scheme {other:?}: use http:// or https://"))),
    };
    let port = p.unwrap_or(kind.default_port());
    Ok(Target { host, port, kind })
}

fn check(dirs: &Dirs, url: &str, sandbox: Option<&str>, method: Option<&str>) -> Result<i32> {
    let target = parse_url(url, method)?;
    let store = open_store(dirs)?;
    let rules = match sandbox {
        Some(s) => store.rules_for(&scope_of(Some(s))?.to_string())?,
        None => store
            .all()?
            .into_iter()
            .filter(|r| r.scope == Scope::Global)
            .collect(),
    };
    let what = match &target.kind {
        Kind::Connect => format!("CONNECT {}", target.host.authority(target.port)),
        Kind::Http { method, path } => format!(
            "{method} http://{}{path}",
            target.host.authority(target.port)
        ),
        Kind::Https { method, path } => format!(
            "{method} https://{}{path} (intercepted)",
            target.host.authority(target.port)
        ),
    };
    let d = decide(&rules, &target);
    let explain = |d: &paddock_policy::net::Decision| match d
        .rule
        .and_then(|id| rules.iter().find(|r| r.id == id))
    {
        Some(r) => describe(r),
        None => d.reason.clone(),
    };
    if d.action == Action::Deny {
        println!("deny  {what}\n      {}", explain(&d));
        return Ok(1);
    }
    if let Some(ip) = target.host.ip() {
        let a = decide_address(&rules, Some(&target.host), ip, target.port, &target.kind);
        if a.action == Action::Deny {
            println!("deny  {what}\n      {}", explain(&a));
            return Ok(1);
        }
    }
    println!("allow {what}\n      {}", explain(&d));
    if target.host.ip().is_none() {
        println!(
            "      (at request time the proxy also refuses the name if it resolves to a private, loopback or metadata address no rule names)"
        );
    }
    Ok(0)
}

fn print_rows(rows: &[AuditRow], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    for r in rows {
        if json {
            writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default())?;
            continue;
        }
        let secs = r.ts / 1000;
        let t = format!(
            "{:02}:{:02}:{:02}.{:03}",
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            r.ts % 1000
        );
        let dest = match r.port {
            Some(p) => format!("{}:{p}", r.host),
            None => r.host.clone(),
        };
        writeln!(
            out,
            "{t} UTC  {:<14} {:<5} rule={:<8} {:<7} {:<32} {:<14} {:>3}  up={} down={} {}ms  {}",
            r.sandbox,
            r.action,
            r.rule,
            r.method,
            dest,
            r.path.as_deref().unwrap_or("-"),
            r.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            r.bytes_up,
            r.bytes_down,
            r.duration_ms
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            r.reason
        )?;
    }
    out.flush()
}

fn log(
    dirs: &Dirs,
    sandbox: Option<String>,
    denied: bool,
    json: bool,
    limit: Option<u32>,
    follow: bool,
) -> Result<i32> {
    if let Some(s) = &sandbox {
        scope_of(Some(s))?;
    }
    let store = open_store(dirs)?;
    let mut q = AuditQuery {
        sandbox,
        denied,
        after: None,
        limit: Some(limit.unwrap_or(if follow { 20 } else { 100 })),
    };
    let mut out = std::io::stdout().lock();
    loop {
        let rows = store.audit_rows(&q).context("reading the audit log")?;
        if let Some(last) = rows.last() {
            q.after = Some(last.id);
        }
        if print_rows(&rows, json, &mut out).is_err() {
            return Ok(0);
        }
        if !follow {
            return Ok(0);
        }
        q.limit = None;
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn import(dirs: &Dirs, file: &Path, sandbox: Option<&str>, replace: bool) -> Result<i32> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let parsed =
        policyfile::parse(&file.display().to_string(), &text).map_err(|e| usage(e.to_string()))?;
    let forced = sandbox.map(|s| scope_of(Some(s))).transpose()?;
    let store = open_store(dirs)?;
    let mut by_scope: Vec<(Scope, Vec<Rule>)> = Vec::new();
    for (s, rule) in parsed.rules {
        vet(&rule, &format!("{}: rule {}", file.display(), rule.host))?;
        let scope = match (&forced, s) {
            (Some(f), _) => f.clone(),
            (None, Some(n)) => Scope::Sandbox(n),
            (None, None) => Scope::Global,
        };
        match by_scope.iter_mut().find(|(sc, _)| *sc == scope) {
            Some((_, v)) => v.push(rule),
            None => by_scope.push((scope, vec![rule])),
        }
    }
    let n = store.import(&by_scope, replace)?;
    println!("imported {n} rules from {}", file.display());
    Ok(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn the_preset_list_says_each_thing_once() {
        let list = super::preset_list().unwrap();
        for line in list.lines() {
            assert!(
                line.matches("package registries").count() <= 1,
                "said twice: {line}"
            );
        }
        assert!(list.lines().any(|l| l.starts_with("balanced ")
            && l.contains("this host's configured package registries")));
    }
}
