//! `apply` on real overlay layers: selections, conflicts, merges, symlinked parents, the
//! journal, settle.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;

use common::{Fixture, change, file, rel};
use paddock_review::{ApplyOptions, ChangeKind, Refusal, RelPath};

fn refusal(path: &str, reason: &str) -> Refusal {
    Refusal {
        path: rel(path),
        reason: reason.to_owned(),
    }
}

const FORCE: ApplyOptions = ApplyOptions {
    force: true,
    merge: false,
    settle: false,
};

const MERGE: ApplyOptions = ApplyOptions {
    force: false,
    merge: true,
    settle: false,
};

#[test]
fn selects_a_subset() {
    let fx = Fixture::new();
    fx.host("printf 'renamed\\n' > r1");
    fx.agent(
        "printf 1 > top.txt; mkdir -p lib/deep; printf 2 > lib/a.txt; printf 3 > lib/deep/b.txt; \
         mv r1 lib/r2",
    );
    let layer = fx.layer();
    let renamed = change(
        "lib/r2",
        ChangeKind::Renamed { from: rel("r1") },
        file(0o644, 8),
        file(0o644, 8),
    );
    assert_eq!(
        layer.changes(&[rel("lib")], fx.since()).unwrap(),
        vec![
            change("lib/a.txt", ChangeKind::Added, None, file(0o644, 1)),
            change("lib/deep/b.txt", ChangeKind::Added, None, file(0o644, 1)),
            renamed.clone(),
        ]
    );
    // Selecting a rename's source selects the pair.
    assert_eq!(
        layer.changes(&[rel("r1")], fx.since()).unwrap(),
        vec![renamed]
    );
    let deep =
        RelPath::from_user(OsStr::new("deep"), &fx.ws.join("lib"), &fx.ws).expect("from_user");
    assert_eq!(deep, rel("lib/deep"));
    let report = layer
        .apply(
            &[deep, rel("nothing/here")],
            ApplyOptions::default(),
            fx.since(),
        )
        .unwrap();
    assert_eq!(report.applied, vec![rel("lib/deep/b.txt")]);
    assert_eq!(report.unmatched, vec![rel("nothing/here")]);
    assert_eq!(fx.read("lib/deep/b.txt"), "3");
    assert!(!fx.ws.join("top.txt").exists());
    assert!(!fx.ws.join("lib/a.txt").exists());
    assert!(fx.ws.join("r1").exists());
    assert_eq!(fx.changes().len(), 3);
}

#[test]
fn conflict_is_refused_then_forced() {
    let fx = Fixture::new();
    fx.host("printf 'base\\n' > c.txt; printf 'base\\n' > other.txt");
    fx.agent("printf 'agent\\n' > c.txt; printf 'agent2\\n' > other.txt");
    let layer = fx.layer();
    assert_eq!(layer.changes(&[], fx.since()).unwrap().len(), 2);
    fx.host("printf 'host\\n' > c.txt");
    let why = "changed on the host since the sandbox first saw it";
    let mut c = change(
        "c.txt",
        ChangeKind::Modified,
        file(0o644, 5),
        file(0o644, 6),
    );
    c.conflict = Some(why.into());
    assert_eq!(
        layer.changes(&[], fx.since()).unwrap(),
        vec![
            c,
            change(
                "other.txt",
                ChangeKind::Modified,
                file(0o644, 5),
                file(0o644, 7)
            )
        ]
    );
    let report = layer
        .apply(&[], ApplyOptions::default(), fx.since())
        .unwrap();
    assert_eq!(report.applied, vec![rel("other.txt")]);
    assert_eq!(
        report.refused,
        vec![refusal(
            "c.txt",
            &format!("{why} (apply with force or merge to apply it anyway)")
        )]
    );
    assert_eq!(fx.read("c.txt"), "host\n");
    assert_eq!(fx.read("other.txt"), "agent2\n");
    let report = layer.apply(&[], FORCE, fx.since()).unwrap();
    assert_eq!(report.applied, vec![rel("c.txt")]);
    assert_eq!(fx.read("c.txt"), "agent\n");
    assert_eq!(fx.changes(), vec![]);
}

