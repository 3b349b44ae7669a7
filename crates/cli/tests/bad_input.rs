//! Bad input: a one-line error, a non-zero exit, and nothing created.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{paddock, stderr};

fn sandboxes() -> usize {
    let out = paddock().args(["ls", "--json"]).output().unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Array(vec![]));
    v.as_array().map(Vec::len).unwrap_or(0)
}

fn check(args: &[&str], want: &str) {
    let before = sandboxes();
    let out = paddock().args(args).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("paddock: error: ") && first.contains(want),
        "{args:?}: {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(sandboxes(), before, "{args:?} created something");
}

#[test]
fn bad_input_is_refused_cleanly() {
    let ws = common::workspace();
    let w = ws.path().to_str().unwrap();
    check(
        &["run", "-w", "/nonexistent/paddock-ws", "--", "true"],
        "workspace /nonexistent/paddock-ws does not exist",
    );
    check(
        &[
            "run",
            "-w",
            w,
            "--mount",
            "/nonexistent/src:ro",
            "--",
            "true",
        ],
        "mount source /nonexistent/src does not exist",
    );
    check(
        &["run", "-w", w, "--memory", "12potatoes", "--", "true"],
        "--memory: invalid size \"12potatoes\"",
    );
    check(
        &["run", "-w", w, "--backend", "nope", "--", "true"],
        "unknown backend \"nope\"",
    );
    check(&["run", "-w", w, "--cpus", "lots", "--", "true"], "--cpus");
    check(
        &["run", "-w", w, "--name", "Bad/Name", "--", "true"],
        "invalid sandbox name",
    );
    check(
        &["run", "-w", "/", "--", "true"],
        "refusing to use / as the workspace",
    );
    check(
        &["run", "-w", w, "--mount", "relative:ro", "--", "true"],
        "invalid mount",
    );
    check(
        &["rm", "no-such-sandbox"],
        "no sandbox named no-such-sandbox",
    );
}
