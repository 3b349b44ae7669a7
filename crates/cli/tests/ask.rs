//! Ask mode from inside real sandboxes: curl waits while the proxy holds its request, and the
//! user answers with `paddock policy pending`, `approve` and `deny`, as a user would, from
//! another process on the host; or at the prompt on the run's terminal. One scenario per
//! backend walks every answer, and one more the terminal's prompt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{stderr, stdout, unique};

on_every_backend!(
    a_held_request_waits_for_the_users_answer,
    the_terminal_prompts_and_only_the_user_answers,
    a_terminal_attached_later_gets_the_prompt
);

fn policy(args: &[&str]) -> Output {
    let o = common::paddock().arg("policy").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "policy {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

/// Waits until `name` has a request whose words contain `what` with `waiting` clients on it;
/// returns its id. `done` says the sandbox ended (nothing more will come).
fn asked(name: &str, what: &str, waiting: i64, done: &dyn Fn() -> bool) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let o = policy(&["pending", "--json", "--sandbox", name]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
        if let Some(r) = rows.iter().find(|r| {
            let words = format!(
                "{} {}:{}{}",
                r["method"].as_str().unwrap_or("CONNECT"),
                r["host"].as_str().unwrap(),
                r["port"],
                r["path"].as_str().unwrap_or("")
            );
            words.contains(what) && r["waiting"].as_i64().unwrap() >= waiting
        }) {
            return r["id"].as_i64().unwrap();
        }
        assert!(
            Instant::now() < deadline && !done(),
            "no request {what:?} of {name} waits ({rows:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A directory for an upstream's files (`www/`, each file holding a line), and what else a
/// test keeps beside them; returns it and the files' root.
fn upstream_files(prefix: &str, files: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = dir.path().join("www");
    for f in files {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "hello from upstream\n").unwrap();
    }
    (dir, root)
}

fn a_held_request_waits_for_the_users_answer(backend: &str) {
    common::ensure_image();
    let (dir, root) = upstream_files(
        "paddock-ask-",
        &["hello.txt", "v1/x", "v2/a", "v2/b", "v3/c"],
    );
    let (ca, cert, key) = common::test_certificates(dir.path(), "server", &["up.test", "tls.test"]);
    let http = common::static_server(&root, None);
    let https = common::static_server(&root, Some((&cert, &key)));
    let ws = common::workspace();
    let name = unique("ask");
    let (hp, sp) = (http.port, https.port);
    // Every host no other rule names asks (`run --ask-unlisted`).
    // And one host is denied outright: its HTTPS refusals explain themselves to curl, pip and
    // npm inside, naming the rule and the command.
    let o = policy(&["deny", "denied.test", "--port", "any", "--sandbox", &name]);
    let deny_rule: i64 = stdout(&o)
        .strip_prefix("rule ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", stdout(&o)));
    let home = common::home();
    let script = format!(
        r#"
H=http://up.test:{hp}
step() {{ echo "$1 $(curl -sS -o /dev/null -w '%{{http_code}}' "$2" 2>&1)"; }}
(step once-a $H/hello.txt) & step once-b $H/hello.txt; wait
step once-again $H/hello.txt
step always $H/v1/x
step always-again $H/v1/x
step path $H/v2/a
step path-ok $H/v2/b
step path-other $H/v3/c
echo "tls $(curl -sS -o /dev/null -w '%{{http_code}}' --cacert /etc/paddock-test/ca.pem https://tls.test:{sp}/hello.txt 2>&1)"
test -e {home} && echo "state: visible" || echo "state: hidden"
echo "curl-denied: $(curl -sS https://denied.test:{sp}/x 2>&1 | tr '\n' '|')"
pip download demo --retries 1 --no-deps -d /tmp/pip --index-url https://denied.test:{sp}/simple/ 2>&1 | grep -m1 -o 'Tunnel connection failed: 403 .*' | sed 's/^/pip-denied: /'
npm view demo version --fetch-retries 0 --registry https://denied.test:{sp}/npm/ 2>&1 | grep -m1 -o '403 Forbidden by Paddock.*' | sed 's/^/npm-denied: /'
"#,
        home = home.display()
    );
    let ca_mount = format!("{}:/etc/paddock-test:ro", ca.parent().unwrap().display());
    let child = {
        let (ws, name, backend) = (ws.path().to_owned(), name.clone(), backend.to_owned());
        std::thread::spawn(move || {
            let mut c = common::paddock_for(&backend);
            c.env(
                "PADDOCK_TEST_RESOLVE",
                "up.test=127.0.0.1;tls.test=127.0.0.1",
            )
            .args(["run", "--backend", &backend, "--name", &name, "-w"])
            .arg(&ws)
            .args(["--mount", &ca_mount, "--allow", "127.0.0.1"])
            .args(["--ask-unlisted", "--ask-timeout", "5"])
            .args(["--", "sh", "-c", &script])
            .output()
            .unwrap()
        })
    };
    let done = || child.is_finished();
    // Two identical requests wait on one question; approved once, both go.
    let once = asked(&name, &format!("GET up.test:{hp}/hello.txt"), 2, &done);
    // Where the backend can tell (ns, the supervisor being the user), it says which command
    // asked; gVisor's and a VM's processes are not the host's to look at.
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&policy(&["pending", "--json", "--sandbox", &name]))).unwrap();
    let command = rows
        .iter()
        .find(|r| r["id"] == once)
        .map(|r| r["command"].clone())
        .unwrap();
    match backend {
        "ns" if common::suite_as_user().is_some() => {
            assert!(
                command.as_str().is_some_and(
                    |c| c.starts_with("curl -sS -o /dev/null") && c.contains("/hello.txt")
                ),
                "{rows:?}"
            )
        }
        _ => assert!(command.is_null(), "{rows:?}"),
    }
    policy(&["approve", &once.to_string()]);
    // The next identical one asks again; denied.
    let again = asked(&name, &format!("GET up.test:{hp}/hello.txt"), 1, &done);
    assert_ne!(again, once);
    policy(&["deny", &again.to_string()]);
    // Approved always: a rule, and the next identical request does not ask.
    let always = asked(&name, &format!("GET up.test:{hp}/v1/x"), 1, &done);
    let o = policy(&["approve", &always.to_string(), "--always"]);
    assert!(stdout(&o).contains("allow up.test"), "{}", stdout(&o));
    // A path-scoped approval for this run: /v2/ passes, /v3/ asks again (and times out).
    let path = asked(&name, &format!("GET up.test:{hp}/v2/a"), 1, &done);
    policy(&["approve", &path.to_string(), "--for-run", "--path", "/v2/"]);
    asked(&name, &format!("GET up.test:{hp}/v3/c"), 1, &done);
    // An HTTPS request waits as its CONNECT.
    let tls = asked(&name, &format!("CONNECT tls.test:{sp}"), 1, &done);
    policy(&["approve", &tls.to_string()]);
    let o = child.join().unwrap();
    let out = stdout(&o);
    let rules = stdout(&policy(&["ls", "--sandbox", &name]));
    let log = stdout(&policy(&["log", "--sandbox", &name, "--limit", "100"]));
    let _ = common::paddock().args(["rm", "-f", &name]).output();
    for want in [
        "once-a 200",
        "once-b 200",
        "once-again 403",
        "always 200",
        "always-again 200",
        "path 200",
        "path-ok 200",
        "path-other 403",
        "tls 200",
        "state: hidden",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}\nstderr:\n{}",
            stderr(&o)
        );
    }
    // Each client says what denied it and what would change that.
    let fix = format!("paddock policy rm {deny_rule}");
    for (client, want) in [
        (
            "curl-denied: ",
            format!(
                "paddock: GET https://denied.test:{sp}/x denied: denied by rule {deny_rule} ({name})|to allow it: {fix}   # an explicit deny rule decided|"
            ),
        ),
        (
            "pip-denied: ",
            format!(
                "Tunnel connection failed: 403 Forbidden by Paddock (rule={deny_rule}); to allow it: {fix}"
            ),
        ),
        (
            "npm-denied: ",
            format!(
                "403 Forbidden by Paddock (rule={deny_rule}); to allow it: {fix} - GET https://denied.test:{sp}/npm/demo"
            ),
        ),
    ] {
        assert!(
            out.lines()
                .any(|l| l.strip_prefix(client).is_some_and(|l| l.starts_with(&want))),
            "{client}{want:?} not in:\n{out}"
        );
    }
    // The user was told on the run's terminal, with the commands that answer (and, where the
    // backend can tell, the command that asked).
    let from = match &command {
        serde_json::Value::String(c) => format!(" from `{c}`"),
        _ => String::new(),
    };
    assert!(
        stderr(&o).contains(&format!(
            "asks to reach GET http://up.test:{hp}/hello.txt{from} (request {once}). Answer with `paddock policy approve {once}`"
        )),
        "{}",
        stderr(&o)
    );
    // Each denial is told on the run's terminal too, with what would allow it.
    assert!(
        stderr(&o).contains(&format!(
            "paddock: {name} denied GET up.test:{hp}/hello.txt: rule "
        )) && stderr(&o).contains(&format!(
            "To allow it: paddock policy allow up.test --port {hp} --sandbox {name}."
        )),
        "{}",
        stderr(&o)
    );
    // The preset ends in the ask; the always rule stays, saying where it came from; the one for
    // the run went with it.
    assert!(
        rules.lines().any(|l| l.contains("ask")
            && l.contains("**")
            && l.contains("any")
            && l.contains("preset:balanced")),
        "{rules}"
    );
    assert!(
        rules.lines().any(|l| l.contains("allow")
            && l.contains("up.test")
            && l.contains("/v1/x")
            && l.contains("approved by the user at")
            && l.contains(&format!("request {always}"))),
        "{rules}"
    );
    assert!(!rules.contains("/v2/*"), "{rules}");
    // The audit log says who decided and how long each request waited.
    for want in [
        format!("request {once} allowed by the user after"),
        format!("request {again} denied by the user after"),
        "no answer within 5 s".to_owned(),
    ] {
        assert!(log.contains(&want), "missing {want:?} in:\n{log}");
    }
    drop((http, https, dir));
}

