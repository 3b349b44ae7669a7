//! `changes`, `patch`, `apply` and `discard` on real overlay layers (see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{Fixture, change, dir, file, rel, symlink};
use paddock_review::{ApplyOptions, ChangeKind, Error, RelPath};

#[test]
fn lists_adds_modifies_deletes_renames_modes_and_symlinks() {
    let fx = Fixture::new();
    fx.host(
        "printf 'one\\n' > edit.txt; printf 'bye\\n' > gone.txt; \
         printf 'moving content\\n' > old-name.txt; printf '#!/bin/sh\\n' > run.sh; \
         mkdir -p src; printf 'fn main() {}\\n' > src/main.rs",
    );
    fx.agent(
        "printf 'two\\n' > edit.txt; rm gone.txt; mv old-name.txt new-name.txt; \
         chmod +x run.sh; ln -s /etc evil; printf 'new\\n' > src/added.rs; mkdir empty",
    );
    let changes = fx.changes();
    let mut evil = change("evil", ChangeKind::Added, None, symlink("/etc"));
    evil.risk = Some("symlink leading outside the workspace: /etc".into());
    let mut run = change("run.sh", ChangeKind::Mode, file(0o644, 10), file(0o755, 10));
    run.risk = Some("gains an execute bit".into());
    assert_eq!(
        changes,
        vec![
            evil,
            run,
            change(
                "edit.txt",
                ChangeKind::Modified,
                file(0o644, 4),
                file(0o644, 4)
            ),
            change("empty", ChangeKind::Added, None, dir(0o755)),
            change("gone.txt", ChangeKind::Deleted, file(0o644, 4), None),
            change(
                "new-name.txt",
                ChangeKind::Renamed {
                    from: rel("old-name.txt")
                },
                file(0o644, 15),
                file(0o644, 15)
            ),
            change("src/added.rs", ChangeKind::Added, None, file(0o644, 4)),
        ]
    );

    let layer = fx.layer();
    let patches: Vec<String> = changes
        .iter()
        .map(|c| layer.patch(c).expect("patch"))
        .collect();
    assert_eq!(
        patches[1],
        "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n"
    );
    assert_eq!(
        patches[2],
        "diff --git a/edit.txt b/edit.txt\n--- a/edit.txt\n+++ b/edit.txt\n@@ -1 +1 @@\n-one\n+two\n"
    );
    assert_eq!(
        patches[5],
        "diff --git a/old-name.txt b/new-name.txt\nsimilarity index 100%\n\
         rename from old-name.txt\nrename to new-name.txt\n"
    );
    assert_eq!(
        patches[0],
        "diff --git a/evil b/evil\nnew file mode 120000\n--- /dev/null\n+++ b/evil\n\
         @@ -0,0 +1 @@\n+/etc\n\\ No newline at end of file\n"
    );

    let etc_before = std::fs::symlink_metadata("/etc").expect("stat /etc");
    let report = layer
        .apply(&[], ApplyOptions::default(), fx.since())
        .expect("apply");
    assert_eq!(report.refused, vec![]);
    assert_eq!(report.skipped, vec![]);
    assert_eq!(report.applied.len(), 7);
    assert_eq!(fx.read("edit.txt"), "two\n");
    assert_eq!(fx.read("new-name.txt"), "moving content\n");
    assert!(!fx.ws.join("old-name.txt").exists());
    assert!(!fx.ws.join("gone.txt").exists());
    assert_eq!(
        std::fs::metadata(fx.ws.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    let evil = std::fs::symlink_metadata(fx.ws.join("evil")).unwrap();
    assert!(evil.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(fx.ws.join("evil")).unwrap(),
        std::path::Path::new("/etc")
    );
    let etc_after = std::fs::symlink_metadata("/etc").expect("stat /etc");
    assert_eq!(etc_before.mtime_nsec(), etc_after.mtime_nsec());
    assert_eq!(etc_before.ctime_nsec(), etc_after.ctime_nsec());
    assert!(fx.ws.join("empty").is_dir());
    // Without settle the upper layer is left alone, and nothing is listed any more.
    assert!(fx.upper_entries().contains(&"edit.txt".to_string()));
    assert_eq!(fx.changes(), vec![]);
}

#[test]
fn workspace_moved_is_refused_and_nothing_written() {
    let fx = Fixture::new();
    fx.host("printf 'x\\n' > a");
    fx.agent("printf 'y\\n' > a; printf 'new\\n' > b");
    let layer = fx.layer();
    assert_eq!(fx.changes().len(), 2);
    std::fs::rename(&fx.ws, fx.root.join("moved")).unwrap();
    std::fs::create_dir(&fx.ws).unwrap();
    let expected = format!(
        "the workspace {} is missing or was replaced since this sandbox started reviewing it; \
         move it back, or discard the changes",
        fx.ws.display()
    );
    let err = layer
        .apply(&[], ApplyOptions::default(), fx.since())
        .expect_err("replaced");
    assert!(matches!(err, Error::WorkspaceReplaced(_)), "{err:?}");
    assert_eq!(err.to_string(), expected);
    let err = paddock_review::Layer::open(&fx.upper, &fx.ws, &fx.state).expect_err("replaced");
    assert_eq!(err.to_string(), expected);
    std::fs::remove_dir(&fx.ws).unwrap();
    let err = paddock_review::Layer::open(&fx.upper, &fx.ws, &fx.state).expect_err("missing");
    assert_eq!(err.to_string(), expected);
    assert_eq!(
        std::fs::read_to_string(fx.root.join("moved/a")).unwrap(),
        "x\n"
    );
    assert!(!fx.root.join("moved/b").exists());
}

#[test]
fn deleted_directory_is_one_entry_and_apply_removes_it_whole() {
    let fx = Fixture::new();
    fx.host("mkdir -p d/sub; printf 'a\\n' > d/a; printf 'b\\n' > d/sub/b; printf k > keep");
    fx.agent("rm -rf d");
    let changes = fx.changes();
    assert_eq!(
        changes,
        vec![change("d", ChangeKind::Deleted, dir(0o755), None)]
    );
    let layer = fx.layer();
    assert_eq!(
        layer.patch(&changes[0]).unwrap(),
        "diff --git a/d b/d\ndeleted directory mode 040755\ndeleted d/a (file, 2 bytes)\n\
         deleted d/sub (directory)\ndeleted d/sub/b (file, 2 bytes)\n"
    );
    let opts = ApplyOptions {
        settle: true,
        ..ApplyOptions::default()
    };
    let report = layer.apply(&[], opts, fx.since()).unwrap();
    assert_eq!(report.applied, vec![rel("d")]);
    assert!(!fx.ws.join("d").exists());
    assert!(fx.ws.join("keep").exists());
    assert_eq!(fx.upper_entries(), Vec::<String>::new());
    assert_eq!(fx.changes(), vec![]);
}

#[test]
fn opaque_directory_deletes_what_it_hides() {
    let fx = Fixture::new();
    fx.host(
        "mkdir -p o/subdir; printf 'keep\\n' > o/keep; printf 'same\\n' > o/same; \
         printf 'gone\\n' > o/gone; printf x > o/subdir/x",
    );
    fx.agent(
        "rm -rf o; mkdir o; printf 'kept\\n' > o/keep; printf 'same\\n' > o/same; \
         printf 'added\\n' > o/added",
    );
    let mut opaque = [0u8; 8];
    let n = rustix::fs::getxattr(fx.upper.join("o"), "user.overlay.opaque", &mut opaque[..])
        .expect("the fixture made an opaque directory");
    assert_eq!(&opaque[..n], b"y");
    assert_eq!(
        fx.changes(),
        vec![
            change("o/added", ChangeKind::Added, None, file(0o644, 6)),
            change("o/gone", ChangeKind::Deleted, file(0o644, 5), None),
            change(
                "o/keep",
                ChangeKind::Modified,
                file(0o644, 5),
                file(0o644, 5)
            ),
            change("o/subdir", ChangeKind::Deleted, dir(0o755), None),
        ]
    );
    fx.layer()
        .apply(&[], ApplyOptions::default(), fx.since())
        .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(fx.ws.join("o"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["added", "keep", "same"]);
    assert_eq!(fx.read("o/keep"), "kept\n");
    assert_eq!(fx.changes(), vec![]);
}

#[test]
fn unchanged_after_copy_up_shows_nothing() {
    let fx = Fixture::new();
    fx.host("printf 'x\\n' > t; printf 'y\\n' > u; mkdir d; printf z > d/f; printf w > same");
    fx.agent("touch t; chmod +x u; chmod -x u; touch d/f; printf w > same");
    assert_eq!(fx.upper_entries(), ["d", "d/f", "same", "t", "u"]);
    assert_eq!(fx.changes(), vec![]);
}

#[test]
fn odd_names_are_escaped() {
    let fx = Fixture::new();
    fx.agent("printf x > \"$(printf 'a\\nb')\"; printf y > \"$(printf 'bad\\377name')\"");
    let changes = fx.changes();
    let nl = RelPath::new(b"a\nb".to_vec()).unwrap();
    let bad = RelPath::new(b"bad\xffname".to_vec()).unwrap();
    let added = |p: &RelPath| paddock_review::Change {
        path: p.clone(),
        ..change("x", ChangeKind::Added, None, file(0o644, 1))
    };
    assert_eq!(changes, vec![added(&nl), added(&bad)]);
    assert_eq!(changes[0].path.to_string(), "\"a\\nb\"");
    assert_eq!(changes[1].path.to_string(), "\"bad\\377name\"");
    let json = serde_json::to_value(&changes[1]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "path": "bad\\377name", "path_escaped": true, "kind": "added", "old": null,
            "new": {"type": "file", "mode": 0o644, "size": 1}, "binary": false, "risk": null,
            "conflict": null, "git_internal": false
        })
    );
    let layer = fx.layer();
    assert!(
        layer
            .patch(&changes[0])
            .unwrap()
            .starts_with("diff --git \"a/a\\nb\" \"b/a\\nb\"\nnew file mode 100644\n")
    );
    layer
        .apply(&[], ApplyOptions::default(), fx.since())
        .unwrap();
    use std::os::unix::ffi::OsStrExt;
    assert_eq!(
        std::fs::read(fx.ws.join(std::ffi::OsStr::from_bytes(b"bad\xffname"))).unwrap(),
        b"y"
    );
    assert_eq!(
        std::fs::read(fx.ws.join(std::ffi::OsStr::from_bytes(b"a\nb"))).unwrap(),
        b"x"
    );
}

#[test]
fn type_changes_and_special_files() {
    let fx = Fixture::new();
    fx.host("printf 'f\\n' > f2l; mkdir d2f; printf 'x\\n' > d2f/x; ln -s target l2f");
    fx.agent(
        "rm f2l; ln -s elsewhere f2l; rm -rf d2f; printf 'now a file\\n' > d2f; rm l2f; \
         printf 'file\\n' > l2f; mkfifo fifo",
    );
    let changes = fx.changes();
    let fifo = paddock_review::Entry {
        kind: paddock_review::EntryType::Other,
        mode: 0o644,
        size: 0,
        target: None,
    };
    assert_eq!(
        changes,
        vec![
            change("d2f", ChangeKind::TypeChanged, dir(0o755), file(0o644, 11)),
            change(
                "f2l",
                ChangeKind::TypeChanged,
                file(0o644, 2),
                symlink("elsewhere")
            ),
            change("fifo", ChangeKind::Special, None, Some(fifo)),
            change(
                "l2f",
                ChangeKind::TypeChanged,
                symlink("target"),
                file(0o644, 5)
            ),
        ]
    );
    let report = fx
        .layer()
        .apply(&[], ApplyOptions::default(), fx.since())
        .unwrap();
    assert_eq!(report.applied, vec![rel("d2f"), rel("f2l"), rel("l2f")]);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].path, rel("fifo"));
    assert_eq!(fx.read("d2f"), "now a file\n");
    assert_eq!(fx.read("l2f"), "file\n");
    assert_eq!(
        std::fs::read_link(fx.ws.join("f2l")).unwrap(),
        std::path::Path::new("elsewhere")
    );
    assert!(!fx.ws.join("fifo").exists());
    assert_eq!(
        fx.changes(),
        vec![change(
            "fifo",
            ChangeKind::Special,
            None,
            Some(fifo_entry())
        )]
    );
}