#[test]
fn host_change_during_the_run_is_a_conflict() {
    let fx = Fixture::new();
    fx.host("printf 'v1\\n' > during.txt; printf 'v1\\n' > calm.txt");
    let ws = fx.ws.display().to_string();
    fx.agent(&format!(
        "printf 'agent\\n' > during.txt; printf 'agent\\n' > calm.txt; printf 'v2\\n' > {ws}/during.txt"
    ));
    let mut during = change(
        "during.txt",
        ChangeKind::Modified,
        file(0o644, 3),
        file(0o644, 6),
    );
    during.conflict = Some("changed on the host while the sandbox ran".into());
    assert_eq!(
        fx.changes(),
        vec![
            change(
                "calm.txt",
                ChangeKind::Modified,
                file(0o644, 3),
                file(0o644, 6)
            ),
            during
        ]
    );
    // A change during the run leaves no merge base.
    let report = fx.layer().apply(&[], MERGE, fx.since()).unwrap();
    assert_eq!(report.applied, vec![rel("calm.txt")]);
    assert_eq!(report.refused.len(), 1);
    assert!(
        report.refused[0].reason.contains("no merge base"),
        "{:?}",
        report.refused
    );
}

#[test]
fn clean_three_way_merge() {
    let fx = Fixture::new();
    fx.host("printf 'a\\nb\\nc\\nd\\ne\\nf\\ng\\n' > m.txt");
    fx.agent("printf 'A\\nb\\nc\\nd\\ne\\nf\\ng\\n' > m.txt");
    let layer = fx.layer();
    layer.capture(fx.since()).unwrap();
    fx.host("printf 'a\\nb\\nc\\nd\\ne\\nf\\nG\\n' > m.txt");
    let report = layer.apply(&[], MERGE, fx.since()).unwrap();
    assert_eq!(report.refused, vec![]);
    assert_eq!(report.applied, vec![rel("m.txt")]);
    assert_eq!(report.merged, vec![rel("m.txt")]);
    assert_eq!(fx.read("m.txt"), "A\nb\nc\nd\ne\nf\nG\n");
    // The upper layer still has the agent's version; the record says it was applied.
    assert_eq!(
        std::fs::read_to_string(fx.upper.join("m.txt")).unwrap(),
        "A\nb\nc\nd\ne\nf\ng\n"
    );
    assert_eq!(fx.changes(), vec![]);
}

#[test]
fn conflicting_merge_and_binary_merge_are_refused() {
    let fx = Fixture::new();
    fx.host("printf 'a\\nb\\nc\\n' > t.txt; printf 'x\\000y' > bin");
    fx.agent("printf 'a\\nX\\nc\\n' > t.txt; printf 'x\\000z' > bin");
    let layer = fx.layer();
    layer.capture(fx.since()).unwrap();
    fx.host("printf 'a\\nY\\nc\\n' > t.txt; printf 'x\\000w' > bin");
    let report = layer.apply(&[], MERGE, fx.since()).unwrap();
    let why = "changed on the host since the sandbox first saw it";
    assert_eq!(report.applied, vec![]);
    assert_eq!(
        report.refused,
        vec![
            refusal("bin", &format!("{why}; a binary file cannot be merged")),
            refusal(
                "t.txt",
                &format!("{why}; the three-way merge has conflicts")
            ),
        ]
    );
    assert_eq!(fx.read("t.txt"), "a\nY\nc\n");
    // Merge and force: what cannot be merged gets the agent's version.
    let both = ApplyOptions {
        force: true,
        merge: true,
        settle: false,
    };
    let report = layer.apply(&[], both, fx.since()).unwrap();
    assert_eq!(report.applied, vec![rel("bin"), rel("t.txt")]);
    assert_eq!(report.merged, vec![]);
    assert_eq!(fx.read("t.txt"), "a\nX\nc\n");
}

#[test]
fn a_host_parent_replaced_by_a_symlink_is_refused_even_forced() {
    let fx = Fixture::new();
    fx.host("mkdir sub; printf 'v\\n' > sub/f");
    std::fs::create_dir(fx.root.join("outside")).unwrap();
    std::fs::write(fx.root.join("outside/f"), "outside\n").unwrap();
    fx.agent("printf 'agent\\n' > sub/f; printf 'new\\n' > sub/g");
    let layer = fx.layer();
    layer.capture(fx.since()).unwrap();
    fx.host("mv sub sub.real; ln -s ../outside sub");
    let why = "on the host, sub is now a symlink, not a directory";
    let mut f = change("sub/f", ChangeKind::Added, None, file(0o644, 6));
    f.conflict = Some(why.into());
    let mut g = change("sub/g", ChangeKind::Added, None, file(0o644, 4));
    g.conflict = Some(why.into());
    assert_eq!(layer.changes(&[], fx.since()).unwrap(), vec![f, g]);
    let report = layer.apply(&[], FORCE, fx.since()).unwrap();
    assert_eq!(report.applied, vec![]);
    let never = "on the host, sub is a symlink (never followed)";
    assert_eq!(
        report.refused,
        vec![refusal("sub/f", never), refusal("sub/g", never)]
    );
    assert_eq!(
        std::fs::read_to_string(fx.root.join("outside/f")).unwrap(),
        "outside\n"
    );
    assert!(!fx.root.join("outside/g").exists());
}

