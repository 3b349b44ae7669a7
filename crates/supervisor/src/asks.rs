//! Telling the user that a request waits for an answer: a line on the supervisor's standard
//! error (the attached terminal, or the sandbox's log when it runs in the background) and a
//! desktop notification where `notify-send` and a desktop session exist.
//!
//! What is told comes from the proxy process, which parses the sandbox's bytes: the request
//! has been checked ([`paddock_proxy::ask`]: a canonical host, a method and a path without
//! control characters), and it goes to `notify-send` as an argument, never through a shell.

use std::io::Write;
use std::process::{Command, Stdio};

use paddock_proxy::ask::{AskSettings, Question};

/// The line that says request `id` of `sandbox` waits, and how to answer it.
pub fn notice(sandbox: &str, id: i64, q: &Question, ask: AskSettings) -> String {
    format!(
        "paddock: {sandbox} asks to reach {} (request {id}). Answer with `paddock policy approve {id}` (add --always to keep allowing it) or `paddock policy deny {id}`; denied in {} s otherwise.",
        q.request(),
        ask.timeout_ms / 1000
    )
}

/// Tells the user of request `id`.
pub fn tell(sandbox: &str, id: i64, q: &Question, ask: AskSettings) {
    let line = notice(sandbox, id, q, ask);
    // A terminal in raw mode needs the carriage returns; a log file takes them as they are.
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\n{line}\r\n");
    let _ = err.flush();
    drop(err);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notice_names_the_request_and_both_answers() {
        let q = Question {
            kind: "http".into(),
            host: "example.com".into(),
            port: 80,
            method: Some("GET".into()),
            path: Some("/x".into()),
            rule: Some(3),
        };
        assert_eq!(
            notice("web", 7, &q, AskSettings::default()),
            "paddock: web asks to reach GET http://example.com:80/x (request 7). Answer with `paddock policy approve 7` (add --always to keep allowing it) or `paddock policy deny 7`; denied in 60 s otherwise."
        );
    }
}