fn fifo_entry() -> paddock_review::Entry {
    paddock_review::Entry {
        kind: paddock_review::EntryType::Other,
        mode: 0o644,
        size: 0,
        target: None,
    }
}

#[test]
fn git_internals_are_listed_not_applied_and_new_repositories_are_risky() {
    let fx = Fixture::new();
    fx.host(
        "mkdir -p repo/.git/hooks wt; printf '[core]\\n' > repo/.git/config; \
         printf 'ref: refs/heads/main\\n' > repo/.git/HEAD",
    );
    fx.agent(
        "printf '[core]\\n\\tfsmonitor = evil\\n' > repo/.git/config; printf x > repo/.git/obj; \
         mkdir -p nested/.git; printf 'ref\\n' > nested/.git/HEAD; \
         printf 'gitdir: /elsewhere\\n' > wt/.git",
    );
    let mut head = change("nested/.git/HEAD", ChangeKind::Added, None, file(0o644, 4));
    head.risk = Some("new git repository".into());
    let mut config = change(
        "repo/.git/config",
        ChangeKind::Modified,
        file(0o644, 7),
        file(0o644, 25),
    );
    config.risk = Some("git hook or config (the host's git runs or obeys it)".into());
    config.git_internal = true;
    let mut pointer = change("wt/.git", ChangeKind::Added, None, file(0o644, 19));
    pointer.risk = Some(".git pointer (the host's git follows it)".into());
    let mut obj = change("repo/.git/obj", ChangeKind::Added, None, file(0o644, 1));
    obj.git_internal = true;
    assert_eq!(fx.changes(), vec![head, config, pointer, obj]);
    let report = fx
        .layer()
        .apply(&[], ApplyOptions::default(), fx.since())
        .unwrap();
    assert_eq!(
        report.applied,
        vec![rel("nested/.git/HEAD"), rel("wt/.git")]
    );
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|r| (r.path.to_string(), r.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("repo/.git/config".to_string(), paddock_review::GIT_INTERNAL),
            ("repo/.git/obj".to_string(), paddock_review::GIT_INTERNAL)
        ]
    );
    assert_eq!(fx.read("repo/.git/config"), "[core]\n");
    assert!(!fx.ws.join("repo/.git/obj").exists());
}

