//! Review mode under faults and by hand: an apply killed half-way (and its helper's
//! confinement, read while it runs), the interactive review on a terminal, bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Output;

use common::{Cleanup, paddock, stderr, stdout, unique};

fn run_review(name: &str, ws: &Path, script: &str) -> Output {
    common::ensure_image();
    paddock()
        .args(["run", "--review", "--backend", "ns", "--name", name, "-w"])
        .arg(ws)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap()
}

/// The pid of a child of `parent` whose command line holds `__review`.
fn helper_of(parent: u32) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()? {
        let Ok(pid) = e.ok()?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && cmd.windows(8).any(|w| w == b"__review") {
            return Some(pid);
        }
    }
    None
}

const FILES: usize = 300;
const SIZE: usize = 256 << 10;

/// Each of the files is whole, old (`o`) or new (`n`); returns how many are new.
fn all_old_or_new(ws: &Path) -> usize {
    let mut new = 0;
    for i in 0..FILES {
        let body = std::fs::read(ws.join(format!("f{i}"))).unwrap();
        assert_eq!(body.len(), SIZE, "f{i} is torn");
        match body[0] {
            b'o' => assert!(body.iter().all(|&b| b == b'o'), "f{i} is torn"),
            b'n' => {
                assert!(body.iter().all(|&b| b == b'n'), "f{i} is torn");
                new += 1;
            }
            b => panic!("f{i} starts with {b}"),
        }
    }
    new
}

