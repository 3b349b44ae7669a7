//! The user's answers to waiting requests: what an approval grants and the rule it makes.
//!
//! Every front end answers through here: `paddock policy approve` and `deny`, the API, and the
//! prompt of an attached terminal (the supervisor applies what the user chose there). An
//! approval either lets the waiting requests through once, or adds a rule that says exactly
//! what it grants (the request's host and port, and its method and path where they were
//! visible, unless the approval widens or narrows that), recorded with its origin. Nothing
//! inside a sandbox reaches these operations: they are the user's.

use paddock_policy::net::{Action, HostPattern, PathGlob, PortSpec, Rule, Scope, StoredRule};
use serde::{Deserialize, Serialize};

use crate::{AskRow, Grant, Store, StoreError};

fn invalid(why: impl Into<String>) -> StoreError {
    StoreError::Invalid(why.into())
}

/// How long an approval lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lasting {
    /// Only the requests waiting now; the next identical one asks again.
    #[default]
    Once,
    /// A rule for the sandbox's current run, removed when it stops.
    ForRun,
    /// A rule kept until removed.
    Always,
}

/// An approval of a waiting request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Approval {
    /// How long it lasts.
    pub lasting: Lasting,
    /// Make the rule for every sandbox (with `always`).
    pub global: bool,
    /// Make the rule for this sandbox (default: the one that asked).
    pub sandbox: Option<String>,
    /// The rule covers the whole host and port, whatever the method and path.
    pub host_only: bool,
    /// The rule covers paths starting with this prefix.
    pub path: Option<String>,
    /// The rule covers this method only.
    pub method: Option<String>,
}

/// The rule an approval of `ask` with `a` makes: the request's host and port (a port named
/// exactly), and, where the request showed them, its method and exact path, unless `a` asks
/// for the whole host (`host_only`) or names a method or a path prefix of its own.
pub fn grant_rule(ask: &AskRow, a: &Approval) -> Result<Rule, StoreError> {
    if a.host_only && (a.path.is_some() || a.method.is_some()) {
        return Err(invalid(
            "--host-only covers every method and path; leave out --path and --method",
        ));
    }
    let host = HostPattern::parse(&ask.host).map_err(|e| invalid(e.to_string()))?;
    let method = match &a.method {
        Some(m) => Some(paddock_policy::net::parse_method(m).map_err(|e| invalid(e.to_string()))?),
        None if a.host_only || a.path.is_some() => None,
        None => ask.method.clone(),
    };
    let path = match &a.path {
        Some(p) => {
            let glob = if p.ends_with('*') {
                p.clone()
            } else {
                format!("{p}*")
            };
            Some(PathGlob::parse(&glob).map_err(|e| invalid(format!("--path: {e}")))?)
        }
        None if a.host_only || a.method.is_some() => None,
        None => ask
            .path
            .as_deref()
            .map(PathGlob::parse)
            .transpose()
            .map_err(|e| invalid(e.to_string()))?,
    };
    Ok(Rule {
        action: Action::Allow,
        host,
        port: PortSpec::Port(ask.port),
        method,
        path,
        private_address: false,
    })
}

/// When, in words: `2026-12-03 16:20:05 UTC`.
fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// What an answer did.
#[derive(Debug, Clone)]
pub struct Answered {
    /// The request, as it waited.
    pub request: AskRow,
    /// Allowed.
    pub allowed: bool,
    /// The rule the answer made, if it made one.
    pub rule: Option<StoredRule>,
}

/// The scope `name` names, checked.
fn sandbox_scope(name: &str) -> Result<Scope, StoreError> {
    let n: paddock_policy::SandboxName = name
        .parse()
        .map_err(|e: paddock_policy::NameError| invalid(format!("sandbox: {e}")))?;
    Ok(Scope::Sandbox(n.to_string()))
}

impl Store {
    /// Approves request `id`: once, or with a rule (for the sandbox's run, or always).
    pub fn approve(&self, id: i64, a: &Approval) -> Result<Answered, StoreError> {
        let ask = self.pending_one(id)?;
        let shaped = a.host_only || a.path.is_some() || a.method.is_some();
        let scope = match (a.global, &a.sandbox) {
            (true, Some(_)) => return Err(invalid("give --global or --sandbox, not both")),
            (true, None) => Scope::Global,
            (false, s) => sandbox_scope(s.as_deref().unwrap_or(&ask.sandbox))?,
        };
        let (by, grant) = match a.lasting {
            Lasting::Once if shaped || a.global || a.sandbox.is_some() => {
                return Err(invalid(
                    "an approval once lets exactly the waiting requests through; --host-only, --path, --method, --global and --sandbox shape the rule that --for-run or --always makes",
                ));
            }
            Lasting::Once => ("the user".to_owned(), None),
            Lasting::ForRun if scope != Scope::Sandbox(ask.sandbox.clone()) => {
                return Err(invalid(format!(
                    "--for-run makes a rule for {}'s current run; use --always for another scope",
                    ask.sandbox
                )));
            }
            Lasting::ForRun => (
                "the user (for this run)".to_owned(),
                Some(grant_rule(&ask, a)?),
            ),
            Lasting::Always => ("the user (always)".to_owned(), Some(grant_rule(&ask, a)?)),
        };
        let source = format!(
            "approved by the user at {}, request {id}{}",
            when(paddock_proxy::audit::now_ms()),
            if a.lasting == Lasting::ForRun {
                ", for this run"
            } else {
                ""
            }
        );
        let made = self.answer(
            id,
            true,
            &by,
            grant
                .as_ref()
                .map(|rule| Grant {
                    scope: &scope,
                    rule,
                    source: &source,
                    until_stop: a.lasting == Lasting::ForRun,
                })
                .as_ref(),
        )?;
        Ok(Answered {
            request: ask,
            allowed: true,
            rule: made.zip(grant).map(|(id, rule)| StoredRule {
                id,
                scope,
                source,
                rule,
            }),
        })
    }

