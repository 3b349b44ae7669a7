//! `discard` on real overlay layers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, change, dir, file, rel};
use paddock_review::{ChangeKind, Refusal};

#[test]
fn discards_selected_changes_then_everything() {
    let fx = Fixture::new();
    fx.host(
        "printf 'a\\n' > a; mkdir d; printf 'x\\n' > d/x; printf 'moving\\n' > from.txt; \
         mkdir o; printf '1\\n' > o/one; printf '2\\n' > o/two",
    );
    fx.agent(
        "printf 'A\\n' > a; rm -rf d; mv from.txt to.txt; printf 'new\\n' > new.txt; \
         rm -rf o; mkdir o; printf '1\\n' > o/one; mkdir added; printf z > added/z",
    );
    let layer = fx.layer();
    let renamed = change(
        "to.txt",
        ChangeKind::Renamed {
            from: rel("from.txt"),
        },
        file(0o644, 7),
        file(0o644, 7),
    );
    assert_eq!(
        fx.changes(),
        vec![
            change("a", ChangeKind::Modified, file(0o644, 2), file(0o644, 2)),
            change("added/z", ChangeKind::Added, None, file(0o644, 1)),
            change("d", ChangeKind::Deleted, dir(0o755), None),
            change("new.txt", ChangeKind::Added, None, file(0o644, 4)),
            change("o/two", ChangeKind::Deleted, file(0o644, 2), None),
            renamed,
        ]
    );

    // A rename goes with both sides, whichever is named.
    let report = layer.discard(&[rel("from.txt")]).unwrap();
    assert_eq!(report.discarded, vec![rel("to.txt")]);
    assert!(!fx.upper.join("to.txt").exists());
    assert!(!fx.upper.join("from.txt").exists());

    // What an opaque directory hides comes back only with the whole directory.
    let report = layer.discard(&[rel("o/two")]).unwrap();
    assert_eq!(report.discarded, vec![]);
    assert_eq!(
        report.refused,
        vec![Refusal {
            path: rel("o/two"),
            reason: "o/two is hidden by the replaced directory o: discard o instead".into(),
        }]
    );

    // A deleted directory comes back; an added one goes whole.
    let report = layer
        .discard(&[rel("d"), rel("added"), rel("nothing")])
        .unwrap();
    assert_eq!(report.discarded, vec![rel("added/z"), rel("d")]);
    assert_eq!(report.unmatched, vec![rel("nothing")]);
    assert_eq!(
        fx.changes(),
        vec![
            change("a", ChangeKind::Modified, file(0o644, 2), file(0o644, 2)),
            change("new.txt", ChangeKind::Added, None, file(0o644, 4)),
            change("o/two", ChangeKind::Deleted, file(0o644, 2), None),
        ]
    );

    let report = layer.discard(&[]).unwrap();
    assert_eq!(
        report.discarded,
        vec![rel("a"), rel("new.txt"), rel("o/two")]
    );
    assert_eq!(fx.upper_entries(), Vec::<String>::new());
    assert_eq!(fx.changes(), vec![]);
    // The host never changed.
    assert_eq!(fx.read("a"), "a\n");
    assert_eq!(fx.read("d/x"), "x\n");
    assert_eq!(fx.read("from.txt"), "moving\n");
    assert_eq!(fx.read("o/two"), "2\n");
}
