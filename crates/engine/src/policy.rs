//! Network rules as a request gives them, checked before any is stored, and the presets.

use std::time::Duration;

use paddock_core::Dirs;
use paddock_policy::net::{
    Action, Decision, Host, Kind, PathGlob, PortSpec, Rule, Scope, StoredRule, Target, Tunnel,
    decide, decide_address, normalize_path, parse_method, split_host_port, tunnel,
};
use paddock_store::registries::{HostConfig, RegistryHost, discover};
use paddock_store::{Store, presets};
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
/// again instead of reusing the last day's discovery). `ask_unlisted`: the preset ends in an
/// ask for every host on any port instead of the default deny, so a host no rule names waits
/// for the user's answer.
pub fn apply_preset(
    dirs: &Dirs,
    store: &Store,
    scope: &Scope,
    name: &str,
    fresh: bool,
    ask_unlisted: bool,
) -> Result<usize> {
    let regs = if presets::wants_registries(name).map_err(|e| invalid(e.to_string()))? {
        registries(dirs, fresh)
    } else {
        Vec::new()
    };
    let mut rules = presets::materialize(name, &regs).map_err(|e| invalid(e.to_string()))?;
    if ask_unlisted {
        rules.push(ask_unlisted_rule());
    }
    Ok(store.apply_preset(scope, name, &rules, ask_unlisted)?.len())
}

/// `ask ** port any`: what `--ask-unlisted` adds to a preset.
pub fn ask_unlisted_rule() -> Rule {
    Rule {
        action: Action::Ask,
        host: paddock_policy::net::HostPattern::Any,
        port: PortSpec::Any,
        method: None,
        path: None,
        private_address: false,
    }
}

/// The rules of the preset a new sandbox gets, as `check` decides with them before any
/// sandbox has them: ids below zero, in the scope `new sandbox (preset NAME)`.
fn new_sandbox_preset(dirs: &Dirs) -> Result<Vec<StoredRule>> {
    let name = presets::DEFAULT;
    let regs = if presets::wants_registries(name).map_err(|e| invalid(e.to_string()))? {
        registries(dirs, false)
    } else {
        Vec::new()
    };
    let rules = presets::materialize(name, &regs).map_err(|e| invalid(e.to_string()))?;
    Ok(rules
        .into_iter()
        .zip(1..)
        .map(|(rule, i)| StoredRule {
            id: -i,
            scope: Scope::Sandbox(format!("a new sandbox's preset {name}")),
            source: format!("preset:{name}"),
            rule,
        })
        .collect())
}

/// The scope of rules for `sandbox` (every sandbox when none).
pub fn scope_of(sandbox: Option<&str>) -> Result<Scope> {
    match sandbox {
        None => Ok(Scope::Global),
        Some(s) => {
            let n: paddock_policy::SandboxName = s
                .parse()
                .map_err(|e: paddock_policy::NameError| invalid(format!("sandbox: {e}")))?;
            Ok(Scope::Sandbox(n.to_string()))
        }
    }
}

/// One stored rule, as front ends show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleView {
    /// Its id (for removal).
    pub id: i64,
    /// `global`, or the sandbox's name.
    pub scope: String,
    /// `allow` or `deny`.
    pub action: String,
    /// The host pattern.
    pub host: String,
    /// The port (`default`: 80 for HTTP, 443 for HTTPS; `any`; a number or range).
    pub port: String,
    /// The HTTP method, where the rule names one.
    pub method: Option<String>,
    /// The path glob, where the rule names one.
    pub path: Option<String>,
    /// The host may resolve to a private address.
    pub private_address: bool,
    /// Who added it: `user`, `run`, `preset:NAME`, ...
    pub source: String,
}

impl From<&StoredRule> for RuleView {
    fn from(r: &StoredRule) -> RuleView {
        RuleView {
            id: r.id,
            scope: r.scope.to_string(),
            action: r.rule.action.to_string(),
            host: r.rule.host.to_string(),
            port: r.rule.port.to_string(),
            method: r.rule.method.clone(),
            path: r.rule.path.as_ref().map(|p| p.as_str().to_owned()),
            private_address: r.rule.private_address,
            source: r.source.clone(),
        }
    }
}

/// A rule in words: `rule 3: allow example.com port 8080 (web, user)`.
pub fn describe(r: &StoredRule) -> String {
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

/// What the proxy would decide for a URL.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// Whether the request would be let through without asking.
    pub allowed: bool,
    /// `allow`, `ask` (it would wait for the user's answer) or `deny`.
    pub decision: String,
    /// The request as the proxy decides it (`CONNECT host:443`, `GET http://host:80/path`,
    /// `GET https://host:443/path` inside a tunnel the proxy opens to decide each request).
    pub request: String,
    /// Why, in the words of the proxy's audit log.
    pub reason: String,
    /// The deciding rule's id, when a rule decided.
    pub rule: Option<i64>,
    /// The deciding rule in words.
    pub rule_text: Option<String>,
    /// What is decided only at request time.
    pub note: Option<String>,
}

/// A URL as `policy check` reads it: the request the proxy sees first, and for HTTPS the
/// request inside the tunnel (method and path), which the proxy sees where it intercepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// A plain request, or the CONNECT of an HTTPS one.
    pub target: Target,
    /// For HTTPS: the method and path inside the tunnel.
    pub inner: Option<(String, String)>,
}

