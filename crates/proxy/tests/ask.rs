//! Requests an `ask` rule holds: the real proxy, the real state store and its question
//! service, curl and raw sockets as clients, a plain HTTP origin on loopback. The user's
//! answers are written to the store as `paddock policy approve`/`deny` write them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use paddock_policy::net::{Action, PathGlob, Rule, Scope};
use paddock_proxy::ask::{AskSettings, Asker, serve_asks};
use paddock_proxy::channel::serve_rules;
use paddock_proxy::rules::RuleSource;
use paddock_store::{AskRow, Grant, Store};
use support::{Proxy, Setup, http_origin};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A proxy whose rules and questions are served from the store in `dir` (sandbox `t`):
/// `ask ** port any`, and an allow for the origin's loopback address. `asks_end` gets the
/// privileged end of the question stream when the test wants to cut it itself.
fn proxy(dir: &Path, settings: AskSettings, serve_questions: bool) -> (Proxy, Option<UnixStream>) {
    let db = dir.join("state.db");
    let store = Store::open(&db).unwrap();
    let t = Scope::Sandbox("t".into());
    let mut any = Rule::parse_target(Action::Ask, "**").unwrap();
    any.port = paddock_policy::net::PortSpec::Any;
    store
        .add(
            &t,
            &[any, Rule::parse_target(Action::Allow, "127.0.0.1").unwrap()],
            "test",
        )
        .unwrap();
    let (rules, rules_end) = UnixStream::pair().unwrap();
    let served = db.clone();
    std::thread::spawn(move || serve_rules(rules_end, &Store::open(&served).unwrap(), "t"));
    let (asks, asks_end) = UnixStream::pair().unwrap();
    let kept = if serve_questions {
        let served = db.clone();
        std::thread::spawn(move || {
            serve_asks(
                asks_end,
                &Store::open(&served).unwrap(),
                "t",
                settings,
                &|_| {},
            )
        });
        None
    } else {
        Some(asks_end)
    };
    let names: Vec<(&str, IpAddr)> = vec![
        ("a.test", LOCAL),
        ("b.test", LOCAL),
        ("c.test", LOCAL),
        ("d.test", LOCAL),
    ];
    let proxy = Proxy::start_with(
        Setup {
            dir,
            rules: &[],
            names: &names,
            credentials: None,
        },
        |cfg| {
            cfg.rules = RuleSource::remote(rules);
            cfg.asks = Some(Asker::start(asks, settings).unwrap());
        },
    );
    (proxy, kept)
}

/// Waits until a request for `host` waits with `waiting` clients; returns it.
fn waiting_for(store: &Store, host: &str, waiting: i64) -> AskRow {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(r) = store
            .pending(Some("t"))
            .unwrap()
            .into_iter()
            .find(|r| r.host == host && r.waiting >= waiting)
        {
            return r;
        }
        assert!(Instant::now() < deadline, "no request for {host} waits");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn curl_in_background(
    proxy: &Proxy,
    url: String,
) -> std::thread::JoinHandle<(i32, String, String)> {
    let addr = proxy.addr;
    std::thread::spawn(move || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", "-x", &format!("http://{addr}")])
            .args(["-w", "\nstatus=%{http_code}"])
            .arg(url)
            .env_clear()
            .output()
            .expect("curl is needed by these tests");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

#[test]
fn held_requests_wait_for_the_answer_and_identical_ones_go_together() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, seen) = http_origin();
    let (proxy, _) = proxy(dir.path(), AskSettings::default(), true);
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let url = format!("http://a.test:{}/x", origin.port());
    let first = curl_in_background(&proxy, url.clone());
    let second = curl_in_background(&proxy, url.clone());
    let asked = waiting_for(&store, "a.test", 2);
    assert_eq!(
        (
            asked.kind.as_str(),
            asked.method.as_deref(),
            asked.path.as_deref()
        ),
        ("http", Some("GET"), Some("/x"))
    );
    // Nothing reached the origin while the request waited.
    assert!(seen.lock().unwrap().is_empty());
    store.answer(asked.id, true, "the user", None).unwrap();
    for c in [first, second] {
        let (code, out, err) = c.join().unwrap();
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("origin saw: GET /x") && out.contains("status=200"),
            "{out}"
        );
    }
    // Once: the next identical request asks again; denied, it says by whom.
    let third = curl_in_background(&proxy, url);
    let again = waiting_for(&store, "a.test", 1);
    assert_ne!(again.id, asked.id);
    store.answer(again.id, false, "the user", None).unwrap();
    let (_, out, _) = third.join().unwrap();
    assert!(
        out.contains("status=403")
            && out.contains(&format!("request {} denied by the user", again.id)),
        "{out}"
    );
    let rows = proxy.audit();
    let held: Vec<_> = rows.iter().filter(|r| r.host == "a.test").collect();
    assert_eq!(held.len(), 3, "{rows:#?}");
    assert!(
        held.iter().filter(|r| r.action == "allow").all(|r| r
            .reason
            .contains(&format!("request {} allowed by the user after", asked.id))),
        "{held:#?}"
    );
}