#[test]
fn journal_leftovers_are_removed_and_apply_finishes() {
    let fx = Fixture::new();
    fx.host("printf 'old\\n' > j.txt; mkdir d");
    fx.agent("printf 'new\\n' > j.txt; printf 'n\\n' > d/k");
    let layer = fx.layer();
    layer.capture(fx.since()).unwrap();
    // An apply killed after listing and creating its temporaries: a half-written file, one
    // listed but never created, a directory being deleted that was renamed out of the way. A
    // directory by a name listed as a file is not ours and stays.
    std::fs::write(fx.ws.join(".j.txt.paddock-apply-99999-1"), "ne").unwrap();
    std::fs::create_dir(fx.ws.join("d/.k.paddock-apply-99999-3")).unwrap();
    std::fs::create_dir_all(fx.ws.join(".old.paddock-apply-99999-4/sub")).unwrap();
    std::fs::write(fx.ws.join(".old.paddock-apply-99999-4/sub/f"), "f").unwrap();
    std::fs::write(
        fx.state.join("journal"),
        "f .j.txt.paddock-apply-99999-1\nf .x.paddock-apply-99999-2\n\
         f d/.k.paddock-apply-99999-3\nd .old.paddock-apply-99999-4\n",
    )
    .unwrap();
    let report = layer
        .apply(&[], ApplyOptions::default(), fx.since())
        .unwrap();
    assert_eq!(report.applied, vec![rel("d/k"), rel("j.txt")]);
    assert!(!fx.ws.join(".j.txt.paddock-apply-99999-1").exists());
    assert!(fx.ws.join("d/.k.paddock-apply-99999-3").is_dir());
    assert_eq!(fx.read("j.txt"), "new\n");
    assert_eq!(std::fs::read(fx.state.join("journal")).unwrap(), b"");
    let mut names: Vec<String> = std::fs::read_dir(&fx.ws)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["d", "j.txt"]);
}

#[test]
fn settle_removes_applied_entries_from_the_upper_layer() {
    let fx = Fixture::new();
    fx.host("mkdir -p keep/sub other; printf 'k\\n' > keep/sub/f; printf 'x\\n' > x");
    fx.agent(
        "printf 'changed\\n' > keep/sub/f; rm x; mkdir newdir; printf n > newdir/n; \
         chmod 700 other; printf 'later\\n' > later.txt",
    );
    let layer = fx.layer();
    let settle = ApplyOptions {
        settle: true,
        ..ApplyOptions::default()
    };
    let report = layer
        .apply(&[rel("keep"), rel("x"), rel("newdir")], settle, fx.since())
        .unwrap();
    assert_eq!(
        report.applied,
        vec![rel("keep/sub/f"), rel("newdir/n"), rel("x")]
    );
    // Applied entries and the directories left empty are gone; the rest stays.
    assert_eq!(fx.upper_entries(), ["later.txt", "other"]);
    assert_eq!(fx.read("keep/sub/f"), "changed\n");
    assert_eq!(
        fx.changes(),
        vec![
            change("later.txt", ChangeKind::Added, None, file(0o644, 6)),
            change(
                "other",
                ChangeKind::Mode,
                common::dir(0o755),
                common::dir(0o700)
            ),
        ]
    );
    layer.apply(&[], settle, fx.since()).unwrap();
    // A directory with a mode change stays in the upper layer only while it differs.
    assert_eq!(fx.upper_entries(), Vec::<String>::new());
    assert_eq!(fx.changes(), vec![]);
}

#[test]
fn without_settle_the_upper_layer_stays_and_nothing_is_listed() {
    let fx = Fixture::new();
    fx.host("printf 'a\\n' > a; printf 'd\\n' > d");
    fx.agent("printf 'b\\n' > a; rm d; printf 'c\\n' > c");
    let before = fx.upper_entries();
    fx.layer()
        .apply(&[], ApplyOptions::default(), fx.since())
        .unwrap();
    assert_eq!(fx.upper_entries(), before);
    assert_eq!(fx.changes(), vec![]);
    // A later edit by the agent shows again.
    fx.agent("printf 'again\\n' > a");
    assert_eq!(
        fx.changes(),
        vec![change(
            "a",
            ChangeKind::Modified,
            file(0o644, 2),
            file(0o644, 6)
        )]
    );
}
