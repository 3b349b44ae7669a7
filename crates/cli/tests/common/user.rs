//! The suite's ordinary user (`paddock-suite`): made on first use, prepared by `paddock system
//! setup` as a user would be, with its own image (mmdebstrap in a user namespace) built once
//! per machine.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use super::stderr;

/// The suite's ordinary user.
pub const SUITE_USER: &str = "paddock-suite";

/// An ordinary account on this host.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl Account {
    pub fn find(name: &str) -> Option<Account> {
        let u = nix::unistd::User::from_name(name).ok().flatten()?;
        Some(Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        })
    }

    /// Makes the account (with a home; `useradd` gives it subordinate ids).
    pub fn create(name: &str) -> Account {
        let made = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", name])
            .output()
            .expect("useradd (package passwd) must be installed for this suite");
        assert!(made.status.success(), "{made:?}");
        Account::find(name).unwrap()
    }

    /// `paddock ARGS` as this user, in `dir`, with the environment a login gives.
    pub fn paddock_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.command(dir, args).output().unwrap()
    }

    pub fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(super::bin());
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .stdin(Stdio::null())
            .uid(self.uid)
            .gid(self.gid);
        for (k, v) in std::env::vars() {
            if k.starts_with("PADDOCK_TEST_") {
                cmd.env(k, v);
            }
        }
        cmd
    }

    /// `paddock run --rm --backend BACKEND FLAGS -- sh -c SCRIPT` as this user in `ws` (gvisor
    /// with the helper built from this checkout).
    pub fn sh(&self, ws: &Path, backend: &str, flags: &[&str], script: &str) -> Output {
        let mut args = vec!["run", "--rm", "--backend", backend];
        args.extend(flags);
        args.extend(["--", "sh", "-c", script]);
        let mut cmd = self.command(ws, &args);
        if backend == "gvisor" {
            cmd.env("PADDOCK_GUEST_BINARY", super::guest_binary());
        }
        cmd.output().unwrap()
    }

    /// A workspace of this user's, removed after the test.
    pub fn workspace(&self) -> tempfile::TempDir {
        let ws = tempfile::Builder::new()
            .prefix("ws-")
            .tempdir_in(&self.home)
            .unwrap();
        std::os::unix::fs::chown(ws.path(), Some(self.uid), Some(self.gid)).unwrap();
        ws
    }

    /// This user's state directory.
    pub fn state(&self) -> PathBuf {
        self.home.join(".local/share/paddock")
    }
}

/// The suite's user, prepared, with its image built (once per machine; again when its
/// subordinate ids changed). Needs root, which makes and prepares the account.
pub fn suite_user() -> Option<Account> {
    static USER: OnceLock<Account> = OnceLock::new();
    if !super::is_root() {
        assert!(
            std::env::var_os("PADDOCK_REQUIRE_ROOT").is_none(),
            "the user mode suite makes its user as root (PADDOCK_REQUIRE_ROOT is set, so it may not be skipped)"
        );
        eprintln!("skipped: the user mode suite needs root to make its user");
        return None;
    }
    Some(
        USER.get_or_init(|| {
            let user = Account::find(SUITE_USER).unwrap_or_else(|| Account::create(SUITE_USER));
            let setup = Command::new(super::bin())
                .args(["system", "setup", "--user", SUITE_USER])
                .output()
                .unwrap();
            assert!(setup.status.success(), "{}", stderr(&setup));
            let ws = user.workspace();
            let probe = user.paddock_in(
                ws.path(),
                &[
                    "run",
                    "--rm",
                    "--backend",
                    "ns",
                    "--no-network",
                    "--",
                    "true",
                ],
            );
            if !probe.status.success() {
                let text = stderr(&probe);
                assert!(
                    text.contains("image build") || text.contains("not built"),
                    "{text}"
                );
                eprintln!("building {SUITE_USER}'s image (about two minutes, once per machine)");
                let built = user.paddock_in(&user.home, &["image", "build", "--force", "default"]);
                assert!(built.status.success(), "{}", stderr(&built));
            } else {
                // Kept when it is what this Paddock builds, else rebuilt (an older layout).
                let built = user.paddock_in(&user.home, &["image", "build", "default"]);
                assert!(built.status.success(), "{}", stderr(&built));
            }
            user
        })
        .clone(),
    )
}
