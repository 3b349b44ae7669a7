//! Telling the user that a request waits for an answer, or was denied: a line on the
//! supervisor's standard error (the attached terminal, or the sandbox's log when it runs in the
//! background), and for a waiting request a desktop notification where `notify-send` and a
//! desktop session exist, and a prompt on the command's terminal ([`Prompts`]).
//!
//! What is told comes from the proxy process, which parses the sandbox's bytes: the request
//! has been checked ([`paddock_proxy::ask`]: a canonical host, a method and a path without
//! control characters), and it goes to `notify-send` as an argument, never through a shell.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use paddock_confine::relay::{Choice, Order, Orders};
use paddock_proxy::ask::{AskSettings, Question};
use paddock_proxy::audit::Record;
use paddock_store::{Approval, Lasting, Store};

/// How long the denials of one host stay quiet after one was told.
const QUIET: Duration = Duration::from_secs(30);
/// How many hosts' last notices are remembered.
const REMEMBERED: usize = 1024;

/// Writes `line` to standard error on a line of its own (a terminal in raw mode needs the
/// carriage returns; a log file takes them as they are).
pub fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\n{line}\r\n");
    let _ = err.flush();
}

/// The one-line notices of denials, at most one per host in [`QUIET`] (the next says how many
/// were not told).
#[derive(Debug, Default)]
pub struct Denials(Mutex<HashMap<String, (Instant, usize)>>);

impl Denials {
    /// The line that tells of `r`, if it is a denial and its host was not told of lately.
    pub fn notice(&self, r: &Record) -> Option<String> {
        if r.action != "deny" {
            return None;
        }
        let mut told = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let quiet = match told.get_mut(&r.host) {
            Some((at, skipped)) if now.duration_since(*at) < QUIET => {
                *skipped += 1;
                return None;
            }
            Some((_, skipped)) => std::mem::take(skipped),
            None => 0,
        };
        if told.len() >= REMEMBERED {
            told.retain(|_, (at, _)| now.duration_since(*at) < QUIET);
        }
        told.insert(r.host.clone(), (now, 0));
        Some(denial_line(r, quiet))
    }
}

/// `paddock: web denied GET http://example.com:80/x: why. To allow it: …`
fn denial_line(r: &Record, quiet: usize) -> String {
    let sb = &r.sandbox;
    let target = match (r.port, &r.path) {
        (Some(p), Some(path)) if r.method != "CONNECT" => format!("{}:{p}{path}", r.host),
        (Some(p), _) => format!("{}:{p}", r.host),
        (None, _) => r.host.clone(),
    };
    let fix = match r.rule.as_str() {
        // The reason says what to do (a private address), or there is nothing to allow.
        "address" | "protocol" => String::new(),
        id if id.parse::<i64>().is_ok() && r.reason.starts_with("denied by rule") => {
            format!(" To allow it: paddock policy rm {id}.")
        }
        _ => {
            let port = match r.port {
                Some(80 | 443) | None => String::new(),
                Some(p) => format!(" --port {p}"),
            };
            format!(
                " To allow it: paddock policy allow {}{port} --sandbox {sb}.",
                r.host
            )
        }
    };
    let more = match quiet {
        0 => String::new(),
        n => format!(" ({n} more denials of {} since the last notice.)", r.host),
    };
    format!(
        "paddock: {sb} denied {} {target}: {}.{fix}{more}",
        r.method, r.reason
    )
}

/// ` from `curl -sS …`` where the requesting command is known.
fn from(command: Option<&str>) -> String {
    command.map(|c| format!(" from `{c}`")).unwrap_or_default()
}

/// The line that says request `id` of `sandbox` waits (made by `command`, where known), and
/// how to answer it.
pub fn notice(
    sandbox: &str,
    id: i64,
    q: &Question,
    ask: AskSettings,
    command: Option<&str>,
) -> String {
    format!(
        "paddock: {sandbox} asks to reach {}{} (request {id}). Answer with `paddock policy approve {id}` (add --always to keep allowing it) or `paddock policy deny {id}`; denied in {} s otherwise.",
        q.request(),
        from(command),
        ask.timeout_ms / 1000
    )
}

/// What a prompt says of request `id`.
fn prompt_text(
    sandbox: &str,
    id: i64,
    q: &Question,
    ask: AskSettings,
    command: Option<&str>,
) -> String {
    format!(
        "{sandbox} asks to reach {}{} (request {id}; denied in {} s unless answered)",
        q.request(),
        from(command),
        ask.timeout_ms / 1000
    )
}

