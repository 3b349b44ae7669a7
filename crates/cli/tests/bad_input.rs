//! Bad input: a one-line error, a non-zero exit, and nothing created.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{paddock, stderr};

fn sandboxes() -> usize {
    let out = paddock().args(["ls", "--all", "--json"]).output().unwrap();
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
        "refusing to share /: it is /, a system location",
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

/// Limits beyond the host's (a slip: `100t` for `100g`) are refused by every command that
/// takes them, with the host's figure, before anything exists.
#[test]
fn limits_beyond_the_host_are_refused() {
    let ws = common::workspace();
    let w = ws.path().to_str().unwrap();
    check(
        &["run", "-w", w, "--cpus", "999", "--", "true"],
        "--cpus 999 is more than this host's ",
    );
    check(
        &["create", "-w", w, "--name", "too-big", "--memory", "100t"],
        "--memory 100T is more than this host's ",
    );
    check(
        &["update", "too-big", "--cpus", "999"],
        "online CPU(s); give at most --cpus ",
    );
}

/// Shares that would hand the agent the host, Paddock itself or a host service (the outside
/// review's cases): refused before anything exists, with what to do instead.
#[test]
fn shares_that_hand_over_the_host_are_refused() {
    let ws = common::workspace();
    let w = ws.path().to_str().unwrap();
    for (dir, location) in [
        ("/usr/local", "lies inside /usr"),
        ("/usr/bin", "lies inside /usr"),
        ("/etc", "is /etc"),
        ("/var/lib", "lies inside /var"),
        ("/var/tmp", "is /var/tmp"),
        ("/home", "is /home"),
        ("/", "is /"),
    ] {
        check(
            &["run", "-w", dir, "--", "true"],
            &format!("refusing to share {dir}: it {location}, a system location"),
        );
        check(
            &[
                "run",
                "-w",
                w,
                "--mount",
                &format!("{dir}:/x:ro"),
                "--",
                "true",
            ],
            &format!("refusing to share {dir}: it {location}"),
        );
    }
    // Resolved first: a symlink in the workspace leading to /etc is /etc.
    std::os::unix::fs::symlink("/etc", ws.path().join("etc-link")).unwrap();
    check(
        &[
            "run",
            "-w",
            w,
            "--mount",
            &format!("{w}/etc-link:/x"),
            "--",
            "true",
        ],
        "refusing to share /etc: it is /etc",
    );
    // Paddock's own state (the secrets key, other sandboxes' control sockets).
    let home = common::home();
    std::fs::create_dir_all(home.join("run")).unwrap();
    let home = std::fs::canonicalize(home).unwrap();
    let h = home.to_str().unwrap();
    check(
        &[
            "run",
            "-w",
            w,
            "--mount",
            &format!("{h}:/x:ro"),
            "--",
            "true",
        ],
        &format!("refusing to share {h}: it is Paddock's state directory"),
    );
    check(
        &[
            "run",
            "-w",
            w,
            "--mount",
            &format!("{h}/run:/x"),
            "--",
            "true",
        ],
        &format!("refusing to share {h}/run: it lies inside Paddock's state directory"),
    );
    check(
        &["run", "-w", h, "--", "true"],
        &format!("refusing to share {h}: it is Paddock's state directory"),
    );
    // A socket (here one of the test's own) only with the flag that says the risk.
    let sock = ws.path().join("service.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let s = sock.to_str().unwrap();
    check(
        &[
            "run",
            "-w",
            w,
            "--mount",
            &format!("{s}:/run/s.sock"),
            "--",
            "true",
        ],
        "it is a socket, which gives the agent whatever listens behind it",
    );
    check(
        &["run", "-w", w, "--mount", "/dev/null:/x", "--", "true"],
        "refusing to share /dev/null: it is a device",
    );
    common::ensure_image();
    let name = common::unique("sock-ok");
    let ok = paddock()
        .args([
            "create",
            "--name",
            &name,
            "-w",
            w,
            "--dangerously-mount-sockets",
        ])
        .args(["--mount", &format!("{s}:/run/s.sock"), "--", "true"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    // As root, a share root owns is said to be one (a user's own shares are the user's).
    if common::is_root() && common::suite_as_user().is_none() {
        assert!(
            String::from_utf8_lossy(&ok.stderr).contains(common::ROOT_SHARE_WARNING),
            "{ok:?}"
        );
    }
    common::remove(&name);
}

#[test]
fn bad_secret_input_is_refused_and_stores_nothing() {
    let ls = || common::stdout(&paddock().args(["secret", "ls", "--json"]).output().unwrap());
    let before = ls();
    check(
        &["secret", "set", "nosuchservice"],
        "unknown service \"nosuchservice\"",
    );
    check(
        &[
            "secret",
            "set-custom",
            "x",
            "--host",
            "bad host",
            "--header",
            "x-key",
        ],
        "--host",
    );
    check(
        &[
            "secret",
            "set-custom",
            "x",
            "--host",
            "10.0.0.1",
            "--header",
            "x-key",
        ],
        "give the host's name",
    );
    check(
        &["secret", "set-custom", "x", "--host", "api.example.com"],
        "say how the secret is sent",
    );
    check(
        &[
            "secret",
            "set-custom",
            "bad/name",
            "--host",
            "api.example.com",
            "--placeholder",
        ],
        "secret name \"bad/name\"",
    );
    check(
        &["secret", "set", "openai", "--sandbox", "Bad/Name"],
        "--sandbox",
    );
    check(
        &["secret", "rm", "never-stored-xyz"],
        "no secret \"never-stored-xyz\"",
    );
    // An empty value (stdin is empty) is refused too.
    let out = paddock()
        .args(["secret", "set", "openai"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("the secret is empty"), "{out:?}");
    assert_eq!(ls(), before);
    // A value given on the command line is not accepted at all.
    let out = paddock()
        .args(["secret", "set", "openai", "sk-on-the-command-line"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(ls(), before);
}

/// A listing read by something that stops early (`paddock ls --all | head`): paddock ends
/// quietly, by SIGPIPE as other tools do, never with a panic and a backtrace.
#[test]
fn a_reader_that_goes_early_ends_a_listing_quietly() {
    use std::os::unix::process::ExitStatusExt;
    for args in [
        &["completions", "bash"][..],
        &["policy", "ls"][..],
        &["ls", "--all"][..],
        &["doctor"][..],
    ] {
        // A pipe whose reader is gone before paddock writes its first byte.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = paddock()
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert!(!stderr(&out).contains("panicked"), "{args:?}: {out:?}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {out:?}"
        );
    }
}

#[test]
fn an_upstream_proxy_paddock_cannot_use_is_refused_cleanly() {
    let ws = common::workspace();
    let w = ws.path().to_str().unwrap();
    check(
        &[
            "run",
            "-w",
            w,
            "--upstream-proxy",
            "https://u:secret@proxy.example:443",
            "--",
            "true",
        ],
        "--upstream-proxy: upstream proxy https://***@proxy.example:443: TLS to the proxy (https://) is not supported",
    );
    // The host's own variable: refused too, rather than going direct, with the way out.
    let out = paddock()
        .env("HTTPS_PROXY", "socks5://proxy.example:1080")
        .args(["create", "-w", w])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("only http:// proxies are supported") && err.contains("--upstream-proxy none"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
}