/// kill -9 of an apply half-way: every file is old or new, the next apply finishes the job and
/// leaves no temporary file. While it runs, its helper is read from /proc: not root of the
/// host (root of a user namespace mapping the workspace's owner and the sandbox's ids only),
/// no_new_privs, under seccomp.
#[test]
fn an_apply_killed_half_way_is_finished_by_the_next() {
    require_root!();
    let ws = common::workspace();
    let old = vec![b'o'; SIZE];
    for i in 0..FILES {
        std::fs::write(ws.path().join(format!("f{i}")), &old).unwrap();
    }
    common::hand_over(ws.path());
    let name = unique("review-kill");
    let _cleanup = Cleanup(name.clone());
    let out = run_review(
        &name,
        ws.path(),
        &format!(
            "for i in $(seq 0 {}); do head -c {SIZE} /dev/zero | tr '\\0' n > f$i; done",
            FILES - 1
        ),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(all_old_or_new(ws.path()), 0);

    let mut apply = paddock().args(["apply", &name]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut status_seen = None;
    loop {
        let landed = (0..FILES).any(|i| {
            std::fs::read(ws.path().join(format!("f{i}"))).is_ok_and(|b| b.first() == Some(&b'n'))
        });
        // Read once it writes: it has confined itself by then.
        if landed && let Some(pid) = helper_of(apply.id()) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let uid_map =
                std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
            if !status.is_empty() && !uid_map.is_empty() {
                status_seen = Some((status, uid_map));
            }
        }
        if status_seen.is_some() {
            break;
        }
        assert!(
            apply.try_wait().unwrap().is_none(),
            "apply ended before it was killed"
        );
        assert!(std::time::Instant::now() < deadline, "apply wrote nothing");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(apply.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    apply.wait().unwrap();
    // Its helper dies with it (parent-death signal).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let new = all_old_or_new(ws.path());
    assert!(
        new > 0 && new < FILES,
        "not interrupted half-way: {new} new"
    );

    let (status, uid_map) = status_seen.unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    assert_eq!(field("Seccomp:"), "2", "{status}");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(ws.path()).unwrap());
    let lines: Vec<Vec<u64>> = uid_map
        .lines()
        .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .collect();
    assert_eq!(lines[0], vec![0, u64::from(owner), 1], "{uid_map}");
    assert_eq!(lines[1][2], 65536, "{uid_map}");
    assert_ne!(lines[1][1], 0, "the host's root is mapped: {uid_map}");

    let out = paddock().args(["apply", &name]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(all_old_or_new(ws.path()), FILES);
    let names: Vec<String> = std::fs::read_dir(ws.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('f'))
        .collect();
    assert!(names.is_empty(), "temporaries left: {names:?}");
    let out = paddock()
        .args(["diff", &name, "--name-only"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "", "{out:?}");
}

/// `paddock review` on a terminal: accept one change, reject one, skip one; what was accepted
/// lands, what was rejected is gone from the layer, what was skipped still waits.
#[test]
fn the_interactive_review_takes_answers_on_a_terminal() {
    require_root!();
    let ws = common::workspace();
    for f in ["a.txt", "b.txt", "c.txt"] {
        std::fs::write(ws.path().join(f), "host\n").unwrap();
    }
    common::hand_over(ws.path());
    let name = unique("review-tty");
    let _cleanup = Cleanup(name.clone());
    let out = run_review(
        &name,
        ws.path(),
        "for f in a b c; do echo agent > $f.txt; done",
    );
    assert!(out.status.success(), "{out:?}");

    let mut cmd = paddock();
    cmd.args(["review", &name]);
    let (mut child, mut master) = common::spawn_on_pty(cmd);
    let mut seen = String::new();
    common::read_until(&mut master, "[1/3] apply this change to a.txt?", &mut seen);
    assert!(seen.contains("+agent") && seen.contains("-host"), "{seen}");
    master.write_all(b"a\n").unwrap();
    common::read_until(&mut master, "[2/3] apply this change to b.txt?", &mut seen);
    master.write_all(b"r\n").unwrap();
    common::read_until(&mut master, "[3/3] apply this change to c.txt?", &mut seen);
    master.write_all(b"s\n").unwrap();
    let status = common::wait_within(&mut child, 60, "paddock review");
    assert!(status.success(), "{seen}");

    let read = |f: &str| std::fs::read_to_string(ws.path().join(f)).unwrap();
    assert_eq!(read("a.txt"), "agent\n");
    assert_eq!(read("b.txt"), "host\n");
    assert_eq!(read("c.txt"), "host\n");
    let out = paddock()
        .args(["diff", &name, "--name-only"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "c.txt\n", "{out:?}");
    // The terminal is required: a script is told what to use instead.
    let out = paddock().args(["review", &name]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("paddock apply"), "{out:?}");
}

/// Bad input and faults: a sandbox not in review mode, `--rm` with `--review`, a workspace
/// moved away (nothing written), reset and prune keeping pending changes unless told.
#[test]
fn bad_input_loses_no_pending_change() {
    require_root!();
    let ws = common::workspace();
    std::fs::write(ws.path().join("a.txt"), "host\n").unwrap();
    common::hand_over(ws.path());

    let out = paddock()
        .args(["run", "--rm", "--review", "-w"])
        .arg(ws.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("--rm would remove the changes"),
        "{out:?}"
    );

    let plain = unique("plain");
    let _c1 = Cleanup(plain.clone());
    let out = paddock()
        .args(["create", "--backend", "ns", "--name", &plain, "-w"])
        .arg(ws.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = paddock().args(["diff", &plain]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("is not in review mode"), "{out:?}");

    let name = unique("review-bad");
    let _c2 = Cleanup(name.clone());
    let out = run_review(&name, ws.path(), "echo agent > a.txt; echo n > new.txt");
    assert!(out.status.success(), "{out:?}");

    // The workspace moved away: a clear error, nothing written (not at the new place either).
    let moved = ws.path().with_extension("moved");
    std::fs::rename(ws.path(), &moved).unwrap();
    let out = paddock().args(["apply", &name]).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("missing"), "{out:?}");
    assert!(!ws.path().exists());
    // Another directory in its place is refused too.
    std::fs::create_dir(ws.path()).unwrap();
    common::hand_over(ws.path());
    let out = paddock().args(["apply", &name]).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("replaced"), "{out:?}");
    assert_eq!(std::fs::read_dir(ws.path()).unwrap().count(), 0);
    std::fs::remove_dir(ws.path()).unwrap();
    std::fs::rename(&moved, ws.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(ws.path().join("a.txt")).unwrap(),
        "host\n"
    );

    // prune and reset keep what waits; reset --force drops it.
    let out = paddock()
        .args(["prune", "--force", "--workspace"])
        .arg(ws.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(stderr(&out).contains(&format!("kept {name}")), "{out:?}");
    let out = paddock().args(["reset", &name]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("waiting for review"), "{out:?}");
    let out = paddock()
        .args(["diff", &name, "--name-only"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "a.txt\nnew.txt\n", "{out:?}");
    let out = paddock()
        .args(["reset", "--force", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = paddock()
        .args(["diff", &name, "--name-only"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "", "{out:?}");
}
