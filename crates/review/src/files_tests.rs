use std::os::unix::fs::{PermissionsExt, symlink};

use super::*;

fn rel(s: &str) -> RelPath {
    RelPath::new(s.as_bytes().to_vec()).unwrap()
}

fn ws() -> (tempfile::TempDir, Workspace) {
    let dir = tempfile::tempdir().unwrap();
    let w = Workspace::open(dir.path()).unwrap();
    (dir, w)
}

#[test]
fn write_read_stat_list_delete_round_trip() {
    let (dir, w) = ws();
    let made = w
        .write(&rel("src/lib/a.txt"), b"hello\n", None, true)
        .unwrap();
    assert_eq!((made.kind, made.size, made.mode), ("file", 6, 0o644));
    assert_eq!(made.path, "src/lib/a.txt");
    assert_eq!(
        std::fs::read(dir.path().join("src/lib/a.txt")).unwrap(),
        b"hello\n"
    );
    assert_eq!(w.read(&rel("src/lib/a.txt"), 100).unwrap(), b"hello\n");
    // Replaced whole, keeping its mode unless one is given.
    std::fs::set_permissions(
        dir.path().join("src/lib/a.txt"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let again = w.write(&rel("src/lib/a.txt"), b"bye", None, false).unwrap();
    assert_eq!((again.size, again.mode), (3, 0o755));
    let set = w
        .write(&rel("src/lib/a.txt"), b"bye", Some(0o600), false)
        .unwrap();
    assert_eq!(set.mode, 0o600);
    let (list, more) = w.list(&rel("src")).unwrap();
    assert!(!more);
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].path.as_str(), list[0].kind), ("src/lib", "dir"));
    assert_eq!(w.stat(&RelPath::root()).unwrap().kind, "dir");
    // No temporary file is left beside it.
    assert_eq!(w.list(&rel("src/lib")).unwrap().0.len(), 1);
    assert!(matches!(
        w.delete(&rel("src"), false),
        Err(FilesError::NotEmpty(_))
    ));
    w.delete(&rel("src"), true).unwrap();
    assert!(!dir.path().join("src").exists());
    assert!(matches!(w.stat(&rel("src")), Err(FilesError::NotFound(_))));
}

#[test]
fn without_parents_a_missing_directory_is_not_made() {
    let (dir, w) = ws();
    assert!(matches!(
        w.write(&rel("no/such/file"), b"x", None, false),
        Err(FilesError::NotFound(_))
    ));
    assert!(!dir.path().join("no").exists());
}

#[test]
fn reads_past_the_cap_are_refused() {
    let (dir, w) = ws();
    std::fs::write(dir.path().join("big"), vec![b'x'; 1000]).unwrap();
    assert!(matches!(
        w.read(&rel("big"), 999),
        Err(FilesError::TooLarge {
            size: 1000,
            max: 999,
            ..
        })
    ));
    assert_eq!(w.read(&rel("big"), 1000).unwrap().len(), 1000);
}

/// Symlinks the sandbox planted, to a file and to a directory outside the workspace: listed as
/// what they are, never followed to read, write or delete through.
#[test]
fn planted_symlinks_are_never_followed() {
    let (dir, w) = ws();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host-only").unwrap();
    symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
    symlink(outside.path(), dir.path().join("out")).unwrap();

    let st = w.stat(&rel("link")).unwrap();
    assert_eq!(st.kind, "symlink");
    assert_eq!(
        st.target.as_deref(),
        Some(outside.path().join("secret").to_str().unwrap())
    );
    assert!(matches!(
        w.read(&rel("link"), 100),
        Err(FilesError::Symlink(_))
    ));
    assert!(matches!(
        w.read(&rel("out/secret"), 100),
        Err(FilesError::Symlink(_))
    ));
    assert!(matches!(w.list(&rel("out")), Err(FilesError::Symlink(_))));
    assert!(matches!(
        w.write(&rel("link"), b"overwritten", None, false),
        Err(FilesError::Symlink(_))
    ));
    assert!(matches!(
        w.write(&rel("out/new"), b"x", None, true),
        Err(FilesError::Symlink(_))
    ));
    assert!(matches!(
        w.delete(&rel("out/secret"), false),
        Err(FilesError::Symlink(_))
    ));
    // Deleting the link deletes the link, and a tree holding one is removed without
    // following it.
    std::fs::create_dir(dir.path().join("tree")).unwrap();
    symlink(outside.path(), dir.path().join("tree/out")).unwrap();
    w.delete(&rel("tree"), true).unwrap();
    w.delete(&rel("link"), false).unwrap();
    assert!(!dir.path().join("link").exists());
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "host-only"
    );
}

#[test]
fn paths_out_of_the_workspace_are_refused_before_any_lookup() {
    for bad in ["/etc/passwd", "../x", "a/../../x", "a//b", "./a"] {
        assert!(
            RelPath::new(bad.as_bytes().to_vec()).is_err(),
            "{bad} was taken"
        );
    }
}

#[test]
fn a_workspace_reached_through_a_symlink_is_refused() {
    let real = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    symlink(real.path(), links.path().join("ws")).unwrap();
    assert!(matches!(
        Workspace::open(&links.path().join("ws")),
        Err(FilesError::Symlink(_))
    ));
}