/// The prompts of one sandbox's command terminal. The asks thread tells it of each request
/// that waits and each that stops waiting; the relay loop connects the relay process that
/// draws them (on the user's terminal and attached ones) and applies the answers it reads
/// from their keys. An answer is taken only for a request of this sandbox that this hub put
/// up and that still waits.
#[derive(Debug)]
pub struct Prompts {
    db: PathBuf,
    sandbox: String,
    /// This process's stdin is the user's terminal: the prompt shows there.
    local: bool,
    state: Mutex<PromptState>,
}

#[derive(Debug, Default)]
struct PromptState {
    relay: Option<Orders>,
    /// The requests that wait, and what their prompts say.
    waiting: Vec<(i64, String)>,
}

impl Prompts {
    /// The prompts of sandbox `sandbox`, whose answers go to the state database `db`.
    pub fn new(db: PathBuf, sandbox: &str) -> Prompts {
        Prompts {
            db,
            sandbox: sandbox.to_owned(),
            local: rustix::termios::isatty(rustix::stdio::stdin()),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PromptState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The relay of the command's terminal is up: every request that waits is put to it.
    pub fn connect(&self, relay: Orders) {
        let mut st = self.state();
        for (id, text) in &st.waiting {
            relay.order(&Order::Prompt(*id, text.clone()));
        }
        st.relay = Some(relay);
    }

    /// The relay is gone.
    pub fn disconnect(&self) {
        self.state().relay = None;
    }

    /// Request `id` waits; whether its prompt shows on the user's terminal (else the notice
    /// line is needed: a run in the background shows prompts only to terminals attached
    /// later).
    fn asked(&self, id: i64, text: String) -> bool {
        let mut st = self.state();
        let shown = st
            .relay
            .as_ref()
            .is_some_and(|r| r.order(&Order::Prompt(id, text.clone())));
        st.waiting.push((id, text));
        shown && self.local
    }

    /// Request `id` no longer waits.
    fn gone(&self, id: i64) {
        let mut st = self.state();
        st.waiting.retain(|(w, _)| *w != id);
        if let Some(r) = &st.relay {
            r.order(&Order::Unprompt(id));
        }
    }

    /// Applies the answer the user gave request `id` at the prompt; what went wrong, in words.
    pub fn answer(&self, id: i64, choice: Choice) -> Result<(), String> {
        if !self.state().waiting.iter().any(|(w, _)| *w == id) {
            return Err(format!(
                "request {id} no longer waits (answered elsewhere, or timed out)"
            ));
        }
        let store = Store::open(&self.db).map_err(|e| e.to_string())?;
        let ask = store.pending_one(id).map_err(|e| e.to_string())?;
        if ask.sandbox != self.sandbox {
            return Err(format!(
                "request {id} is of sandbox {}, not {}",
                ask.sandbox, self.sandbox
            ));
        }
        let approval = |lasting, host_only| Approval {
            lasting,
            host_only,
            ..Approval::default()
        };
        let done = match choice {
            Choice::Once => store.approve(id, &approval(Lasting::Once, false)),
            Choice::ForRun => store.approve(id, &approval(Lasting::ForRun, false)),
            Choice::Always => store.approve(id, &approval(Lasting::Always, false)),
            Choice::AlwaysHost => store.approve(id, &approval(Lasting::Always, true)),
            Choice::Deny => store.deny_request(id, false),
            Choice::DenyAlways => store.deny_request(id, true),
        };
        done.map(drop).map_err(|e| e.to_string())
    }
}

/// Tells the user of request `id` (made by `command`, where known): a prompt on the
/// command's terminal where there is one (`prompts`), else a line on standard error; and a
/// desktop notification.
pub fn tell(
    sandbox: &str,
    id: i64,
    q: &Question,
    ask: AskSettings,
    prompts: Option<&Prompts>,
    command: Option<&str>,
) {
    let line = notice(sandbox, id, q, ask, command);
    let prompted = prompts.is_some_and(|p| p.asked(id, prompt_text(sandbox, id, q, ask, command)));
    if !prompted {
        say(&line);
    }
    let desktop = ["DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    if desktop && let Some(program) = paddock_core::tools::find_program("notify-send") {
        let spawned = Command::new(program)
            .args(["--app-name=paddock", "--urgency=normal"])
            .arg(format!("Paddock: {sandbox} asks to reach {}", q.host))
            .arg(&line)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = spawned {
            // Reaped in the background: notify-send returns at once.
            std::thread::spawn(move || child.wait());
        }
    }
}

/// Request `id` no longer waits: its prompt goes.
pub fn gone(id: i64, prompts: Option<&Prompts>) {
    if let Some(p) = prompts {
        p.gone(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(host: &str, rule: &str, reason: &str) -> Record {
        Record {
            sandbox: "web".into(),
            client: "c".into(),
            method: "GET".into(),
            host: host.into(),
            port: Some(8080),
            path: Some("/x".into()),
            action: "deny",
            rule: rule.into(),
            reason: reason.into(),
            status: Some(403),
        }
    }

    #[test]
    fn a_denial_is_told_once_per_host_in_a_while_with_its_fix() {
        let d = Denials::default();
        let default = denied(
            "a.test",
            "default",
            "no rule allows this host and port (deny by default)",
        );
        assert_eq!(
            d.notice(&default).as_deref(),
            Some(
                "paddock: web denied GET a.test:8080/x: no rule allows this host and port (deny by default). To allow it: paddock policy allow a.test --port 8080 --sandbox web."
            )
        );
        // The same host again, soon: quiet; another host is told.
        assert_eq!(d.notice(&default), None);
        assert_eq!(d.notice(&default), None);
        let by_rule = denied("b.test", "7", "denied by rule 7 (web)");
        assert_eq!(
            d.notice(&by_rule).as_deref(),
            Some(
                "paddock: web denied GET b.test:8080/x: denied by rule 7 (web). To allow it: paddock policy rm 7."
            )
        );
        // Once the quiet time is over, the next says how many were not told.
        d.0.lock().unwrap().get_mut("a.test").unwrap().0 -= QUIET;
        assert!(
            d.notice(&default)
                .unwrap()
                .ends_with("(2 more denials of a.test since the last notice.)")
        );
        // Allowed requests and failures are not denials.
        let mut allowed = denied("c.test", "3", "allowed by rule 3 (web)");
        allowed.action = "allow";
        assert_eq!(d.notice(&allowed), None);
    }

    /// An answer at the prompt is taken only for a request this hub put up and that still
    /// waits, and does what the key says: `a` makes a rule exactly as the request was seen.
    #[test]
    fn a_prompt_answer_is_taken_only_for_a_request_put_up_here() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = Store::open(&db).unwrap();
        let ask = |sandbox, path| match store
            .ask(
                &paddock_store::NewAsk {
                    sandbox,
                    kind: "http",
                    host: "api.example.com",
                    port: 80,
                    method: Some("GET"),
                    path: Some(path),
                    rule: None,
                    expires_at: i64::MAX,
                },
                64,
            )
            .unwrap()
        {
            paddock_store::AskSlot::New(id) => id,
            other => panic!("{other:?}"),
        };
        let mine = ask("web", "/v1/x");
        let other = ask("db", "/v1/y");
        let prompts = Prompts::new(db.clone(), "web");
        // Not put up here: refused, whoever's it is.
        assert!(prompts.answer(mine, Choice::Always).is_err());
        prompts.asked(mine, "web asks".into());
        prompts.asked(other, "db asks".into());
        let e = prompts.answer(other, Choice::Once).unwrap_err();
        assert!(e.contains("is of sandbox db"), "{e}");
        prompts.answer(mine, Choice::Always).unwrap();
        let rules = store.rules_for("web").unwrap();
        assert!(
            rules
                .iter()
                .any(|r| r.rule.host.to_string() == "api.example.com"
                    && r.rule.path.as_ref().map(|p| p.as_str()) == Some("/v1/x")
                    && r.source.contains(&format!("request {mine}"))),
            "{rules:?}"
        );
        // Answered: the next answer for it finds nothing waiting.
        prompts.gone(mine);
        assert!(prompts.answer(mine, Choice::Deny).is_err());
        // The other sandbox's request still waits, untouched.
        assert_eq!(store.pending_one(other).unwrap().sandbox, "db");
    }

    #[test]
    fn the_notice_names_the_request_and_both_answers() {
        let q = Question {
            kind: "http".into(),
            host: "example.com".into(),
            port: 80,
            method: Some("GET".into()),
            path: Some("/x".into()),
            rule: Some(3),
            client: None,
        };
        assert_eq!(
            notice("web", 7, &q, AskSettings::default(), None),
            "paddock: web asks to reach GET http://example.com:80/x (request 7). Answer with `paddock policy approve 7` (add --always to keep allowing it) or `paddock policy deny 7`; denied in 60 s otherwise."
        );
        assert!(
            notice("web", 7, &q, AskSettings::default(), Some("curl -sS http://example.com/x"))
                .starts_with("paddock: web asks to reach GET http://example.com:80/x from `curl -sS http://example.com/x` (request 7).")
        );
    }
}
