//! `paddock policy …` against a private state directory (no sandbox needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{stderr, stdout};

fn policy(home: &Path, args: &[&str]) -> Output {
    common::paddock()
        .env("PADDOCK_HOME", home)
        .arg("policy")
        .args(args)
        .output()
        .unwrap()
}

fn ok(home: &Path, args: &[&str]) -> String {
    let o = policy(home, args);
    assert!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

#[test]
fn allow_deny_check_and_remove() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    assert!(ok(h, &["ls"]).contains("no rules: every request is denied"));
    let o = policy(h, &["check", "https://api.example.com"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("deny  CONNECT api.example.com:443"),
        "{}",
        stdout(&o)
    );

    ok(h, &["allow", "*.example.com", "internal.test:8443"]);
    ok(h, &["deny", "bad.example.com"]);
    ok(
        h,
        &[
            "allow",
            "api.example.org",
            "--method",
            "get",
            "--path",
            "/v1/*",
            "--sandbox",
            "box",
        ],
    );
    let ls = ok(h, &["ls", "--json"]);
    let rules: Vec<serde_json::Value> = serde_json::from_str(&ls).unwrap();
    assert_eq!(rules.len(), 4, "{ls}");
    assert_eq!(rules[1]["port"], "8443");
    assert_eq!(rules[3]["method"], "GET");
    assert_eq!(rules[3]["scope"], "box");

    let check = |url: &str, sandbox: Option<&str>| {
        let mut a = vec!["check", url];
        if let Some(s) = sandbox {
            a.extend(["--sandbox", s]);
        }
        let o = policy(h, &a);
        (o.status.code(), stdout(&o))
    };
    assert_eq!(check("https://a.example.com", None).0, Some(0));
    assert_eq!(
        check("https://example.com", None).0,
        Some(1),
        "one-label wildcard must not match the apex"
    );
    assert_eq!(check("https://a.b.example.com", None).0, Some(1));
    assert_eq!(check("https://evil-example.com", None).0, Some(1));
    assert_eq!(check("https://example.com.evil.test", None).0, Some(1));
    assert_eq!(check("https://A.EXAMPLE.COM.", None).0, Some(0));
    let (code, out) = check("https://bad.example.com", None);
    assert_eq!(code, Some(1));
    assert!(out.contains("rule 3: deny bad.example.com"), "{out}");
    assert_eq!(check("internal.test:8443", None).0, Some(0));
    assert_eq!(
        check("internal.test", None).0,
        Some(1),
        "a port not named is denied"
    );
    assert_eq!(check("http://api.example.org/v1/x", Some("box")).0, Some(0));
    assert_eq!(check("http://api.example.org/v2/x", Some("box")).0, Some(1));
    assert_eq!(
        check("http://api.example.org/v1/x", None).0,
        Some(1),
        "a sandbox rule is not global"
    );
    // The proxy opens a tunnel to a host whose rules limit paths and decides the request
    // inside: check decides that request too.
    let (code, out) = check("https://api.example.org/v1/x", Some("box"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with(
            "allow GET https://api.example.org:443/v1/x\n      allowed by rule 4 (box)"
        ),
        "{out}"
    );
    let (code, out) = check("https://api.example.org/v2/x", Some("box"));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("GET /v2/x is not what rule 4 (box) allows on this host: GET /v1/*"),
        "{out}"
    );
    assert_eq!(check("http://127.0.0.1/", None).0, Some(1));

    // An unknown id removes nothing.
    let o = policy(h, &["rm", "1", "99"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no rule with id 99"));
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&ok(h, &["ls", "--json"]))
            .unwrap()
            .len(),
        4
    );
    ok(h, &["rm", "3"]);
    assert_eq!(check("https://bad.example.com", None).0, Some(0));
}

#[test]
fn bad_rules_are_usage_errors_that_store_nothing() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for args in [
        &["allow", "exa mple.com"][..],
        &["allow", "ok.example.com", "user@example.com"],
        &["allow", "a.com", "--port", "70000"],
        &["allow", "a.com:80", "--port", "81"],
        &["allow", "a.com", "--method", "G E T"],
        &["allow", "a.com", "--path", "no-slash"],
        &["allow", "a.com", "--sandbox", "Bad Name"],
        &["deny", "*.com"],
        &["preset", "nope"],
    ] {
        let o = policy(h, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty());
    }
    assert!(ok(h, &["ls"]).contains("no rules"));
}

