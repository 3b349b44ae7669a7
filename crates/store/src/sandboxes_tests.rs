#![allow(clippy::unwrap_used)]

use paddock_policy::net::{Action, Rule, Scope};
use paddock_proxy::audit::AuditLog;

use super::*;
use crate::AuditQuery;
use crate::test_support::spec;

#[test]
fn closing_leaves_the_log_unsynced_and_the_rows_readable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    Store::open(&db).unwrap().insert(&spec("kept")).unwrap();
    // No checkpoint on close: the row is still only in the write-ahead log.
    let wal = dir.path().join("s.db-wal");
    assert!(wal.metadata().is_ok_and(|m| m.len() > 0), "no log left");
    let again = Store::open(&db).unwrap();
    assert!(again.get(&"kept".parse().unwrap()).unwrap().is_some());
}

#[test]
fn lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store = Store::open(&db).unwrap();
    store.insert(&spec("b")).unwrap();
    store.insert(&spec("a")).unwrap();
    assert!(matches!(
        store.insert(&spec("a")),
        Err(StoreError::Exists(_))
    ));
    let a: SandboxName = "a".parse().unwrap();
    store.mark_running(&a, 42).unwrap();
    let r = store.get(&a).unwrap().unwrap();
    assert_eq!(
        (r.state, r.supervisor_pid),
        (SandboxState::Running, Some(42))
    );
    store.mark_stopped(&a, Some(7), Some("pids limit")).unwrap();
    let r = store.get(&a).unwrap().unwrap();
    assert_eq!(
        (r.state, r.supervisor_pid, r.last_exit),
        (SandboxState::Stopped, None, Some(7))
    );
    assert_eq!(r.last_cause.as_deref(), Some("pids limit"));
    let names: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.spec.name.to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);
    store.remove_sandbox(&a).unwrap();
    assert!(store.get(&a).unwrap().is_none());
    assert!(matches!(
        store.remove_sandbox(&a),
        Err(StoreError::NotFound(_))
    ));
}

/// Two sandboxes with a rule and a preset each, a global rule, and an audit row of `gone`.
fn two_sandboxes(store: &mut Store) {
    let rule = Rule::parse_target(Action::Allow, "example.test").unwrap();
    for name in ["gone", "kept"] {
        store.insert(&spec(name)).unwrap();
        let scope = Scope::Sandbox(name.to_owned());
        store
            .add(&scope, std::slice::from_ref(&rule), "cli")
            .unwrap();
        store
            .apply_preset(&scope, "none", std::slice::from_ref(&rule), false)
            .unwrap();
    }
    store
        .add(&Scope::Global, std::slice::from_ref(&rule), "cli")
        .unwrap();
    let record = paddock_proxy::audit::Record {
        sandbox: "gone".into(),
        client: "c".into(),
        method: "GET".into(),
        host: "example.test".into(),
        port: Some(443),
        path: None,
        action: "allow",
        rule: "1".into(),
        reason: "r".into(),
        status: None,
    };
    store
        .write(&[paddock_proxy::audit::AuditChange::Decision {
            key: "k",
            ts: 1,
            record: &record,
            end: None,
        }])
        .unwrap();
}

/// (sandbox rows, rules of its own, presets, audit rows) of `name`.
fn held(store: &Store, name: &str) -> (bool, usize, bool, usize) {
    let scope = Scope::Sandbox(name.to_owned());
    (
        store.get(&name.parse().unwrap()).unwrap().is_some(),
        store
            .rules_for(name)
            .unwrap()
            .iter()
            .filter(|r| r.scope == scope)
            .count(),
        store.preset_of(&scope).unwrap().is_some(),
        store
            .audit_rows(&AuditQuery {
                sandbox: Some(name.to_owned()),
                ..AuditQuery::default()
            })
            .unwrap()
            .len(),
    )
}

#[test]
fn removing_a_sandbox_takes_its_row_rules_and_preset_and_keeps_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    two_sandboxes(&mut store);
    store.remove_sandbox(&"gone".parse().unwrap()).unwrap();
    assert_eq!(held(&store, "gone"), (false, 0, false, 1));
    assert_eq!(held(&store, "kept"), (true, 1, true, 0));
    assert_eq!(
        store.rules_for("gone").unwrap().len(),
        1,
        "the global rule stays"
    );
    // The preset's rules, shared, stay while a sandbox uses them, and go with the last.
    assert_eq!(store.rules_for("kept").unwrap().len(), 3);
    store.remove_sandbox(&"kept".parse().unwrap()).unwrap();
    assert_eq!(store.all().unwrap().len(), 1, "{:?}", store.all());
}

#[test]
fn a_removal_that_fails_part_way_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    two_sandboxes(&mut store);
    // The presets' delete, the last of the three, fails.
    store
        .conn
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE DELETE ON net_presets
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let e = store.remove_sandbox(&"gone".parse().unwrap()).unwrap_err();
    assert!(matches!(e, StoreError::Sqlite { .. }), "{e:?}");
    assert_eq!(held(&store, "gone"), (true, 1, true, 1));
}
