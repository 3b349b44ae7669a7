//! `paddock policy …`: the network rules, presets, checks and the audit log.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use paddock_core::Dirs;
use paddock_engine::asks::{Approval, Lasting};
use paddock_policy::SandboxName;
use paddock_policy::net::{Action, Rule, Scope, StoredRule};
use paddock_store::{AskRow, AuditQuery, AuditRow, Store, policyfile, presets};

use crate::cli::{PolicyCmd, RuleArgs};
use crate::error::{Terminal, usage};

fn scope_of(sandbox: Option<&str>) -> Result<Scope> {
    Ok(paddock_engine::policy::scope_of(sandbox)?)
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

fn apply_preset(
    dirs: &Dirs,
    store: &Store,
    scope: &Scope,
    name: &str,
    ask_unlisted: bool,
) -> Result<usize> {
    Ok(paddock_engine::policy::apply_preset(
        dirs,
        store,
        scope,
        name,
        true,
        ask_unlisted,
    )?)
}

/// `paddock policy …`.
pub fn policy(dirs: &Dirs, cmd: PolicyCmd) -> Result<i32> {
    match cmd {
        PolicyCmd::Ls { sandbox, json } => ls(dirs, sandbox.as_deref(), json),
        PolicyCmd::Allow(args) => add(dirs, Action::Allow, &args),
        PolicyCmd::Deny(args) => match request_id(&args.rule)? {
            Some(id) => answer(dirs, id, None, args.always),
            None if args.always => Err(usage(
                "--always goes with a waiting request's number (policy deny ID --always); a deny rule always lasts",
            )),
            None => add(dirs, Action::Deny, &args.rule),
        },
        PolicyCmd::Ask(args) => add(dirs, Action::Ask, &args),
        PolicyCmd::Pending {
            sandbox,
            follow,
            json,
        } => pending(dirs, sandbox.as_deref(), follow, json),
        PolicyCmd::Approve(args) => {
            let lasting = if args.always {
                Lasting::Always
            } else if args.for_run {
                Lasting::ForRun
            } else {
                Lasting::Once
            };
            let approval = Approval {
                lasting,
                global: args.global,
                sandbox: args.sandbox,
                host_only: args.host_only,
                path: args.path,
                method: args.method,
            };
            answer(dirs, args.id, Some(approval), false)
        }
        PolicyCmd::Rm { ids } => {
            // Every id is checked first, so a typo removes nothing.
            for r in paddock_engine::Engine::at(dirs.clone())?.remove_rules(&ids)? {
                println!("removed {}", describe(&r));
            }
            Ok(0)
        }
        PolicyCmd::Check {
            url,
            sandbox,
            method,
        } => check(dirs, &url, sandbox.as_deref(), method.as_deref()),
        PolicyCmd::Preset {
            name,
            sandbox,
            ask_unlisted,
        } => {
            let scope = scope_of(sandbox.as_deref())?;
            presets::text(&name).map_err(|e| usage(e.to_string()))?;
            let store = open_store(dirs)?;
            note_unknown_sandbox(&store, &scope);
            let n = apply_preset(dirs, &store, &scope, &name, ask_unlisted)?;
            let ending = if ask_unlisted {
                "; a host no rule names waits for your answer"
            } else {
                ""
            };
            println!(
                "applied preset {name} to {scope}: {n} rules (rules you added yourself are kept){ending}"
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
            print!("{}", export(&store, sandbox.as_deref())?);
            Ok(0)
        }
    }
}

/// `policy export`: every scope's rules and presets, each sandbox named; or one sandbox's own
/// rules and preset, naming none (for `import --sandbox` into any other). A preset is written
/// by name, never as its rules; the rules for every sandbox are not one sandbox's.
fn export(store: &Store, sandbox: Option<&str>) -> Result<String> {
    let scope = sandbox.map(|s| scope_of(Some(s))).transpose()?;
    let uses = |p: &paddock_store::PresetInUse| policyfile::PresetUse {
        sandbox: match &p.scope {
            Scope::Sandbox(n) => Some(n.clone()),
            _ => None,
        },
        name: p.preset.clone(),
        ask_unlisted: p.ask_unlisted,
    };
    Ok(match &scope {
        Some(scope) => {
            let rules: Vec<StoredRule> = store
                .all()?
                .into_iter()
                .filter(|r| r.scope == *scope)
                .collect();
            let presets: Vec<_> = store
                .presets_in_use(sandbox)?
                .iter()
                .filter(|p| p.scope == *scope)
                .map(uses)
                .collect();
            policyfile::export(&rules, &presets, true)
        }
        None => {
            let presets: Vec<_> = store.presets_in_use(None)?.iter().map(uses).collect();
            policyfile::export(&store.all()?, &presets, false)
        }
    })
}

fn describe(r: &StoredRule) -> String {
    paddock_engine::policy::describe(r)
}

/// A waiting request's number given where hosts go (`policy deny 7`): an argument of digits
/// only is always one (an address written as one number is written dotted instead), and takes
/// no rule option.
fn request_id(args: &RuleArgs) -> Result<Option<i64>> {
    let numbers = args
        .hosts
        .iter()
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_digit()))
        .count();
    if numbers == 0 {
        return Ok(None);
    }
    match args.hosts.as_slice() {
        [one]
            if args.port.is_none()
                && args.method.is_none()
                && args.path.is_none()
                && args.sandbox.is_none()
                && !args.private_address =>
        {
            one.parse()
                .map(Some)
                .map_err(|_| usage(format!("{one}: not a request's number")))
        }
        _ => Err(usage(
            "a bare number is a waiting request's number: `paddock policy deny ID [--always]` takes one and no other option; write an address dotted (127.0.0.1)",
        )),
    }
}