#[test]
fn import_export_and_a_malformed_file_changes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "version = 1\n\n[[rule]]\naction = \"allow\"\nhost = \"**.example.com\"\nport = \"any\"\n\n[[rule]]\naction = \"deny\"\nhost = \"10.0.0.0/8\"\nsandbox = \"box\"\n",
    )
    .unwrap();
    assert!(ok(h, &["import", good.to_str().unwrap()]).contains("imported 2 rules"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\n[[rule]]\naction = \"allow\"\nhost = \"fine.example.com\"\n[[rule]]\naction = \"allow\"\nhost = \"bad%host\"\n",
    )
    .unwrap();
    let o = policy(h, &["import", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("bad.toml:7:") && err.contains("bad%host"),
        "{err}"
    );
    let exported = ok(h, &["export"]);
    assert!(
        !exported.contains("fine.example.com"),
        "a bad file must change nothing: {exported}"
    );
    // Export, wipe by importing into a fresh home, compare.
    let round = dir.path().join("round.toml");
    std::fs::write(&round, &exported).unwrap();
    let home2 = tempfile::tempdir().unwrap();
    ok(home2.path(), &["import", round.to_str().unwrap()]);
    assert_eq!(ok(home2.path(), &["export"]), exported);
}

#[test]
fn presets_are_data_and_applying_one_keeps_user_rules() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let list = ok(h, &["presets"]);
    for p in ["deny-all", "balanced", "open"] {
        assert!(list.contains(p), "{list}");
    }
    assert!(ok(h, &["presets", "open"]).contains("host = \"**\""));
    ok(h, &["allow", "mine.example.com", "--sandbox", "box"]);
    ok(h, &["preset", "open", "--sandbox", "box"]);
    assert_eq!(
        policy(
            h,
            &[
                "check",
                "https://anything.example.org:9999",
                "--sandbox",
                "box"
            ]
        )
        .status
        .code(),
        Some(0)
    );
    // open still refuses private addresses.
    assert_eq!(
        policy(h, &["check", "http://10.1.2.3/", "--sandbox", "box"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        policy(h, &["check", "http://169.254.169.254/", "--sandbox", "box"])
            .status
            .code(),
        Some(1)
    );
    ok(h, &["preset", "deny-all", "--sandbox", "box"]);
    assert_eq!(
        policy(
            h,
            &["check", "https://anything.example.org", "--sandbox", "box"]
        )
        .status
        .code(),
        Some(1)
    );
    assert_eq!(
        policy(
            h,
            &["check", "https://mine.example.com", "--sandbox", "box"]
        )
        .status
        .code(),
        Some(0)
    );
    ok(h, &["preset", "balanced", "--sandbox", "box"]);
    assert_eq!(
        policy(
            h,
            &["check", "https://api.anthropic.com", "--sandbox", "box"]
        )
        .status
        .code(),
        Some(0)
    );
    assert_eq!(
        policy(h, &["check", "https://api.openai.com", "--sandbox", "box"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        policy(h, &["check", "https://github.com", "--sandbox", "box"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        policy(h, &["check", "https://example.org", "--sandbox", "box"])
            .status
            .code(),
        Some(1)
    );
    assert!(ok(h, &["ls", "--sandbox", "box"]).contains("preset balanced"));
}

/// The outside review's cases: allow-all patterns were accepted silently, and `0.0.0.0/0`
/// opened loopback and the metadata service. They are refused, naming the preset that says the
/// intent; a non-public address is allowed only when named exactly, with a warning.
#[test]
fn allow_everything_is_refused_and_reserved_addresses_need_their_own_rule() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for p in ["*", "**", "0.0.0.0/0", "::/0", "**:any"] {
        let o = policy(h, &["allow", p]);
        assert_eq!(o.status.code(), Some(2), "{p}: {o:?}");
        assert!(
            stderr(&o)
                .contains("would allow every host; to allow any public host use the open preset"),
            "{p}: {o:?}"
        );
    }
    let o = policy(h, &["allow", "10.0.0.0/8"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        stderr(&o).contains("covers private addresses")
            && stderr(&o).contains("allowed only when named exactly"),
        "{o:?}"
    );
    // Nothing was stored by the refusals.
    assert!(ok(h, &["ls"]).contains("no rules"));
    // A deny of everything is fine.
    ok(h, &["deny", "0.0.0.0/0", "--sandbox", "locked"]);
    // A file importing an allow-all is refused whole.
    let file = home.path().join("rules.toml");
    std::fs::write(
        &file,
        "version = 1\n[[rule]]\naction = \"allow\"\nhost = \"example.com\"\n[[rule]]\naction = \"allow\"\nhost = \"**\"\n",
    )
    .unwrap();
    let o = policy(h, &["import", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(!ok(h, &["ls"]).contains("example.com"));
    // Named exactly, with a warning that says what it is; the proxy's own check agrees.
    let o = policy(h, &["allow", "169.254.169.254"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        stderr(&o).contains("169.254.169.254 is a cloud metadata address"),
        "{o:?}"
    );
    let o = policy(h, &["check", "http://169.254.169.254/latest"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    for url in ["http://10.0.0.1/", "https://127.0.0.1:443"] {
        let o = policy(h, &["check", url]);
        assert_eq!(o.status.code(), Some(1), "{url}: {o:?}");
    }
}

/// Ask rules: added, listed, checked as `ask`; a preset that ends in one.
#[test]
fn ask_rules_and_a_preset_that_ends_in_one() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    assert_eq!(
        ok(h, &["ask", "*.example.com", "--sandbox", "box"]).trim(),
        "rule 1: ask *.example.com (box, user)"
    );
    let o = policy(h, &["check", "https://a.example.com/x", "--sandbox", "box"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("ask   CONNECT a.example.com:443\n      rule 1 (box) asks the user"),
        "{}",
        stdout(&o)
    );
    // An allow beats the ask.
    ok(h, &["allow", "a.example.com", "--sandbox", "box"]);
    assert_eq!(
        policy(h, &["check", "https://a.example.com", "--sandbox", "box"])
            .status
            .code(),
        Some(0)
    );
    // A preset that ends in an ask: its rules, then `ask ** port any`.
    let out = ok(
        h,
        &["preset", "deny-all", "--sandbox", "box", "--ask-unlisted"],
    );
    assert!(out.contains("waits for your answer"), "{out}");
    let ls = ok(h, &["ls", "--sandbox", "box", "--json"]);
    let rules: Vec<serde_json::Value> = serde_json::from_str(&ls).unwrap();
    assert!(
        rules.iter().any(|r| r["action"] == "ask"
            && r["host"] == "**"
            && r["port"] == "any"
            && r["source"] == "preset:deny-all"),
        "{ls}"
    );
    let o = policy(
        h,
        &[
            "check",
            "http://anything.example.org:8080/",
            "--sandbox",
            "box",
        ],
    );
    assert!(stdout(&o).starts_with("ask "), "{}", stdout(&o));
    // A waiting request's number where none waits: said so, nothing changed.
    let o = policy(h, &["approve", "99"]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no request 99 is waiting"),
        "{}",
        stderr(&o)
    );
    let o = policy(h, &["deny", "99", "--always"]);
    assert!(
        stderr(&o).contains("no request 99 is waiting"),
        "{}",
        stderr(&o)
    );
    // A bare number is a request's number, never an address rule.
    let o = policy(h, &["deny", "7", "--sandbox", "box"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("a bare number is a waiting request's number"),
        "{}",
        stderr(&o)
    );
    assert!(!ok(h, &["ls", "--json"]).contains("0.0.0.7"));
    assert_eq!(
        ok(h, &["pending"]).trim(),
        "no request is waiting for an answer"
    );
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&ok(h, &["pending", "--json"])).unwrap(),
        Vec::<serde_json::Value>::new()
    );
}

/// A preset's rules are kept once however many sandboxes use it: `ls` lists them once and
/// says who uses them; a sandbox's export names its preset, not its rules, and no sandbox, so
/// importing it elsewhere (twice, even) duplicates nothing; a shared rule is not removed for
/// everyone by `rm`.
#[test]
fn presets_are_shared_and_export_import_copies_nothing() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for s in ["a", "b", "c"] {
        ok(h, &["preset", "deny-all", "--sandbox", s, "--ask-unlisted"]);
    }
    ok(h, &["allow", "own.test", "--sandbox", "a"]);
    let rows = |args: &[&str]| -> Vec<serde_json::Value> {
        serde_json::from_str(&ok(h, &[&["ls", "--json"][..], args].concat())).unwrap()
    };
    let shared: Vec<i64> = rows(&["--sandbox", "a"])
        .iter()
        .filter(|r| r["scope"] == "preset deny-all")
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert!(!shared.is_empty());
    // Once in all, whoever uses it; each sandbox sees the same ids.
    assert_eq!(rows(&[]).len(), shared.len() + 1);
    let b: Vec<i64> = rows(&["--sandbox", "b"])
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(b, shared);
    let ls = ok(h, &["ls"]);
    assert!(ls.contains("preset deny-all (ask unlisted) ("), "{ls}");
    assert!(ls.contains("used by a, b, c"), "{ls}");
    // A sandbox's export: its preset by name, its own rules, no sandbox named.
    let exported = ok(h, &["export", "--sandbox", "a"]);
    assert!(
        exported.contains("[[preset]]\nname = \"deny-all\"\nask_unlisted = true\n"),
        "{exported}"
    );
    assert!(
        exported.contains("own.test") && !exported.contains("sandbox ="),
        "{exported}"
    );
    let file = home.path().join("a.toml");
    std::fs::write(&file, &exported).unwrap();
    let first = ok(h, &["import", file.to_str().unwrap(), "--sandbox", "d"]);
    assert!(first.contains("imported 1 rules"), "{first}");
    let again = ok(h, &["import", file.to_str().unwrap(), "--sandbox", "d"]);
    assert!(again.contains("imported 0 rules"), "{again}");
    let d = rows(&["--sandbox", "d"]);
    assert_eq!(d.len(), shared.len() + 1, "{d:?}");
    assert_eq!(rows(&[]).len(), shared.len() + 2);
    // A shared rule stays; the message says how to narrow one sandbox instead.
    let o = policy(h, &["rm", &shared[0].to_string()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("every sandbox using that preset shares"),
        "{}",
        stderr(&o)
    );
    assert_eq!(rows(&[]).len(), shared.len() + 2);
}
