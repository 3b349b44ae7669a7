//! The secrets store's key in the OS keyring: a real Secret Service (gnome-keyring) on a session
//! bus of the test's own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_store_key_lives_in_the_os_keyring_when_one_answers() {
    let missing: Vec<&str> = ["dbus-run-session", "gnome-keyring-daemon"]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("PADDOCK_REQUIRE_KEYRING").is_none(),
            "missing {missing:?} (apt-get install dbus-daemon gnome-keyring)"
        );
        eprintln!("skipped: needs {missing:?} (apt-get install dbus-daemon gnome-keyring)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (home, run, state) = (
        t.path().join("home"),
        t.path().join("run"),
        t.path().join("p"),
    );
    for d in [&home, &run, &state] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let bin = common::bin();
    // A login keyring unlocked with a password on stdin (as PAM does), then the secrets
    // component; everything ends with the session bus.
    let script = format!(
        r#"
        echo -n test-password | gnome-keyring-daemon --login >/dev/null 2>&1
        gnome-keyring-daemon --start --components=secrets >/dev/null 2>&1
        echo -n value-in-keyring-test | {bin} secret set openai || exit 1
        {bin} secret ls --json
        "#,
        bin = bin.display()
    );
    let env = |c: &mut Command| {
        c.env_remove("PADDOCK_SECRET_KEY")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &run)
            .env_remove("XDG_CONFIG_HOME")
            .env("PADDOCK_HOME", &state);
    };
    let mut c = Command::new("dbus-run-session");
    c.args(["--", "sh", "-c", &script]);
    env(&mut c);
    let out = c.output().unwrap();
    let said = common::stdout(&out);
    assert!(
        out.status.success() && said.contains("\"openai\""),
        "{out:?}"
    );
    // The store says its key is in the keyring; no key file was written; the value is not in
    // the store in clear.
    let store = std::fs::read(state.join("secrets.enc")).unwrap();
    assert!(store.starts_with(b"paddock-secrets-v1-keyring\n"));
    assert!(!home.join(".config/paddock/secrets.key").exists());
    let value = b"value-in-keyring-test";
    assert!(!store.windows(value.len()).any(|w| w == value));
    // Without that keyring the store is not opened, says why, and is left as it was.
    let mut c = common::paddock();
    c.args(["secret", "ls"]);
    env(&mut c);
    let out = c.output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        common::stderr(&out).contains("keeps its key in the OS keyring"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(state.join("secrets.enc")).unwrap(), store);
}
