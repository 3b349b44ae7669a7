//! The rules a running proxy decides with, and how its privileged side reads them.
//!
//! The proxy never opens the state database: the privileged side hands [`crate::channel`]
//! something that implements [`RuleRows`] (paddock-store's `Store`), and the proxy process
//! asks it for the rows over a stream ([`RuleSource::remote`]).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use paddock_policy::net::{
    Action, HostPattern, PathGlob, PortSpec, Rule, Scope, StoredRule, parse_method,
};
use serde::Serialize;

use crate::channel::{self, RulesReply};

/// The rules as the state store keeps them: what the privileged side reads for the proxy.
pub trait RuleRows {
    /// Why the store could not answer.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The rules generation: changes whenever any rule is added, changed or removed.
    fn generation(&self) -> Result<i64, Self::Error>;

    /// The rows of the global rules and of `sandbox`'s own, ordered by id.
    fn rule_rows(&self, sandbox: &str) -> Result<Vec<RuleRow>, Self::Error>;
}

/// A rule row as stored, before parsing: what the privileged part hands the proxy process
/// ([`crate::channel`]), which parses it with [`parse_row`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRow {
    /// Rule id.
    pub id: i64,
    /// The sandbox, or none for a global rule.
    pub sandbox: Option<String>,
    /// `allow` / `ask` / `deny`.
    pub action: String,
    /// Host pattern.
    pub host: String,
    /// Port spec.
    pub port: String,
    /// Method, if limited.
    pub method: Option<String>,
    /// Path glob, if limited.
    pub path: Option<String>,
    /// Where it came from.
    pub source: String,
    /// Whether the named host may resolve to a private address.
    #[serde(default)]
    pub private_address: bool,
    /// The preset whose rule it is (kept once, used by every scope the preset is applied to).
    #[serde(default)]
    pub preset: Option<String>,
}

/// A stored rule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored rule {id} is unreadable: {reason}")]
pub struct BadRule {
    /// Rule id.
    pub id: i64,
    /// Why.
    pub reason: String,
}

/// Parses one stored row.
pub fn parse_row(row: RuleRow) -> Result<StoredRule, BadRule> {
    let RuleRow {
        id,
        sandbox,
        action,
        host,
        port,
        method,
        path,
        source,
        private_address,
        preset,
    } = row;
    let bad = |e: &dyn std::fmt::Display| BadRule {
        id,
        reason: e.to_string(),
    };
    let Some(action) = Action::parse(&action) else {
        return Err(bad(&format!("unknown action {action:?}")));
    };
    Ok(StoredRule {
        id,
        scope: match (preset, sandbox) {
            (Some(p), _) => Scope::Preset(p),
            (None, Some(s)) => Scope::Sandbox(s),
            (None, None) => Scope::Global,
        },
        source,
        rule: Rule {
            action,
            host: HostPattern::parse(&host).map_err(|e| bad(&e))?,
            port: PortSpec::parse(&port).map_err(|e| bad(&e))?,
            method: method
                .map(|m| parse_method(&m))
                .transpose()
                .map_err(|e| bad(&e))?,
            path: path
                .map(|p| PathGlob::parse(&p))
                .transpose()
                .map_err(|e| bad(&e))?,
            private_address,
        },
    })
}

/// Where the proxy gets its rules.
#[derive(Debug, Clone)]
pub struct RuleSource(Arc<Inner>);

#[derive(Debug)]
enum Inner {
    Fixed(Arc<Vec<StoredRule>>),
    Remote(Mutex<Remote>),
}

/// Rules asked of the privileged part over a stream ([`crate::channel`]).
#[derive(Debug)]
struct Remote {
    stream: UnixStream,
    generation: i64,
    rules: Arc<Vec<StoredRule>>,
    /// A request or answer failed part-way: the stream may be out of step, so nothing read
    /// from it is trusted again.
    broken: bool,
}

impl Remote {
    /// Asks for the rules if they changed; `Err` says why none can be trusted.
    fn refresh(&mut self) -> Result<(), String> {
        if self.broken {
            return Err("the rules channel failed earlier".into());
        }
        self.broken = true;
        self.stream
            .write_all(&self.generation.to_le_bytes())
            .map_err(|e| format!("cannot ask for the rules: {e}"))?;
        let reply: RulesReply = channel::receive(&mut self.stream, channel::MAX_FRAME)
            .map_err(|e| format!("no answer with the rules: {e}"))?;
        if let Some(rows) = reply.rows {
            let rules = rows
                .into_iter()
                .map(parse_row)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a rule does not parse: {e}"))?;
            self.rules = Arc::new(rules);
            self.generation = reply.generation;
        }
        self.broken = false;
        Ok(())
    }
}

impl RuleSource {
    /// A fixed set of rules (tests, benchmarks).
    pub fn fixed(rules: Vec<StoredRule>) -> RuleSource {
        RuleSource(Arc::new(Inner::Fixed(Arc::new(rules))))
    }

    /// The rules the privileged part answers on `stream` ([`channel::serve_rules`]), asked
    /// for on every request (one round trip; the rules themselves only when they changed).
    pub fn remote(stream: UnixStream) -> RuleSource {
        // A stuck answer denies rather than holding requests for ever.
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        RuleSource(Arc::new(Inner::Remote(Mutex::new(Remote {
            stream,
            generation: -1,
            rules: Arc::new(Vec::new()),
            broken: false,
        }))))
    }

    /// The rules now. If they cannot be had, no rules (everything is denied).
    pub fn current(&self) -> Arc<Vec<StoredRule>> {
        match &*self.0 {
            Inner::Fixed(r) => r.clone(),
            Inner::Remote(remote) => {
                let Ok(mut remote) = remote.lock() else {
                    return Arc::new(Vec::new());
                };
                match remote.refresh() {
                    Ok(()) => remote.rules.clone(),
                    Err(e) => {
                        tracing::error!("{e}; denying all");
                        Arc::new(Vec::new())
                    }
                }
            }
        }
    }
}