/// `policy approve ID` (`approval`) or `policy deny ID [--always]`.
fn answer(dirs: &Dirs, id: i64, approval: Option<Approval>, always: bool) -> Result<i32> {
    let engine = paddock_engine::Engine::at(dirs.clone())?;
    let done = match &approval {
        Some(a) => engine.approve(id, a)?,
        None => engine.deny_request(id, always)?,
    };
    let what = if done.allowed { "approved" } else { "denied" };
    let r = &done.request;
    let rule = match &done.rule {
        Some(v) => format!("; rule {} {} {} for {}", v.id, v.action, v.host, v.scope),
        None if done.allowed => "; the next identical request asks again".into(),
        None => String::new(),
    };
    println!(
        "{what} request {id} of {}: {} ({} waiting){rule}",
        r.sandbox,
        request_words(r),
        r.waiting
    );
    Ok(0)
}

/// `CONNECT host:443`, `GET http://host:80/path`.
fn request_words(r: &AskRow) -> String {
    paddock_proxy::ask::Question {
        kind: r.kind.clone(),
        host: r.host.clone(),
        port: r.port,
        method: r.method.clone(),
        path: r.path.clone(),
        rule: r.rule,
        client: None,
    }
    .request()
}

fn pending(dirs: &Dirs, sandbox: Option<&str>, follow: bool, json: bool) -> Result<i32> {
    let engine = paddock_engine::Engine::at(dirs.clone())?;
    let mut out = std::io::stdout().lock();
    let line = |r: &AskRow| {
        let left = (r.expires_at - paddock_proxy::audit::now_ms()).max(0) / 1000;
        format!(
            "{:>5}  {:<16} {:<56} {:>7}  {left:>7} s  {}",
            r.id,
            r.sandbox,
            request_words(r),
            r.waiting,
            r.command.as_deref().unwrap_or("-")
        )
    };
    let header = format!(
        "{:>5}  {:<16} {:<56} {:>7}  {}  {}",
        "ID", "SANDBOX", "REQUEST", "WAITING", "DENIED IN", "COMMAND"
    );
    let rows = engine.pending(sandbox)?;
    if !follow {
        if json {
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        } else if rows.is_empty() {
            writeln!(out, "no request is waiting for an answer")?;
        } else {
            writeln!(out, "{header}")?;
            for r in &rows {
                writeln!(out, "{}", line(r))?;
            }
            writeln!(
                out,
                "\nanswer with `paddock policy approve ID [--for-run | --always]` or `paddock policy deny ID [--always]`"
            )?;
        }
        return Ok(0);
    }
    // Following: each request once as it comes, and a line when it goes.
    if !json {
        writeln!(out, "{header}")?;
    }
    let mut shown: Vec<i64> = Vec::new();
    loop {
        let rows = engine.pending(sandbox)?;
        for r in rows.iter().filter(|r| !shown.contains(&r.id)) {
            let printed = match json {
                true => writeln!(out, "{}", serde_json::to_string(r)?),
                false => writeln!(out, "{}", line(r)),
            };
            if printed.and_then(|()| out.flush()).is_err() {
                return Ok(0);
            }
        }
        if !json {
            for gone in shown.iter().filter(|id| !rows.iter().any(|r| r.id == **id)) {
                if writeln!(out, "{gone:>5}  (answered, timed out or gone)").is_err() {
                    return Ok(0);
                }
            }
        }
        shown = rows.iter().map(|r| r.id).collect();
        std::thread::sleep(Duration::from_millis(300));
    }
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
        let v: Vec<paddock_engine::policy::RuleView> = rules.iter().map(Into::into).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    if let Some(s) = sandbox {
        let preset = store.preset_of(&scope_of(Some(s))?)?;
        println!(
            "sandbox {s}: preset {}",
            preset.as_deref().unwrap_or("(none)")
        );
    } else {
        // Each preset's rules are listed once; who uses them is said here.
        let mut sets: Vec<(Option<i64>, String, Vec<String>)> = Vec::new();
        for p in store.presets_in_use(None)? {
            let label = if p.ask_unlisted {
                format!("{} (ask unlisted)", p.preset)
            } else {
                p.preset.clone()
            };
            let user = match &p.scope {
                Scope::Global => "every sandbox".to_owned(),
                other => other.to_string(),
            };
            match sets
                .iter_mut()
                .find(|(set, l, _)| *set == p.set && *l == label)
            {
                Some((_, _, users)) => users.push(user),
                None => sets.push((p.set, label, vec![user])),
            }
        }
        for (set, label, users) in sets {
            let ids = match set {
                Some(set) => store.preset_set_rules(set)?,
                None => Vec::new(),
            };
            let span = match (ids.first(), ids.last()) {
                (Some(a), Some(b)) if a != b => format!("rules {a}-{b}"),
                (Some(a), _) => format!("rule {a}"),
                _ => "no rules".to_owned(),
            };
            let shown = users.len().min(8);
            let more = match users.len() - shown {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            println!(
                "preset {label} ({span}): used by {}{more}",
                users[..shown].join(", ")
            );
        }
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

fn check(dirs: &Dirs, url: &str, sandbox: Option<&str>, method: Option<&str>) -> Result<i32> {
    let c = paddock_engine::Engine::at(dirs.clone())?.check_url(url, sandbox, method)?;
    println!("{:<5} {}\n      {}", c.decision, c.request, c.reason);
    if let Some(rule) = &c.rule_text {
        println!("      {rule}");
    }
    if let Some(note) = c.note {
        println!("      ({note})");
    }
    if sandbox.is_none() {
        println!("      (as in a new sandbox: the global rules and the preset it gets)");
    }
    Ok(if c.allowed { 0 } else { 1 })
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
    // Presets by name: each scope uses the preset's one set of rules, nothing is copied.
    let mut presets = Vec::new();
    for p in &parsed.presets {
        let scope = match (&forced, &p.sandbox) {
            (Some(f), _) => f.clone(),
            (None, Some(n)) => Scope::Sandbox(n.clone()),
            (None, None) => Scope::Global,
        };
        presets.push((scope, p));
    }
    let n = store.import(&by_scope, replace)?;
    for (scope, p) in &presets {
        apply_preset(dirs, &store, scope, &p.name, p.ask_unlisted)?;
        println!("{scope} uses preset {}", p.name);
    }
    println!(
        "imported {n} rules from {} (rules a scope already had are not added again)",
        file.display()
    );
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