/// Reads `http://host[:port]/path`, `https://…`, or a bare `host[:port]` (as https).
pub fn parse_url(url: &str, method: Option<&str>) -> Result<Probe> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("https".to_owned(), url),
    };
    let (auth, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if auth.contains('@') {
        return Err(invalid("user information in the URL is not supported"));
    }
    let (h, p) = split_host_port(auth).map_err(|e| invalid(e.to_string()))?;
    let host = Host::parse(h).map_err(|e| invalid(e.to_string()))?;
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let path = normalize_path(if path.is_empty() { "/" } else { path });
    let method = method
        .map(parse_method)
        .transpose()
        .map_err(|e| invalid(e.to_string()))?
        .unwrap_or_else(|| "GET".into());
    let (kind, inner) = match scheme.as_str() {
        "http" | "ws" => (Kind::Http { method, path }, None),
        "https" | "wss" => (Kind::Connect, Some((method, path))),
        other => {
            return Err(invalid(format!(
                "scheme {other:?}: use http:// or https://"
            )));
        }
    };
    let port = p.unwrap_or(kind.default_port());
    Ok(Probe {
        target: Target { host, port, kind },
        inner,
    })
}

/// The request as `check` names it.
fn request_words(t: &Target) -> String {
    match &t.kind {
        Kind::Connect => format!("CONNECT {}", t.host.authority(t.port)),
        Kind::Http { method, path } => {
            format!("{method} http://{}{path}", t.host.authority(t.port))
        }
        Kind::Https { method, path } => {
            format!("{method} https://{}{path}", t.host.authority(t.port))
        }
    }
}

/// Decides `probe` with `rules` as the proxy does ([`tunnel`] for HTTPS, then the request
/// inside where the proxy intercepts; [`decide_address`] for an address): the decision and the
/// request it is about.
pub fn decide_probe(rules: &[StoredRule], probe: &Probe) -> (Decision, Target) {
    let t = &probe.target;
    let (d, decided) = match (&t.kind, &probe.inner) {
        (Kind::Connect, Some((method, path))) => match tunnel(rules, t, true) {
            Tunnel::Inspect(_) => {
                let inner = Target {
                    kind: Kind::Https {
                        method: method.clone(),
                        path: path.clone(),
                    },
                    ..t.clone()
                };
                (decide(rules, &inner), inner)
            }
            Tunnel::Open(d) | Tunnel::Ask(d) | Tunnel::Refuse(d) => (d, t.clone()),
        },
        _ => (decide(rules, t), t.clone()),
    };
    // The proxy checks an address destination before it connects (the tunnel's, for HTTPS).
    let d = match t.host.ip() {
        Some(ip) if d.action == Action::Allow => {
            let a = decide_address(rules, Some(&t.host), ip, t.port, &t.kind);
            if a.action == Action::Allow { d } else { a }
        }
        _ => d,
    };
    (d, decided)
}

impl crate::Engine {
    /// The rules that apply to `sandbox` (its own and the global ones), or every rule.
    pub fn rules(&self, sandbox: Option<&str>) -> Result<Vec<StoredRule>> {
        Ok(match sandbox {
            Some(s) => self.store.rules_for(&scope_of(Some(s))?.to_string())?,
            None => self.store.all()?,
        })
    }

    /// Adds `action` rules from `req` (all checked before any is stored).
    pub fn add_rules(
        &self,
        action: Action,
        req: &RuleRequest,
        report: &dyn Reporter,
    ) -> Result<Vec<StoredRule>> {
        let scope = scope_of(req.sandbox.as_deref())?;
        if req.hosts.is_empty() {
            return Err(invalid("hosts: give at least one host"));
        }
        let rules = rules_from(action, req, report)?;
        let ids = self.store.add(&scope, &rules, "user")?;
        Ok(ids
            .into_iter()
            .zip(rules)
            .map(|(id, rule)| StoredRule {
                id,
                scope: scope.clone(),
                source: "user".into(),
                rule,
            })
            .collect())
    }

    /// Removes the rules `ids` and returns them; none is removed when one does not exist.
    pub fn remove_rules(&self, ids: &[i64]) -> Result<Vec<StoredRule>> {
        let all = self.store.all()?;
        if let Some(missing) = ids.iter().find(|id| !all.iter().any(|r| r.id == **id)) {
            return Err(crate::EngineError::NotFound(format!(
                "no rule with id {missing} (see `paddock policy ls`)"
            )));
        }
        ids.iter().map(|id| Ok(self.store.remove(*id)?)).collect()
    }

    /// What the proxy would decide for `url` in `sandbox`; with none, in a new sandbox (the
    /// global rules and the preset every new sandbox gets).
    pub fn check_url(
        &self,
        url: &str,
        sandbox: Option<&str>,
        method: Option<&str>,
    ) -> Result<Check> {
        let probe = parse_url(url, method)?;
        let rules = match sandbox {
            Some(_) => self.rules(sandbox)?,
            None => {
                // What every sandbox gets: the global rules and the preset for every sandbox
                // (a sandbox of no name has no rules of its own).
                let mut rules: Vec<StoredRule> = self.store.rules_for("")?;
                rules.extend(new_sandbox_preset(&self.dirs)?);
                rules
            }
        };
        let (d, decided) = decide_probe(&rules, &probe);
        let rule = d.rule.and_then(|id| rules.iter().find(|r| r.id == id));
        Ok(Check {
            allowed: d.action == Action::Allow,
            decision: d.action.to_string(),
            request: request_words(&decided),
            reason: d.reason.clone(),
            rule: d.rule.filter(|id| *id > 0),
            rule_text: rule.map(describe),
            note: (d.action == Action::Allow && probe.target.host.ip().is_none()).then(|| {
                "at request time the proxy also refuses the name if it resolves to a private, loopback or metadata address no rule names".to_owned()
            }),
        })
    }
}