#[test]
fn hand_made_upper_xattr_whiteout_redirect_and_not_opaque() {
    let fx = Fixture::new();
    fx.host("printf 'w\\n' > wfile; mkdir r m; printf 'h\\n' > r/hostonly; printf k > m/keep");
    fx.mark_run();
    let up = &fx.upper;
    std::fs::write(up.join("wfile"), b"").unwrap();
    rustix::fs::setxattr(
        up.join("wfile"),
        "user.overlay.whiteout",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::create_dir(up.join("r")).unwrap();
    rustix::fs::setxattr(
        up.join("r"),
        "user.overlay.redirect",
        b"/elsewhere",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::write(up.join("r/new"), b"n\n").unwrap();
    std::fs::create_dir(up.join("m")).unwrap();
    rustix::fs::setxattr(
        up.join("m"),
        "user.overlay.opaque",
        b"x",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::write(up.join("m/added"), b"add\n").unwrap();
    rustix::fs::setxattr(
        up.join("m/added"),
        "user.note",
        b"agent's",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    for p in ["wfile", "r", "r/new", "m", "m/added"] {
        std::fs::set_permissions(
            up.join(p),
            PermissionsExt::from_mode(if p.len() == 1 { 0o755 } else { 0o644 }),
        )
        .unwrap();
    }
    assert_eq!(
        fx.changes(),
        vec![
            change("m/added", ChangeKind::Added, None, file(0o644, 4)),
            change("r/hostonly", ChangeKind::Deleted, file(0o644, 2), None),
            change("r/new", ChangeKind::Added, None, file(0o644, 2)),
            change("wfile", ChangeKind::Deleted, file(0o644, 2), None),
        ]
    );
    fx.layer()
        .apply(&[], ApplyOptions::default(), fx.since())
        .unwrap();
    let mut names = [0u8; 256];
    let n = rustix::fs::listxattr(fx.ws.join("m/added"), &mut names[..]).unwrap();
    assert_eq!(n, 0, "no xattr is copied to the host");
    assert!(fx.ws.join("m/keep").exists());
    assert!(!fx.ws.join("r/hostonly").exists());
    assert!(!fx.ws.join("wfile").exists());
}

#[test]
fn binary_files_are_flagged_and_summarised() {
    let fx = Fixture::new();
    fx.host(
        "printf 'x\\000y' > nul.bin; printf 'text\\n' > latin1.txt; printf 'gone\\n' > del.txt",
    );
    fx.agent("printf 'x\\000yz' > nul.bin; printf 'caf\\351\\n' > latin1.txt; rm del.txt");
    let mut latin1 = change(
        "latin1.txt",
        ChangeKind::Modified,
        file(0o644, 5),
        file(0o644, 5),
    );
    latin1.binary = true;
    let mut nul = change(
        "nul.bin",
        ChangeKind::Modified,
        file(0o644, 3),
        file(0o644, 4),
    );
    nul.binary = true;
    let changes = fx.changes();
    assert_eq!(
        changes,
        vec![
            change("del.txt", ChangeKind::Deleted, file(0o644, 5), None),
            latin1,
            nul
        ]
    );
    let layer = fx.layer();
    let patches: Vec<String> = changes.iter().map(|c| layer.patch(c).unwrap()).collect();
    assert_eq!(
        patches,
        [
            "diff --git a/del.txt b/del.txt\ndeleted file mode 100644\n--- a/del.txt\n\
             +++ /dev/null\n@@ -1 +0,0 @@\n-gone\n",
            "diff --git a/latin1.txt b/latin1.txt\n\
             Binary file latin1.txt differs (5 bytes → 5 bytes)\n",
            "diff --git a/nul.bin b/nul.bin\nBinary file nul.bin differs (3 bytes → 4 bytes)\n",
        ]
    );
}

#[test]
fn type_change_patch_is_a_deletion_and_an_addition() {
    let fx = Fixture::new();
    fx.host("printf 'f\\n' > f2l");
    fx.agent("rm f2l; ln -s elsewhere f2l");
    let changes = fx.changes();
    assert_eq!(
        fx.layer().patch(&changes[0]).unwrap(),
        "diff --git a/f2l b/f2l\ndeleted file mode 100644\n--- a/f2l\n+++ /dev/null\n\
         @@ -1 +0,0 @@\n-f\n\
         diff --git a/f2l b/f2l\nnew file mode 120000\n--- /dev/null\n+++ b/f2l\n\
         @@ -0,0 +1 @@\n+elsewhere\n\\ No newline at end of file\n"
    );
}

#[test]
fn a_metadata_only_copy_is_refused() {
    let fx = Fixture::new();
    fx.host("printf 'data\\n' > m");
    fx.mark_run();
    std::fs::write(fx.upper.join("m"), b"").unwrap();
    std::fs::File::options()
        .write(true)
        .open(fx.upper.join("m"))
        .unwrap()
        .set_len(5)
        .unwrap();
    rustix::fs::setxattr(
        fx.upper.join("m"),
        "user.overlay.metacopy",
        b"",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let err = fx.layer().changes(&[], fx.since()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "m in the upper layer is a metadata-only copy: review mode needs the overlay mounted \
         with metacopy=off"
    );
    let err = fx
        .layer()
        .apply(&[], ApplyOptions::default(), fx.since())
        .unwrap_err();
    assert!(matches!(err, Error::Metacopy(_)), "{err:?}");
    assert_eq!(fx.read("m"), "data\n");
}
