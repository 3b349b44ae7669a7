#![allow(clippy::unwrap_used)]

use paddock_policy::net::Action;

use super::*;

fn rule(action: Action, target: &str) -> Rule {
    Rule::parse_target(action, target).unwrap()
}

fn hosts(rules: &[StoredRule]) -> Vec<String> {
    rules.iter().map(|r| r.rule.host.to_string()).collect()
}

#[test]
fn rules_presets_and_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let a = Scope::Sandbox("a".into());
    let g0 = store.generation().unwrap();
    store
        .add(
            &Scope::Global,
            &[rule(Action::Allow, "global.test")],
            "user",
        )
        .unwrap();
    store
        .add(
            &Scope::Sandbox("b".into()),
            &[rule(Action::Allow, "b.test")],
            "user",
        )
        .unwrap();
    let mine = store
        .add(&a, &[rule(Action::Deny, "mine.test")], "user")
        .unwrap();
    store
        .apply_preset(&a, "p1", &[rule(Action::Allow, "p1.test")])
        .unwrap();
    let g1 = store.generation().unwrap();
    assert!(g1 > g0);
    // A preset replaces the scope's preset rules only.
    store
        .apply_preset(&a, "p2", &[rule(Action::Allow, "p2.test")])
        .unwrap();
    assert_eq!(store.preset_of(&a).unwrap().as_deref(), Some("p2"));
    assert_eq!(store.preset_of(&Scope::Global).unwrap(), None);
    assert_eq!(
        hosts(&store.rules_for("a").unwrap()),
        ["global.test", "mine.test", "p2.test"]
    );
    assert_eq!(
        store
            .rule_rows("a")
            .unwrap()
            .into_iter()
            .map(|r| r.host)
            .collect::<Vec<_>>(),
        ["global.test", "mine.test", "p2.test"]
    );
    assert_eq!(store.all().unwrap().len(), 4);
    let removed = store.remove(mine[0]).unwrap();
    assert_eq!(removed.rule.host.to_string(), "mine.test");
    assert!(matches!(store.remove(mine[0]), Err(StoreError::NoRule(_))));
    assert!(store.generation().unwrap() > g1);
}

#[test]
fn import_replaces_user_rules_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let a = Scope::Sandbox("a".into());
    store
        .add(&a, &[rule(Action::Allow, "old.test")], "user")
        .unwrap();
    store
        .apply_preset(&a, "p", &[rule(Action::Allow, "preset.test")])
        .unwrap();
    let n = store
        .import(
            &[
                (a.clone(), vec![rule(Action::Allow, "new.test")]),
                (Scope::Global, vec![rule(Action::Deny, "g.test")]),
            ],
            true,
        )
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        hosts(&store.rules_for("a").unwrap()),
        ["preset.test", "new.test", "g.test"]
    );
}

#[test]
fn an_unreadable_rule_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let id = store
        .add(&Scope::Global, &[rule(Action::Allow, "x.test")], "user")
        .unwrap()[0];
    store
        .conn
        .execute("UPDATE net_rules SET port = 'many' WHERE id = ?1", [id])
        .unwrap();
    let e = store.all().unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("stored rule {id} is unreadable: ")),
        "{e}"
    );
}