/// An interactive run on a terminal (a pty): each request that waits is put to the user on
/// the host's side of the relay, the sandbox's output held meanwhile; a terminal's reply to
/// the sandbox's query answers nothing, nor do the keys the sandbox writes to its terminal.
fn the_terminal_prompts_and_only_the_user_answers(backend: &str) {
    use std::io::Write;
    common::ensure_image();
    let (dir, root) = upstream_files("paddock-askpty-", &["a", "b", "c", "d"]);
    let http = common::static_server(&root, None);
    let ws = common::workspace();
    let name = unique("askpty");
    let _cleanup = common::Cleanup(name.clone());
    let hp = http.port;
    // While each request waits, the sandbox writes to its terminal what would answer it if it
    // reached the prompt, and a cursor-position query (a terminal's reply is input).
    let script = format!(
        r#"
H=http://up.test:{hp}
get() {{ curl -sS -o /dev/null -w "$1 %{{http_code}}\n" "$H/$1"; }}
noise() {{ (sleep 1; printf 'y\r\033[6n'; while :; do echo tick; sleep 0.2; done) & NOISE=$!; }}
echo ready
noise; get a; kill $NOISE
get b
get b
get c
echo over
"#
    );
    let mut cmd = common::paddock_for(backend);
    cmd.env("PADDOCK_TEST_RESOLVE", "up.test=127.0.0.1")
        .args(["run", "--backend", backend, "--name", &name, "-w"])
        .arg(ws.path())
        .args([
            "--allow",
            "127.0.0.1",
            "--ask-unlisted",
            "--ask-timeout",
            "120",
        ])
        .args(["--", "sh", "-c", &script]);
    let (mut child, mut term) = common::spawn_on_pty(cmd);
    let mut seen = String::new();
    common::read_until(&mut term, "ready", &mut seen);
    let prompt = |what: &str| format!("asks to reach GET http://up.test:{hp}/{what} ");
    // The first request: its prompt, then the sandbox's noise after a second. Nothing of
    // the sandbox's output shows while the prompt is up.
    common::read_until(&mut term, &prompt("a"), &mut seen);
    common::read_until(&mut term, "(request ", &mut seen);
    let shown_at = seen.len();
    // It names the command that asked, where the backend can tell.
    if backend == "ns" && common::suite_as_user().is_some() {
        assert!(
            seen.contains("/a from `curl -sS -o /dev/null -w"),
            "{seen:?}"
        );
    }
    // A terminal's reply to the sandbox's query comes as input: it answers nothing, though
    // it holds answer keys.
    std::thread::sleep(Duration::from_millis(1500));
    term.write_all(b"\x1b[12;1R\x1b]11;rgb:aaaa/dddd/yyyy\x07")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    common::read_within(&mut term, "\u{0}", &mut seen, 1);
    let held = &seen[shown_at..];
    assert!(
        !held.contains("tick") && !held.contains("a 200") && !held.contains("request"),
        "the sandbox's output or an answer came while the prompt showed: {held:?}"
    );
    // The request still waits: the sandbox's `y` and the reply answered nothing.
    let id = asked(&name, &format!("GET up.test:{hp}/a"), 1, &|| false);
    // The user answers once.
    term.write_all(b"y").unwrap();
    common::read_until(
        &mut term,
        &format!("request {id}: allowed once."),
        &mut seen,
    );
    common::read_until(&mut term, "a 200", &mut seen);
    assert!(
        seen[shown_at..].contains("tick"),
        "the held output did not go on: {seen:?}"
    );
    // Always, exactly this request: the next identical one does not ask.
    common::read_until(&mut term, &prompt("b"), &mut seen);
    std::thread::sleep(Duration::from_millis(400));
    term.write_all(b"a").unwrap();
    common::read_until(&mut term, "allowed from now on.", &mut seen);
    common::read_until(&mut term, "b 200\r\n", &mut seen);
    let after_b = seen.len();
    common::read_until(&mut term, &prompt("c"), &mut seen);
    let between = &seen[after_b..];
    assert_eq!(between.matches("b 200").count(), 1, "{between:?}");
    assert!(!between.contains(&prompt("b")), "asked again: {between:?}");
    // Denied at the prompt.
    std::thread::sleep(Duration::from_millis(400));
    term.write_all(b"n").unwrap();
    common::read_until(&mut term, "c 403", &mut seen);
    common::read_until(&mut term, "over", &mut seen);
    let status = common::wait_within(&mut child, 120, "the interactive run");
    assert!(status.success(), "{status:?}: {seen}");
    let rules = stdout(&policy(&["ls", "--sandbox", &name]));
    let log = stdout(&policy(&["log", "--sandbox", &name, "--limit", "50"]));
    assert!(
        rules.lines().any(|l| l.contains("allow")
            && l.contains("up.test")
            && l.contains("/b")
            && l.contains("approved by the user at")),
        "{rules}"
    );
    for want in [
        format!("request {id} allowed by the user after"),
        "denied by the user after".to_owned(),
    ] {
        assert!(log.contains(&want), "missing {want:?} in:\n{log}");
    }
    drop((http, dir));
}

