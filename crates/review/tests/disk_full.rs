//! A full disk while applying: the file being written is left untouched (its temporary
//! removed), the error names it, and what was applied before stays applied.
//!
//! The workspace is a tiny tmpfs mounted in a private mount namespace: the test re-runs itself
//! under `unshare -m` (it must be root there; the machine runs the tests as root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

use paddock_review::{ApplyOptions, Error, Layer, RelPath};

const CHILD: &str = "PADDOCK_REVIEW_DISK_FULL_CHILD";
const DONE: &str = "disk-full child finished";

fn unshare() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("unshare"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("this test needs `unshare` (util-linux); install util-linux"))
}

#[test]
fn disk_full_leaves_nothing_half_written() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(unshare())
        .args(["-m", "--propagation", "private"])
        .arg(exe)
        .args([
            "disk_full_leaves_nothing_half_written",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(DONE),
        "child failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn child() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let (ws, upper, state) = (root.join("ws"), root.join("upper"), root.join("state"));
    std::fs::create_dir(&ws).unwrap();
    std::fs::create_dir(&upper).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&ws)
        .status()
        .expect("mount");
    assert!(status.success(), "mount tmpfs");
    std::fs::write(upper.join("a"), vec![b'a'; 100]).unwrap();
    std::fs::write(upper.join("b"), vec![b'b'; 1 << 20]).unwrap();
    std::fs::write(upper.join("c"), b"c").unwrap();
    let layer = Layer::open(&upper, &ws, &state).unwrap();
    let since = SystemTime::now();
    let err = layer
        .apply(&[], ApplyOptions::default(), since)
        .expect_err("the disk is full");
    match &err {
        Error::Write { path, source } => {
            assert_eq!(path, &RelPath::new("b").unwrap());
            assert_eq!(source.raw_os_error(), Some(28), "ENOSPC: {source}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "cannot write b into the workspace (files applied before it stay applied)"
    );
    let names = || {
        let mut v: Vec<Vec<u8>> = std::fs::read_dir(&ws)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(), [b"a".to_vec()]);
    assert_eq!(std::fs::read(ws.join("a")).unwrap(), vec![b'a'; 100]);
    // Once there is room (the big file dropped), the next apply finishes the job.
    std::fs::remove_file(upper.join("b")).unwrap();
    let report = layer.apply(&[], ApplyOptions::default(), since).unwrap();
    assert_eq!(report.applied, vec![RelPath::new("c").unwrap()]);
    assert_eq!(names(), [b"a".to_vec(), b"c".to_vec()]);
    let _ = Command::new("umount").arg(&ws).status();
    println!("{DONE}");
}
