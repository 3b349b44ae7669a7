//! The real package registries this host's own package managers use (apt, pip, npm), reached
//! from inside sandboxes through the egress proxy with the `balanced` preset and nothing else:
//! no hand-made rules, no mounted CAs. Where the registries resolve to a private address or
//! re-sign TLS with a CA of their own (a company network), the preset's private-address
//! allowance and the host's CAs carry it. Skipped where the registries do not answer, unless
//! `PADDOCK_REQUIRE_REGISTRIES=1` (CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{stderr, stdout, unique};

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