/// A sandbox running in the background with a terminal: its request's prompt goes to the
/// terminal attached later (`paddock attach`), which answers it with a key.
fn a_terminal_attached_later_gets_the_prompt(backend: &str) {
    use std::io::Write;
    common::ensure_image();
    let (dir, root) = upstream_files("paddock-askattach-", &["a"]);
    let http = common::static_server(&root, None);
    let ws = common::workspace();
    let name = unique("askattach");
    let _cleanup = common::Cleanup(name.clone());
    let script = format!(
        "sleep 1; curl -sS -o /dev/null -w 'got %{{http_code}}\\n' http://up.test:{}/a; sleep 60",
        http.port
    );
    let o = common::paddock_for(backend)
        .env("PADDOCK_TEST_RESOLVE", "up.test=127.0.0.1")
        .args([
            "run",
            "-d",
            "-t",
            "--backend",
            backend,
            "--name",
            &name,
            "-w",
        ])
        .arg(ws.path())
        .args([
            "--allow",
            "127.0.0.1",
            "--ask-unlisted",
            "--ask-timeout",
            "120",
        ])
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut attach = common::paddock_for(backend);
    attach.args(["attach", &name]);
    let (mut child, mut term) = common::spawn_on_pty(attach);
    let mut seen = String::new();
    common::read_until(
        &mut term,
        &format!("asks to reach GET http://up.test:{}/a", http.port),
        &mut seen,
    );
    common::read_until(&mut term, "(request ", &mut seen);
    std::thread::sleep(Duration::from_millis(500));
    term.write_all(b"y").unwrap();
    common::read_until(&mut term, "allowed once.", &mut seen);
    common::read_until(&mut term, "got 200", &mut seen);
    // Detached (Ctrl-P Ctrl-Q), the command goes on.
    term.write_all(&[0x10, 0x11]).unwrap();
    let status = common::wait_within(&mut child, 60, "paddock attach");
    assert!(status.success(), "{status:?}: {seen}");
    drop((http, dir));
}
