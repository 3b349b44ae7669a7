use super::*;

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn entry(kind: EntryType, mode: u32, target: Option<&str>) -> Option<Entry> {
    Some(Entry {
        kind,
        mode,
        size: target.map_or(1, |t| t.len() as u64),
        target: target.map(|t| t.as_bytes().to_vec()),
    })
}

fn change(path: &str, kind: ChangeKind, old: Option<Entry>, new: Option<Entry>) -> Change {
    Change {
        path: p(path),
        kind,
        old,
        new,
        binary: false,
        risk: None,
        conflict: None,
        git_internal: false,
    }
}

#[test]
fn symlinks_leading_out() {
    let cases: &[(&str, &str, bool)] = &[
        ("l", "/etc", true),
        ("l", "x", false),
        ("l", "../x", true),
        ("a/l", "../x", false),
        ("a/l", "../../x", true),
        ("a/l", "./../x", false),
        ("a/b/l", "../../x/../..", true),
        ("l", "a/../../x", true),
        ("l", "a//b/./c", false),
    ];
    for (at, to, want) in cases {
        assert_eq!(leads_out(&p(at), to.as_bytes()), *want, "{at} -> {to}");
    }
}

#[test]
fn risks() {
    use ChangeKind::*;
    use EntryType::*;
    let file = |m| entry(File, m, None);
    let cases: Vec<(Change, bool, bool, Option<&str>)> = vec![
        (
            change("evil", Added, None, entry(Symlink, 0o777, Some("/etc"))),
            false,
            false,
            Some("symlink leading outside the workspace: /etc"),
        ),
        (
            change("a/up", Modified, None, entry(Symlink, 0o777, Some("../.."))),
            false,
            false,
            Some("symlink leading outside the workspace: ../.."),
        ),
        (
            change("a/in", Added, None, entry(Symlink, 0o777, Some("../b"))),
            false,
            false,
            None,
        ),
        (
            change("Makefile", Modified, file(0o644), file(0o644)),
            false,
            false,
            Some("build file (runs on build)"),
        ),
        (
            change(".github/workflows/ci.yml", Deleted, file(0o644), None),
            false,
            false,
            Some("CI workflow"),
        ),
        (
            change("sub/.git/HEAD", Added, None, file(0o644)),
            true,
            false,
            Some("new git repository"),
        ),
        (
            change("sub/.git", Added, None, file(0o644)),
            true,
            false,
            Some(".git pointer (the host's git follows it)"),
        ),
        (
            change("sub/.git", Deleted, file(0o644), None),
            true,
            false,
            None,
        ),
        (
            change("vendor", Deleted, entry(Dir, 0o755, None), None),
            false,
            true,
            Some("removes a directory holding a git repository"),
        ),
        (
            change("run.sh", Mode, file(0o644), file(0o755)),
            false,
            false,
            Some("gains an execute bit"),
        ),
        (
            change("tool", Added, None, file(0o700)),
            false,
            false,
            Some("gains an execute bit"),
        ),
        (
            change("tool", Modified, file(0o755), file(0o755)),
            false,
            false,
            None,
        ),
        (
            change("notes.txt", Modified, file(0o644), file(0o600)),
            false,
            false,
            None,
        ),
    ];
    for (c, new_git, deletes_repo, want) in cases {
        assert_eq!(
            risk(&c, new_git, deletes_repo).as_deref(),
            want,
            "{} {:?}",
            c.path,
            c.kind
        );
    }
}

#[test]
fn selection() {
    let renamed = change(
        "lib/new.rs",
        ChangeKind::Renamed { from: p("old.rs") },
        None,
        None,
    );
    let cases: &[(&[&str], bool)] = &[
        (&[], true),
        (&[""], true),
        (&["lib"], true),
        (&["lib/new.rs"], true),
        (&["old.rs"], true),
        (&["li"], false),
        (&["lib/new.rs/x"], false),
        (&["other", "old.rs"], true),
    ];
    for (sel, want) in cases {
        let sel: Vec<RelPath> = sel.iter().map(|s| p(s)).collect();
        assert_eq!(renamed.selected_by(&sel), *want, "{sel:?}");
    }
}

#[test]
fn risky_first_then_by_path() {
    let mut risky = change("z", ChangeKind::Added, None, None);
    risky.risk = Some("why".into());
    let mut v = vec![
        change("b", ChangeKind::Added, None, None),
        risky.clone(),
        change("a/x", ChangeKind::Added, None, None),
        change("a", ChangeKind::Added, None, None),
    ];
    sort(&mut v);
    let order: Vec<String> = v.iter().map(|c| c.path.to_string()).collect();
    assert_eq!(order, ["z", "a", "a/x", "b"]);
}

#[test]
fn json_shape() {
    let mut c = change(
        "new\nname",
        ChangeKind::Renamed { from: p("old") },
        entry(EntryType::Symlink, 0o777, Some("t\u{1}")),
        entry(EntryType::File, 0o644, None),
    );
    c.conflict = Some("changed".into());
    assert_eq!(
        serde_json::to_value(&c).unwrap(),
        serde_json::json!({
            "path": "new\\nname", "path_escaped": true, "kind": "renamed",
            "from": "old", "from_escaped": false,
            "old": {"type": "symlink", "mode": 0o777, "size": 2, "target": "t\\001",
                    "target_escaped": true},
            "new": {"type": "file", "mode": 0o644, "size": 1},
            "binary": false, "risk": null, "conflict": "changed", "git_internal": false
        })
    );
}