#[test]
fn an_approval_with_a_rule_decides_again_with_it_and_no_answer_denies() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _) = http_origin();
    let settings = AskSettings {
        timeout_ms: 1500,
        limit: 64,
    };
    let (proxy, _) = proxy(dir.path(), settings, true);
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let port = origin.port();
    let v1 = curl_in_background(&proxy, format!("http://b.test:{port}/v1/x"));
    let asked = waiting_for(&store, "b.test", 1);
    // An approval for the paths under /v1/ (what `approve --path /v1/ --always` makes).
    let mut rule = Rule::parse_target(Action::Allow, "b.test").unwrap();
    rule.port = paddock_policy::net::PortSpec::Port(port);
    rule.path = Some(PathGlob::parse("/v1/*").unwrap());
    let t = Scope::Sandbox("t".into());
    let made = store
        .answer(
            asked.id,
            true,
            "the user (always)",
            Some(&Grant {
                scope: &t,
                rule: &rule,
                source: "approved",
                until_stop: false,
            }),
        )
        .unwrap()
        .unwrap();
    let (_, out, _) = v1.join().unwrap();
    assert!(out.contains("status=200"), "{out}");
    // The rule lets the next /v1/ request through without asking...
    let started = Instant::now();
    let (_, out, _) = curl_in_background(&proxy, format!("http://b.test:{port}/v1/y"))
        .join()
        .unwrap();
    assert!(out.contains("status=200"), "{out}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    // ...and /v2/ asks again; unanswered, it is denied when the time runs out.
    let v2 = curl_in_background(&proxy, format!("http://b.test:{port}/v2/y"));
    let again = waiting_for(&store, "b.test", 1);
    assert_eq!(again.path.as_deref(), Some("/v2/y"));
    let (_, out, _) = v2.join().unwrap();
    assert!(
        out.contains("status=403") && out.contains("no answer within 1 s"),
        "{out}"
    );
    assert!(store.pending(None).unwrap().is_empty());
    let rows = proxy.audit();
    assert!(
        rows.iter().any(|r| r.path.as_deref() == Some("/v1/y")
            && r.action == "allow"
            && r.rule == made.to_string()),
        "{rows:#?}"
    );
}

/// Sends a CONNECT for `host` and returns the status line, or "" when nothing came in `wait`.
fn connect(proxy: &Proxy, host: &str, wait: Duration) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes())
        .unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    let got = match s.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => String::new(),
    };
    (s, got)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn what_waits_is_bounded_under_a_flood_of_distinct_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let settings = AskSettings {
        timeout_ms: 120_000,
        limit: 8,
    };
    let (proxy, _) = proxy(dir.path(), settings, true);
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    // Eight distinct requests wait (their clients see nothing)...
    let held: Vec<_> = (0..8)
        .map(|i| {
            let (s, got) = connect(
                &proxy,
                &format!("held{i}.example"),
                Duration::from_millis(300),
            );
            assert_eq!(got, "", "held{i} was answered: {got}");
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.pending(Some("t")).unwrap().len() < 8 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...and then 10,000 more distinct hosts are each denied at once, saying why.
    let before = rss_kib();
    let started = Instant::now();
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let addr = proxy.addr;
            std::thread::spawn(move || {
                for i in 0..625 {
                    let host = format!("flood-{w}-{i}.example");
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.write_all(
                        format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n")
                            .as_bytes(),
                    )
                    .unwrap();
                    let mut out = Vec::new();
                    let _ = s.read_to_end(&mut out);
                    let out = String::from_utf8_lossy(&out);
                    assert!(
                        out.starts_with("HTTP/1.1 403") && out.contains("already wait"),
                        "{host}: {out}"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let grown = rss_kib().saturating_sub(before);
    assert_eq!(store.pending(Some("t")).unwrap().len(), 8);
    assert!(
        grown < 64 * 1024,
        "memory grew by {grown} KiB over 10,000 refused requests"
    );
    eprintln!(
        "10,000 distinct hosts refused in {:?}; memory grew {grown} KiB",
        started.elapsed()
    );
    drop(held);
}

#[test]
fn held_requests_are_denied_when_nobody_can_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _) = http_origin();
    let (proxy, end) = proxy(dir.path(), AskSettings::default(), false);
    let waiting = curl_in_background(&proxy, format!("http://c.test:{}/", origin.port()));
    std::thread::sleep(Duration::from_millis(300));
    // The privileged side goes away: what waits is denied, and so is what asks later.
    drop(end);
    let (_, out, _) = waiting.join().unwrap();
    assert!(out.contains("status=403") && out.contains("gone"), "{out}");
    let (_, out, _) = curl_in_background(&proxy, format!("http://d.test:{}/", origin.port()))
        .join()
        .unwrap();
    assert!(out.contains("status=403") && out.contains("gone"), "{out}");
}
