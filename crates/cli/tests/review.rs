//! Review mode (`--review`): the agent's changes wait in the sandbox's layer until the user
//! lists, applies or discards them; real sandboxes on every backend, in both modes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

use common::{Cleanup, paddock, paddock_for, stderr, stdout, unique};

on_every_backend_in_both_modes!(changes_wait_for_review_and_land_as_chosen);

/// Everything under `dir`: path → type, mode and content (or symlink target).
fn snapshot(dir: &Path) -> BTreeMap<Vec<u8>, (String, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().as_os_str().as_bytes().to_vec();
            let (kind, body) = if m.file_type().is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                ("dir", Vec::new())
            } else {
                ("file", std::fs::read(&p).unwrap())
            };
            out.insert(rel, (kind.to_owned(), m.mode() & 0o7777, body));
        }
    }
    out
}

fn run_in(backend: &str, name: &str, ws: &Path, script: &str) -> Output {
    paddock_for(backend)
        .args([
            "run",
            "--review",
            "--backend",
            backend,
            "--name",
            name,
            "-w",
        ])
        .arg(ws)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap()
}

fn review(args: &[&str]) -> Output {
    paddock().args(args).output().unwrap()
}

fn read(ws: &Path, rel: &str) -> String {
    std::fs::read_to_string(ws.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The whole path of a review: the workspace untouched while the agent works (over two runs,
/// the layer kept between them), the changes listed (risky and conflicting ones marked, odd
/// names escaped), a subset applied, one discarded, the rest applied with conflicts refused,
/// then merged and forced; a symlink to /etc planted inside lands as a symlink, never followed.
fn changes_wait_for_review_and_land_as_chosen(backend: &str) {
    common::ensure_image();
    let ws = common::workspace();
    let w = ws.path();
    for (f, text) in [
        ("a.txt", "one\n"),
        ("del.txt", "doomed\n"),
        ("old.txt", "moving along\n"),
        ("run.sh", "#!/bin/sh\necho hi\n"),
        ("conf.txt", "1\n2\n3\n4\n5\n"),
        ("clash.txt", "base\n"),
        ("dir/x", "x\n"),
    ] {
        std::fs::create_dir_all(w.join(f).parent().unwrap()).unwrap();
        std::fs::write(w.join(f), text).unwrap();
    }
    common::hand_over(w);
    // A host change in the same clock tick as the start counts as made during the run (a
    // conflict, the safe side): the setup comes a tick before.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let name = unique("review");
    let _cleanup = Cleanup(name.clone());
    let before = snapshot(w);

    let out = run_in(
        backend,
        &name,
        w,
        "set -e; echo two >> a.txt; echo new > new.txt; rm del.txt; mv old.txt moved.txt; \
         chmod +x run.sh; ln -s /etc evil; mkdir -p deep/er; echo d > deep/er/f; rm -rf dir; \
         sed -i 's/^1$/one/' conf.txt; echo agent > clash.txt; \
         printf 'all:\\n\\ttrue\\n' > Makefile; touch \"$(printf 'bad\\nname')\"; \
         sudo sh -c 'umask 077; echo r > rootmade'; cat a.txt",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "one\ntwo\n", "the agent sees its own changes");
    let err = stderr(&out);
    assert!(
        err.contains("Makefile: build file") && err.contains("wait for your review"),
        "the run says what waits and what is risky: {err}"
    );
    assert_eq!(snapshot(w), before, "the workspace changed before apply");

    // A second run builds on the first one's layer.
    let out = run_in(backend, &name, w, "cat new.txt && echo more >> new.txt");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "new\n");
    assert_eq!(snapshot(w), before, "the workspace changed before apply");

    // The host changes two files the agent changed too.
    std::fs::write(w.join("conf.txt"), "1\n2\n3\n4\nfive\n").unwrap();
    std::fs::write(w.join("clash.txt"), "host\n").unwrap();

    let out = review(&["diff", &name, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_path: BTreeMap<String, &serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap().to_owned(), c))
        .collect();
    let kind = |p: &str| {
        by_path
            .get(p)
            .unwrap_or_else(|| panic!("{p} not listed: {list:#}"))["kind"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(kind("a.txt"), "modified");
    assert_eq!(kind("new.txt"), "added");
    assert_eq!(kind("del.txt"), "deleted");
    assert_eq!(kind("moved.txt"), "renamed");
    assert_eq!(by_path["moved.txt"]["from"], "old.txt");
    assert_eq!(kind("run.sh"), "mode");
    assert_eq!(kind("evil"), "added");
    assert_eq!(kind("dir"), "deleted");
    assert_eq!(kind("rootmade"), "added");
    assert_eq!(kind("bad\\nname"), "added");
    assert_eq!(by_path["bad\\nname"]["path_escaped"], true);
    assert!(by_path["evil"]["risk"].as_str().unwrap().contains("/etc"));
    assert!(by_path["Makefile"]["risk"].is_string());
    for p in ["conf.txt", "clash.txt"] {
        assert!(by_path[p]["conflict"].is_string(), "{p}: {list:#}");
    }
    assert!(by_path["a.txt"]["conflict"].is_null());
    // Risky first.
    assert!(list[0]["risk"].is_string(), "{list:#}");

    let stat = review(&["diff", &name, "--stat"]);
    assert!(stat.status.success(), "{stat:?}");
    let text = stdout(&stat);
    assert!(text.contains("C M clash.txt"), "{text}");
    assert!(text.contains("R old.txt -> moved.txt"), "{text}");
    let patch = stdout(&review(&["diff", &name, "a.txt"]));
    assert!(
        patch.contains("+two") && !patch.contains("new.txt"),
        "{patch}"
    );
    let outside = review(&["diff", &name, "/etc"]);
    assert_eq!(outside.status.code(), Some(2), "{outside:?}");
    assert!(
        stderr(&outside).contains("outside the workspace"),
        "{outside:?}"
    );

    // A subset lands; the rest still waits.
    let out = review(&["apply", &name, "new.txt", &w.join("deep").to_string_lossy()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(w, "new.txt"), "new\nmore\n");
    assert_eq!(read(w, "deep/er/f"), "d\n");
    assert!(w.join("del.txt").exists() && !w.join("moved.txt").exists());
    // One is dropped.
    let out = review(&["discard", &name, "a.txt"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(w, "a.txt"), "one\n");

    // Everything else: the conflicts are refused, nothing written for them.
    let out = review(&["apply", &name]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("not applied clash.txt"), "{out:?}");
    assert_eq!(read(w, "clash.txt"), "host\n");
    assert_eq!(read(w, "conf.txt"), "1\n2\n3\n4\nfive\n");
    assert!(!w.join("del.txt").exists() && !w.join("old.txt").exists());
    assert_eq!(read(w, "moved.txt"), "moving along\n");
    assert!(!w.join("dir").exists());
    assert_eq!(
        std::fs::metadata(w.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111,
        0o111
    );
    assert_eq!(
        std::fs::read_link(w.join("evil")).unwrap(),
        Path::new("/etc"),
        "the symlink lands as a symlink"
    );
    assert!(Path::new("/etc/passwd").exists());
    assert!(w.join("bad\nname").exists());
    let made = std::fs::metadata(w.join("rootmade")).unwrap();
    let owner = std::fs::metadata(w).unwrap();
    assert_eq!((made.uid(), made.gid()), (owner.uid(), owner.gid()));
    assert_eq!(read(w, "rootmade"), "r\n");

    // The clean three-way merge, then the forced one.
    let out = review(&["apply", &name, "--merge", "conf.txt"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(w, "conf.txt"), "one\n2\n3\n4\nfive\n");
    let out = review(&["apply", &name, "--merge", "clash.txt"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unclean merge is refused: {out:?}"
    );
    assert_eq!(read(w, "clash.txt"), "host\n");
    let out = review(&["apply", &name, "--force", "clash.txt"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(w, "clash.txt"), "agent\n");

    let out = review(&["diff", &name, "--name-only"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "", "everything was applied or dropped");
    // The next run sees the workspace as it now is.
    let out = run_in(backend, &name, w, "cat clash.txt conf.txt a.txt");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "agent\none\n2\n3\n4\nfive\none\n");
}
