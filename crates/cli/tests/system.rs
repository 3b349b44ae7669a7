//! `paddock system setup`: host preparation for an ordinary user, done by root once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use common::{stderr, stdout};

/// A user made for one test, removed with its subordinate ids and cgroup subtrees.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: tempfile::TempDir,
}

impl TestUser {
    fn new() -> TestUser {
        let name = common::unique("pdu");
        let home = tempfile::tempdir().unwrap();
        let made = Command::new("useradd")
            .args(["-M", "-N", "-s", "/usr/sbin/nologin", "-d"])
            .arg(home.path())
            .arg(&name)
            .output()
            .expect("useradd (package passwd) must be installed for this suite");
        assert!(made.status.success(), "{made:?}");
        let user = nix::unistd::User::from_name(&name).unwrap().unwrap();
        std::os::unix::fs::chown(home.path(), Some(user.uid.as_raw()), None).unwrap();
        TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home,
        }
    }

    /// `paddock ARGS` as this user, with a state directory of its own.
    fn paddock(&self, args: &[&str]) -> std::process::Output {
        Command::new(common::bin())
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.home.path())
            .env("PADDOCK_HOME", self.home.path().join("paddock"))
            .uid(self.uid)
            .gid(self.gid)
            .output()
            .unwrap()
    }

    /// This user's subordinate ranges in `file`.
    fn ranges(&self, file: &str) -> Vec<(u64, u64)> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                (f.next()? == self.name)
                    .then(|| Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?)))
                    .flatten()
            })
            .collect()
    }

    /// The cgroup subtrees `system setup` gives this user on this host.
    fn subtrees(&self) -> Vec<PathBuf> {
        ["memory", "pids", "cpu"]
            .iter()
            .map(|c| PathBuf::from("/sys/fs/cgroup").join(c))
            .filter(|p| p.join("cgroup.procs").exists())
            .map(|p| {
                std::fs::canonicalize(&p)
                    .unwrap_or(p)
                    .join("paddock-users")
                    .join(self.uid.to_string())
            })
            .collect()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for d in self.subtrees() {
            let _ = std::fs::remove_dir(d);
        }
        common::remove_user(&self.name);
    }
}

/// Root prepares a user who has no subordinate ids and no cgroup subtree: each step says what
/// it made, the user then has 65,536 ids and owns a subtree in every hierarchy with a
/// controller Paddock limits with, a second run makes nothing, and `doctor` run by that user
/// shows it. The user alone is refused, with the command to run.
#[test]
fn system_setup_prepares_an_ordinary_user_once() {
    require_root!();
    let user = TestUser::new();
    // Whatever useradd gave, taken back: setup must add a range itself.
    for (file, flag) in [
        ("/etc/subuid", "--del-subuids"),
        ("/etc/subgid", "--del-subgids"),
    ] {
        for (first, count) in user.ranges(file) {
            let out = Command::new("usermod")
                .args([flag, &format!("{first}-{}", first + count - 1), &user.name])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    }
    assert!(user.ranges("/etc/subuid").is_empty());

    let alone = user.paddock(&["system", "setup"]);
    assert_eq!(alone.status.code(), Some(2), "{alone:?}");
    assert!(
        stderr(&alone).contains(&format!("sudo paddock system setup --user {}", user.name)),
        "{alone:?}"
    );

    let first = common::paddock()
        .args(["system", "setup", "--user", &user.name])
        .output()
        .unwrap();
    assert!(first.status.success(), "{first:?}");
    let said = stdout(&first);
    assert!(said.contains("[made] subordinate ids"), "{said}");
    for file in ["/etc/subuid", "/etc/subgid"] {
        assert!(
            user.ranges(file).iter().any(|r| r.1 >= 65_536),
            "{file}: {:?}",
            user.ranges(file)
        );
    }
    let trees = user.subtrees();
    assert!(!trees.is_empty(), "this host has memory, pids or cpu");
    assert!(said.contains("[made] cgroup delegation"), "{said}");
    for d in &trees {
        let m = std::fs::metadata(d).unwrap();
        assert_eq!((m.uid(), m.gid()), (user.uid, user.gid), "{}", d.display());
        let procs = std::fs::metadata(d.join("cgroup.procs")).unwrap();
        assert_eq!(procs.uid(), user.uid, "{}", d.display());
    }
    for p in ["newuidmap", "newgidmap"] {
        assert!(
            ["/usr/bin", "/bin"]
                .iter()
                .any(|d| std::path::Path::new(d).join(p).exists()),
            "{p} is installed"
        );
    }

    let again = common::paddock()
        .args(["system", "setup", "--user", &user.name])
        .output()
        .unwrap();
    assert!(again.status.success(), "{again:?}");
    assert!(!stdout(&again).contains("[made]"), "{}", stdout(&again));

    let doctor = user.paddock(&["doctor"]);
    let report = stdout(&doctor);
    for line in [
        "subordinate ids",
        "cgroup delegation",
        "newuidmap, newgidmap",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.contains("[ok  ]") && l.contains(line)),
            "{line}: {report}"
        );
    }
}

/// A name that is no user is refused with its name, and changes nothing.
#[test]
fn system_setup_refuses_an_unknown_user() {
    require_root!();
    let out = common::paddock()
        .args(["system", "setup", "--user", "no-such-user-here"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("no user no-such-user-here"),
        "{out:?}"
    );
}
