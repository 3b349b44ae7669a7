//! Fixtures on real overlay layers: a temporary workspace (the lower layer) and upper/work
//! directories, with the agent's operations run through an overlay mounted with `userxattr` in
//! new user and mount namespaces (`unshare -rm`), exactly as a review-mode sandbox writes.

#![allow(dead_code)]

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use paddock_review::{Change, ChangeKind, Entry, EntryType, Layer, RelPath};

/// One fixture.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub ws: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
    pub state: PathBuf,
    since: Cell<SystemTime>,
}

/// Fails (never skips) when `unshare` is missing.
fn unshare() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("unshare"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "these tests need `unshare` (util-linux) to mount real overlay fixtures in a \
                 user and mount namespace; install util-linux"
            )
        })
}

/// Runs `script` with `sh -c` in `cwd`, panicking with its output when it fails.
fn sh(cwd: &Path, program: &[&str], script: &str) {
    let out = Command::new(program[0])
        .args(&program[1..])
        .arg("sh")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "script failed ({}):\n{script}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical tempdir");
        let f = Fixture {
            ws: root.join("ws"),
            upper: root.join("upper"),
            work: root.join("work"),
            mnt: root.join("mnt"),
            state: root.join("state"),
            root,
            _dir: dir,
            since: Cell::new(SystemTime::now()),
        };
        for d in [&f.ws, &f.upper, &f.work, &f.mnt] {
            std::fs::create_dir(d).expect("mkdir");
        }
        f
    }

    /// Runs `script` in the host workspace (as the user would).
    pub fn host(&self, script: &str) {
        sh(&self.ws, &["env"], &format!("umask 022; {script}"));
    }

    /// Runs `script` in the sandbox's view: the overlay mounted over the workspace, `cwd` at its
    /// root. Marks the run's start (see [`Fixture::since`]) first.
    pub fn agent(&self, script: &str) {
        self.mark_run();
        let mount = format!(
            "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={},userxattr {}",
            self.ws.display(),
            self.upper.display(),
            self.work.display(),
            self.mnt.display()
        );
        let full = format!(
            "set -e; umask 022; {mount}; cd {}; {script}",
            self.mnt.display()
        );
        let unshare = unshare();
        let unshare = unshare.to_str().expect("utf-8 path");
        sh(&self.root, &[unshare, "-rm"], &full);
    }

    /// Marks the start of a run (host changes made just before must be older than the start
    /// less 10 ms).
    pub fn mark_run(&self) {
        std::thread::sleep(Duration::from_millis(30));
        self.since.set(SystemTime::now());
    }

    /// When the last agent run started.
    pub fn since(&self) -> SystemTime {
        self.since.get()
    }

    pub fn layer(&self) -> Layer {
        Layer::open(&self.upper, &self.ws, &self.state).expect("open layer")
    }

    pub fn changes(&self) -> Vec<Change> {
        self.layer().changes(&[], self.since()).expect("changes")
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.ws.join(rel)).expect("read host file")
    }

    /// The names in the upper layer, recursively, sorted (`a`, `a/b`).
    pub fn upper_entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        list(&self.upper, "", &mut out);
        out.sort();
        out
    }
}

fn list(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        let ft = e.file_type().expect("file type");
        out.push(name.clone());
        if ft.is_dir() {
            list(&e.path(), &format!("{name}/"), out);
        }
    }
}

pub fn rel(s: &str) -> RelPath {
    RelPath::new(s).expect("valid path")
}

pub fn file(mode: u32, size: u64) -> Option<Entry> {
    Some(Entry {
        kind: EntryType::File,
        mode,
        size,
        target: None,
    })
}

pub fn dir(mode: u32) -> Option<Entry> {
    Some(Entry {
        kind: EntryType::Dir,
        mode,
        size: 0,
        target: None,
    })
}

pub fn symlink(target: &str) -> Option<Entry> {
    Some(Entry {
        kind: EntryType::Symlink,
        mode: 0o777,
        size: target.len() as u64,
        target: Some(target.as_bytes().to_vec()),
    })
}

/// A change with no risk, conflict or flags.
pub fn change(path: &str, kind: ChangeKind, old: Option<Entry>, new: Option<Entry>) -> Change {
    Change {
        path: rel(path),
        kind,
        old,
        new,
        binary: false,
        risk: None,
        conflict: None,
        git_internal: false,
    }
}
