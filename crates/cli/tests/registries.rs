//! The real package registries this host's own package managers use (apt, pip, npm), reached
//! from inside sandboxes through the egress proxy with the `balanced` preset and nothing else:
//! no hand-made rules, no mounted CAs. Where the registries resolve to a private address or
//! re-sign TLS with a CA of their own (a company network), the preset's private-address
//! allowance and the host's CAs carry it. Skipped where the registries do not answer, unless
//! `PADDOCK_REQUIRE_REGISTRIES=1` (CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{stderr, stdout, unique};

/// The codex cases share the install sandbox's name (`agent-install-codex`): one at a time.
static CODEX: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rm(name: &str) {
    let _ = common::paddock().args(["rm", "-f", name]).output();
}

fn run_on(backend: &str, name: &str, flags: &[&str], script: &str) -> std::process::Output {
    let ws = common::workspace();
    let mut c = common::paddock_for(backend);
    c.args(["run", "--backend", backend, "--name", name, "-w"])
        .arg(ws.path())
        .args(flags)
        .args(["--", "sh", "-c", script]);
    c.output().unwrap()
}

on_every_backend!(sudo_apt_get_install_works_at_once);

/// The README tour's `sudo apt-get install`: the image's package lists are there, sudo keeps
/// the proxy, apt uses it, and the host's mirror is allowed by the preset.
fn sudo_apt_get_install_works_at_once(backend: &str) {
    common::ensure_image();
    if !common::registries_ready() {
        return;
    }
    let name = unique("reg-apt");
    let o = run_on(
        backend,
        &name,
        &[],
        "sudo apt-get install -y --no-install-recommends tree >/tmp/apt.log 2>&1; echo \"apt=$?\"; \
         tail -5 /tmp/apt.log; tree --version",
    );
    rm(&name);
    let out = stdout(&o);
    assert!(
        out.contains("apt=0") && out.contains("tree v"),
        "{out}\nstderr:\n{}",
        stderr(&o)
    );
}

/// pip and npm reach their real registries, and `apt-get update` refreshes the lists, all
/// through the proxy with the preset alone (the ns backend; the other backends share the proxy
/// path with the apt case above).
#[test]
fn pip_npm_and_apt_update_reach_the_real_registries() {
    require_root!();
    common::ensure_image();
    if !common::registries_ready() {
        return;
    }
    let name = unique("reg-clients");
    let o = run_on(
        "ns",
        &name,
        &[],
        r#"
sudo apt-get update -q >/tmp/update.log 2>&1; echo "update=$?"; grep -c '^Hit\|^Get' /tmp/update.log | sed 's/^/fetched=/'
pip download -q --no-deps --dest /tmp/wheels six >/tmp/pip.log 2>&1; echo "pip=$?"; ls /tmp/wheels; tail -3 /tmp/pip.log
echo "npm: $(npm view left-pad version 2>&1 | tail -2)"
"#,
    );
    let audit = common::paddock()
        .args(["policy", "log", "--sandbox", &name, "--denied", "--json"])
        .output()
        .unwrap();
    rm(&name);
    let out = stdout(&o);
    for want in ["update=0", "pip=0", "six-", "npm: 1.3.0"] {
        assert!(
            out.contains(want),
            "missing {want:?} in:\n{out}\nstderr:\n{}\ndenied:\n{}",
            stderr(&o),
            stdout(&audit)
        );
    }
    assert!(!out.contains("fetched=0"), "{out}");
}

