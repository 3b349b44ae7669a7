#![allow(clippy::unwrap_used)]

use super::*;

const B: &str = "1111111111111111111111111111111111111111";
const S: &str = "2222222222222222222222222222222222222222";

fn entry(mode: &str, id: &str) -> Entry {
    Entry {
        mode: mode.into(),
        id: id.into(),
    }
}

fn base() -> Tree {
    let mut t = Tree::new();
    for p in [
        "a.txt",
        "del.txt",
        "old.txt",
        "dir/x",
        "dir/y/z",
        "file-then-dir",
    ] {
        t.insert(p.as_bytes().to_vec(), entry("100644", B));
    }
    t.insert(b"sub".to_vec(), entry("160000", S));
    t
}

fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn inc(kind: Kind, path: &str, from: Option<&str>, new: New, blob: Option<usize>) -> Incoming {
    Incoming {
        kind,
        path: rel(path),
        from: from.map(rel),
        new,
        blob,
    }
}

const FILE: New = New::File { exec: false };
const EXEC: New = New::File { exec: true };

#[test]
fn ls_tree_output_parses_with_odd_names() {
    let out = format!("100644 blob {B}\ta.txt\0120000 blob {B}\tli\nnk\0160000 commit {S}\tsub\0");
    let t = parse_ls_tree(out.as_bytes()).unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t[&b"li\nnk".to_vec()], entry("120000", B));
    assert_eq!(t[&b"sub".to_vec()], entry("160000", S));
    assert!(parse_ls_tree(b"100644 blob short\tx\0").is_none());
    assert!(parse_ls_tree(format!("100644 blob {B} a\0").as_bytes()).is_none());
    assert_eq!(parse_ls_tree(b"").unwrap(), Tree::new());
}

#[test]
fn the_commit_holds_heads_tree_with_the_changes() {
    let incoming = vec![
        inc(Kind::Modified, "a.txt", None, FILE, Some(0)),
        inc(Kind::Added, "new/evil", None, New::Symlink, Some(1)),
        inc(Kind::Deleted, "del.txt", None, New::Absent, None),
        inc(Kind::Renamed, "moved.txt", Some("old.txt"), EXEC, Some(2)),
        inc(Kind::Deleted, "dir", None, New::Absent, None),
        inc(Kind::TypeChanged, "file-then-dir", None, New::Dir, None),
        inc(Kind::Added, "file-then-dir/inner", None, FILE, Some(3)),
        inc(Kind::Added, "emptydir", None, New::Dir, None),
        // Left out: untracked paths, git directories, submodules, a directory's own mode.
        inc(Kind::Modified, "ignored.env", None, FILE, Some(4)),
        inc(Kind::Deleted, "build", None, New::Absent, None),
        inc(Kind::Renamed, "notes2", Some("notes"), FILE, Some(5)),
        inc(Kind::Added, "vendor/.git/config", None, FILE, Some(6)),
        inc(Kind::Modified, "sub/file", None, FILE, Some(7)),
        inc(Kind::Mode, "dir2", None, New::Dir, None),
    ];
    let plan = plan(&base(), &incoming);
    assert_eq!(
        plan.listed,
        vec![
            "M a.txt",
            "A new/evil",
            "D del.txt",
            "R old.txt -> moved.txt",
            "D dir",
            "T file-then-dir",
            "A file-then-dir/inner",
        ]
    );
    let skipped: Vec<&str> = plan
        .skipped
        .iter()
        .map(|(p, _)| std::str::from_utf8(p.as_bytes()).unwrap())
        .collect();
    assert_eq!(
        skipped,
        vec![
            "ignored.env",
            "build",
            "notes2",
            "vendor/.git/config",
            "sub/file"
        ]
    );
    assert!(plan.skipped[4].1.contains("submodule sub"));
    let ids: BTreeMap<usize, String> = (0..8).map(|i| (i, format!("{i}").repeat(40))).collect();
    let tree = apply(&base(), &plan.edits, &ids);
    let mut want = Tree::new();
    want.insert(b"a.txt".to_vec(), entry("100644", &"0".repeat(40)));
    want.insert(b"new/evil".to_vec(), entry("120000", &"1".repeat(40)));
    want.insert(b"moved.txt".to_vec(), entry("100755", &"2".repeat(40)));
    want.insert(
        b"file-then-dir/inner".to_vec(),
        entry("100644", &"3".repeat(40)),
    );
    want.insert(b"sub".to_vec(), entry("160000", S));
    assert_eq!(tree, want);
    let info = index_info(&tree);
    assert!(info.starts_with(format!("100644 {}\ta.txt\0", "0".repeat(40)).as_bytes()));
    assert_eq!(info.iter().filter(|b| **b == 0).count(), 5);
}

#[test]
fn a_file_replaces_a_directory_and_a_prefix_is_not_a_parent() {
    let mut t = Tree::new();
    t.insert(b"d/a".to_vec(), entry("100644", B));
    t.insert(b"d-x".to_vec(), entry("100644", B));
    t.insert(b"d.txt".to_vec(), entry("100644", B));
    let incoming = vec![inc(Kind::TypeChanged, "d", None, FILE, Some(0))];
    let p = plan(&t, &incoming);
    let ids = BTreeMap::from([(0, S.to_owned())]);
    let tree = apply(&t, &p.edits, &ids);
    let keys: Vec<&[u8]> = tree.keys().map(Vec::as_slice).collect();
    assert_eq!(keys, vec![&b"d"[..], b"d-x", b"d.txt"]);
    // Deleting `d` never touches `d-x` or `d.txt`.
    let p = plan(&t, &[inc(Kind::Deleted, "d", None, New::Absent, None)]);
    let keys: Vec<Vec<u8>> = apply(&t, &p.edits, &ids).into_keys().collect();
    assert_eq!(keys, vec![b"d-x".to_vec(), b"d.txt".to_vec()]);
}
