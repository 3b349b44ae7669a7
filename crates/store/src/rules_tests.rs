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
        .apply_preset(&a, "p1", &[rule(Action::Allow, "p1.test")], false)
        .unwrap();
    let g1 = store.generation().unwrap();
    assert!(g1 > g0);
    // A preset replaces the scope's preset rules only.
    store
        .apply_preset(&a, "p2", &[rule(Action::Allow, "p2.test")], false)
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
    // p1's rules went with the last scope that used them.
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
        .apply_preset(&a, "p", &[rule(Action::Allow, "preset.test")], false)
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
fn a_preset_is_kept_once_and_referenced_by_each_scope_that_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let preset = [rule(Action::Allow, "a.test"), rule(Action::Allow, "b.test")];
    let names: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
    let mut ids = Vec::new();
    for n in &names {
        let scope = Scope::Sandbox(n.clone());
        ids.push(
            store
                .apply_preset(&scope, "balanced", &preset, false)
                .unwrap(),
        );
        store
            .add(&scope, &[rule(Action::Allow, &format!("{n}.test"))], "user")
            .unwrap();
    }
    // One set of rules, the same ids for every sandbox; each sandbox sees them with its own.
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let all = store.all().unwrap();
    assert_eq!(all.len(), 2 + names.len());
    assert_eq!(
        hosts(&store.rules_for("s7").unwrap()),
        ["a.test", "b.test", "s7.test"]
    );
    assert!(
        store.rules_for("s7").unwrap()[..2]
            .iter()
            .all(|r| r.scope == Scope::Preset("balanced".into()))
    );
    // The same preset ending in an ask is other rules: a set of its own.
    let mut asking = preset.to_vec();
    asking.push(rule(Action::Ask, "**"));
    let other = store
        .apply_preset(&Scope::Sandbox("s0".into()), "balanced", &asking, true)
        .unwrap();
    assert_eq!(other.len(), 3);
    assert!(!other.contains(&ids[0][0]));
    let used = store.presets_in_use(Some("s0")).unwrap();
    assert_eq!(
        used.iter()
            .map(|p| (p.preset.as_str(), p.ask_unlisted))
            .collect::<Vec<_>>(),
        [("balanced", true)]
    );
    // A preset's rule is everyone's: it is not removed for one.
    let e = store.remove(ids[0][0]).unwrap_err().to_string();
    assert!(
        e.contains("preset balanced") && e.contains("paddock policy deny a.test"),
        "{e}"
    );
    // Nor are rules added to a preset.
    assert!(
        store
            .add(&Scope::Preset("balanced".into()), &preset, "user")
            .is_err()
    );
    // When the last sandbox that used a set stops using it, its rules go.
    store
        .apply_preset(&Scope::Sandbox("s0".into()), "strict", &[], false)
        .unwrap();
    assert!(
        store
            .all()
            .unwrap()
            .iter()
            .all(|r| r.rule.action != Action::Ask)
    );
    for n in &names[1..] {
        store
            .apply_preset(&Scope::Sandbox(n.clone()), "strict", &[], false)
            .unwrap();
    }
    assert_eq!(store.all().unwrap().len(), names.len());
    // Import does not add a rule a scope already has.
    let again = store
        .import(
            &[(
                Scope::Sandbox("s1".into()),
                vec![
                    rule(Action::Allow, "s1.test"),
                    rule(Action::Allow, "new.test"),
                ],
            )],
            false,
        )
        .unwrap();
    assert_eq!(again, 1);
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

/// Many processes apply presets and add rules at once (parallel `paddock run`s): each write
/// waits its turn. A transaction that read first and then wrote would fail at once with
/// "database is locked" when another wrote in between (seen under the suite's load), so every
/// writing transaction takes the write lock at its start.
#[test]
fn concurrent_writers_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    Store::open(&path).unwrap();
    let writers: Vec<_> = (0..6)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = Store::open(&path).unwrap();
                for i in 0..25 {
                    let scope = Scope::Sandbox(format!("t{t}"));
                    let preset = [
                        rule(Action::Allow, "shared.test"),
                        rule(Action::Allow, &format!("v{}.test", i % 3)),
                    ];
                    store.apply_preset(&scope, "p", &preset, false).unwrap();
                    store
                        .add(
                            &scope,
                            &[rule(Action::Allow, &format!("r{i}.test"))],
                            "user",
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.rules_for("t3").unwrap().len(), 2 + 25);
}
