//! `changes`, `patch`, `apply` and `discard` on real overlay layers (see `common`).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{Fixture, change, dir, file, rel, symlink};
use paddock_review::{ApplyOptions, ChangeKind, Error};

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