/// `image build --packages`: a real build from the host's mirror with one extra package, kept
/// when asked again with the same list, refused with a bad name before anything is built.
#[test]
fn an_image_takes_extra_packages_and_is_rebuilt_only_when_they_change() {
    require_root!();
    common::ensure_image();
    if !common::registries_ready() {
        return;
    }
    let image = unique("pkgs");
    let build = |extra: &[&str]| {
        common::paddock()
            .args(["image", "build", &image])
            .args(extra)
            .output()
            .unwrap()
    };
    let bad = build(&["--packages", "jq,Not_A_Package"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("not a Debian package name"),
        "{}",
        stderr(&bad)
    );
    let built = build(&["--packages", "jq"]);
    assert!(built.status.success(), "{}", stderr(&built));
    let again = build(&["--packages", "jq"]);
    let name = unique("reg-image");
    let o = run_on(
        "ns",
        &name,
        &["--image", &image, "--no-network"],
        "jq --version",
    );
    rm(&name);
    let _ = common::paddock().args(["image", "rm", &image]).output();
    assert!(
        stdout(&again).contains("up to date"),
        "{}{}",
        stdout(&again),
        stderr(&again)
    );
    assert!(
        stdout(&o).starts_with("jq-"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// With the registries answering (else `None`, the skip said), the default image and an agent
/// cache of the test's own, which the suite's user owns.
fn agent_cache() -> Option<tempfile::TempDir> {
    common::ensure_image();
    if !common::registries_ready() {
        return None;
    }
    let cache = tempfile::Builder::new()
        .prefix("paddock-agents-")
        .tempdir_in("/var/tmp")
        .unwrap();
    common::hand_over(cache.path());
    Some(cache)
}

/// The npm registry host this host's npm uses (from its configuration, as the preset reads it).
fn npm_registry_host() -> String {
    let cfg = paddock_store::registries::HostConfig::from_env();
    paddock_store::registries::discover(&cfg)
        .into_iter()
        .find(|h| h.source.starts_with("npm"))
        .map(|h| h.host)
        .expect("this host's npm registry (npm's configuration or npm itself)")
}

/// An agent preset: installed once (Node.js from the npm registry, the agent's package with
/// npm's engine check) into an agent cache of the test's own, then run from it; the second run
/// in the same workspace reuses the same sandbox and downloads nothing. gemini-cli needs a
/// newer Node.js than the image's.
#[test]
fn an_agent_is_installed_once_and_then_starts_without_a_download() {
    require_root!();
    let Some(cache) = agent_cache() else {
        return;
    };
    let ws = common::workspace();
    let run = || {
        common::paddock()
            .env("PADDOCK_CACHE_DIR", cache.path())
            .args(["run", "gemini", "--no-tty", "-w"])
            .arg(ws.path())
            .args(["--", "--version"])
            .output()
            .unwrap()
    };
    let first = run();
    let second = run();
    let listed = common::paddock()
        .env("PADDOCK_CACHE_DIR", cache.path())
        .args(["agent", "ls", "--json"])
        .output()
        .unwrap();
    let sandboxes = common::paddock()
        .args(["ls", "--all", "--json"])
        .output()
        .unwrap();
    let ours: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&stdout(&sandboxes))
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["workspace"].as_str() == ws.path().to_str())
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    for name in &ours {
        rm(name);
    }
    let version = stdout(&first);
    assert!(
        first.status.success() && stderr(&first).contains("installing gemini once"),
        "{version}\n{}",
        stderr(&first)
    );
    assert!(
        version
            .trim()
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit()),
        "{version}"
    );
    assert_eq!(stdout(&second), version, "{}", stderr(&second));
    assert!(
        !stderr(&second).contains("installing"),
        "the second run installed again:\n{}",
        stderr(&second)
    );
    assert_eq!(ours.len(), 1, "one sandbox for the workspace: {ours:?}");
    assert!(ours[0].starts_with("gemini-"), "{ours:?}");
    let agents: Vec<serde_json::Value> = serde_json::from_str(&stdout(&listed)).unwrap();
    let gemini = agents.iter().find(|a| a["agent"] == "gemini").unwrap();
    assert_eq!(
        gemini["installed"]["version"].as_str(),
        Some(version.trim()),
        "{}",
        stdout(&listed)
    );
    assert!(
        gemini["installed"]["node"]
            .as_str()
            .is_some_and(|n| n.starts_with("22.")),
        "{}",
        stdout(&listed)
    );
}

/// An install that the proxy refuses (a rule denying the npm registry to the install sandbox)
/// says so, names the sandbox whose log shows it, keeps it, and leaves no installation.
#[test]
fn a_refused_install_names_the_refusal() {
    require_root!();
    let Some(cache) = agent_cache() else {
        return;
    };
    let _one = CODEX
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let host = npm_registry_host();
    let denied = common::paddock()
        .args(["policy", "deny", &host, "--sandbox", "agent-install-codex"])
        .output()
        .unwrap();
    assert!(denied.status.success(), "{}", stderr(&denied));
    let ws = common::workspace();
    let o = common::paddock()
        .env("PADDOCK_CACHE_DIR", cache.path())
        .args(["run", "codex", "--rm", "--no-tty", "-w"])
        .arg(ws.path())
        .args(["--", "--version"])
        .output()
        .unwrap();
    rm("agent-install-codex");
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("the egress proxy denied a request")
            && err.contains("policy log --denied --sandbox agent-install-codex")
            && err.contains("the install sandbox agent-install-codex is kept"),
        "{err}"
    );
    assert!(
        !cache.path().join("agents/codex/current").exists(),
        "a failed install is not used"
    );
}

/// An agent's login through its published callback port: `codex login` inside listens on its
/// port 1455, which the preset publishes on the host's 127.0.0.1:1455; the browser's redirect
/// (here a request with the wrong state) reaches codex's own login server inside, which
/// answers it. The rest of the flow is between the browser, the provider and codex.
#[test]
fn an_agents_login_callback_reaches_it_through_the_published_port() {
    require_root!();
    let Some(cache) = agent_cache() else {
        return;
    };
    let _one = CODEX
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        std::net::TcpListener::bind("127.0.0.1:1455").is_ok(),
        "this test needs the host's port 1455 (codex's login callback) free"
    );
    let ws = common::workspace();
    let name = unique("reg-login");
    let mut login = common::paddock()
        .env("PADDOCK_CACHE_DIR", cache.path())
        .args(["run", "codex", "--name", &name, "--no-tty", "-w"])
        .arg(ws.path())
        .args(["--", "login"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    let answer = loop {
        if let Some(body) = common::http_get(1455, "/auth/callback?code=test&state=not-the-state")
            && !body.is_empty()
        {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing answered on 127.0.0.1:1455"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let _ = common::paddock().args(["stop", "-t", "1", &name]).output();
    let _ = login.kill();
    let out = login.wait_with_output().unwrap();
    rm(&name);
    assert!(
        answer.contains("State mismatch"),
        "{answer}\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("1455%2Fauth%2Fcallback")
            || stderr(&out).contains("1455%2Fauth%2Fcallback"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}