    /// Denies request `id`; `always` adds a rule that denies its host and port from now on.
    pub fn deny_request(&self, id: i64, always: bool) -> Result<Answered, StoreError> {
        let ask = self.pending_one(id)?;
        let scope = Scope::Sandbox(ask.sandbox.clone());
        let rule = always
            .then(|| -> Result<Rule, StoreError> {
                Ok(Rule {
                    action: Action::Deny,
                    host: HostPattern::parse(&ask.host).map_err(|e| invalid(e.to_string()))?,
                    port: PortSpec::Port(ask.port),
                    method: None,
                    path: None,
                    private_address: false,
                })
            })
            .transpose()?;
        let source = format!(
            "denied by the user at {}, request {id}",
            when(paddock_proxy::audit::now_ms())
        );
        let made = self.answer(
            id,
            false,
            if always {
                "the user (always)"
            } else {
                "the user"
            },
            rule.as_ref()
                .map(|rule| Grant {
                    scope: &scope,
                    rule,
                    source: &source,
                    until_stop: false,
                })
                .as_ref(),
        )?;
        Ok(Answered {
            request: ask,
            allowed: false,
            rule: made.zip(rule).map(|(id, rule)| StoredRule {
                id,
                scope,
                source,
                rule,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn asked(kind: &str, port: u16, method: Option<&str>, path: Option<&str>) -> AskRow {
        AskRow {
            id: 7,
            sandbox: "s".into(),
            kind: kind.into(),
            host: "api.example.com".into(),
            port,
            method: method.map(Into::into),
            path: path.map(Into::into),
            rule: Some(1),
            waiting: 1,
            asked_at: 0,
            expires_at: 0,
            command: None,
        }
    }

    /// A rule in the words `policy ls` uses.
    fn words(r: &Rule) -> String {
        format!(
            "{} {} port {} method {} path {}",
            r.action,
            r.host,
            r.port,
            r.method.as_deref().unwrap_or("*"),
            r.path.as_ref().map_or("*", |p| p.as_str())
        )
    }

    #[test]
    fn a_grant_is_exactly_what_it_says() {
        let get = asked("http", 80, Some("GET"), Some("/v1/x"));
        let tunnel = asked("connect", 443, None, None);
        let approval = |host_only, path: Option<&str>, method: Option<&str>| Approval {
            lasting: Lasting::Always,
            host_only,
            path: path.map(Into::into),
            method: method.map(Into::into),
            ..Approval::default()
        };
        let cases = [
            // the request as it was seen
            (
                &get,
                approval(false, None, None),
                "allow api.example.com port 80 method GET path /v1/x",
            ),
            (
                &tunnel,
                approval(false, None, None),
                "allow api.example.com port 443 method * path *",
            ),
            // widened to the host, or to a prefix, or to a method
            (
                &get,
                approval(true, None, None),
                "allow api.example.com port 80 method * path *",
            ),
            (
                &get,
                approval(false, Some("/v1/"), None),
                "allow api.example.com port 80 method * path /v1/*",
            ),
            (
                &get,
                approval(false, Some("/v1/*"), Some("get")),
                "allow api.example.com port 80 method GET path /v1/*",
            ),
            (
                &get,
                approval(false, None, Some("POST")),
                "allow api.example.com port 80 method POST path *",
            ),
            // a tunnel narrowed to a path: decided inside the intercepted tunnel
            (
                &tunnel,
                approval(false, Some("/v1/"), None),
                "allow api.example.com port 443 method * path /v1/*",
            ),
        ];
        for (ask, a, want) in cases {
            assert_eq!(words(&grant_rule(ask, &a).unwrap()), want, "{a:?}");
        }
        assert!(grant_rule(&get, &approval(true, Some("/v1/"), None)).is_err());
        assert!(grant_rule(&get, &approval(false, Some("v1"), None)).is_err());
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(when(1_796_315_005_000), "2026-12-03 16:23:25 UTC");
        assert_eq!(when(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
