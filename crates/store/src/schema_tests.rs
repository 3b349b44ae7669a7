#![allow(clippy::unwrap_used)]

use paddock_policy::net::{Action, Rule, Scope};
use paddock_proxy::rules::RuleRows;

use super::*;
use crate::test_support::spec;
use crate::{AuditQuery, Store};

/// Makes the layout the code before schema version 3 left: the sandboxes at `user_version`
/// `core`, the network tables at `proxy_schema` version `net` (0: never opened), each with a
/// row of the tables its version has.
fn old_layout(path: &Path, core: usize, net: usize) {
    let db = Connection::open(path).unwrap();
    for step in &STEPS[..core] {
        let Step::Sql(sql) = step else {
            panic!("not a step of the old sandboxes' schema")
        };
        db.execute_batch(sql).unwrap();
    }
    db.pragma_update(None, "user_version", core as i64).unwrap();
    if core >= 1 {
        db.execute(
            "INSERT INTO sandboxes (name, spec, state, created_at) VALUES ('old', ?1, 'stopped', 7)",
            [serde_json::to_string(&spec("old")).unwrap()],
        )
        .unwrap();
    }
    if net == 0 {
        return;
    }
    db.execute_batch("CREATE TABLE proxy_schema (version INTEGER NOT NULL)")
        .unwrap();
    for sql in &NET_STEPS[..net] {
        db.execute_batch(sql).unwrap();
    }
    db.execute("INSERT INTO proxy_schema VALUES (?1)", [net as i64])
        .unwrap();
    db.execute_batch(
        "INSERT INTO net_rules (sandbox, action, host, port, source, created_at)
             VALUES ('old', 'allow', 'old.test', 'default', 'user', 1);
         INSERT INTO net_rules (sandbox, action, host, port, source, created_at)
             VALUES (NULL, 'deny', 'global.test', '443', 'user', 2);
         INSERT INTO net_presets (scope, preset, applied_at) VALUES ('old', 'balanced', 3);
         INSERT INTO net_audit (key, ts, sandbox, client, method, host, action, rule, reason)
             VALUES ('k', 4, 'old', 'c', 'CONNECT', 'old.test', 'allow', '1', 'r');",
    )
    .unwrap();
}

fn tables(path: &Path) -> Vec<String> {
    let db = Connection::open(path).unwrap();
    let mut st = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn an_older_database_keeps_its_rows_under_one_version() {
    let name = "old".parse().unwrap();
    let old = Scope::Sandbox("old".into());
    for core in 0..=2 {
        for net in 0..=NET_STEPS.len() {
            let case = format!("sandboxes at {core}, network tables at {net}");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.db");
            old_layout(&path, core, net);
            let store = Store::open(&path).unwrap();
            assert_eq!(user_version(&store.conn).unwrap(), VERSION, "{case}");
            assert!(!tables(&path).contains(&"proxy_schema".into()), "{case}");
            let sandbox = store.get(&name).unwrap();
            assert_eq!(
                sandbox.map(|r| (r.spec.name.to_string(), r.created_at, r.last_cause)),
                (core >= 1).then(|| ("old".into(), 7, None)),
                "{case}"
            );
            let rules: Vec<_> = store
                .rules_for("old")
                .unwrap()
                .into_iter()
                .map(|r| (r.scope, r.rule.host.to_string(), r.rule.private_address))
                .collect();
            let preset = store.preset_of(&old).unwrap();
            let audit = store.audit_rows(&AuditQuery::default()).unwrap();
            if net == 0 {
                assert_eq!((rules.len(), preset, audit.len()), (0, None, 0), "{case}");
            } else {
                assert_eq!(
                    rules,
                    [
                        (old.clone(), "old.test".into(), false),
                        (Scope::Global, "global.test".into(), false),
                    ],
                    "{case}"
                );
                assert_eq!(preset.as_deref(), Some("balanced"), "{case}");
                assert_eq!(audit.len(), 1, "{case}");
                assert_eq!(audit[0].host, "old.test", "{case}");
            }
            // Every table of the newest schema works, and the generation still moves; the
            // rules made again for `ask` keep counting ids after the old ones.
            let before: i64 = store
                .conn
                .query_row("SELECT coalesce(max(id), 0) FROM net_rules", [], |r| {
                    r.get(0)
                })
                .unwrap();
            let asked = store
                .add(
                    &old,
                    &[Rule::parse_target(Action::Ask, "**").unwrap()],
                    "user",
                )
                .unwrap();
            assert!(asked[0] > before, "{case}");
            let generation = store.generation().unwrap();
            let mut rule = Rule::parse_target(Action::Allow, "10.0.0.1").unwrap();
            rule.private_address = true;
            store.add(&old, &[rule], "user").unwrap();
            assert!(store.generation().unwrap() > generation, "{case}");
            assert!(
                store
                    .rules_for("old")
                    .unwrap()
                    .iter()
                    .any(|r| r.rule.private_address)
            );
            store.insert(&spec("new")).unwrap();
            store
                .mark_stopped(&"new".parse().unwrap(), Some(1), Some("pids limit"))
                .unwrap();
            drop(store);
            // Opened again: nothing left to do.
            Store::open(&path).unwrap();
        }
    }
}

#[test]
fn a_fresh_database_has_every_table_and_the_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(user_version(&store.conn).unwrap(), VERSION);
    assert_eq!(
        tables(&path),
        [
            "net_asks",
            "net_audit",
            "net_preset_sets",
            "net_presets",
            "net_rules",
            "net_rules_gen",
            "sandbox_events",
            "sandboxes",
            "sqlite_sequence"
        ]
    );
}

#[test]
fn a_newer_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    store.conn.pragma_update(None, "user_version", 99).unwrap();
    drop(store);
    let e = Store::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::TooNew {
                found: 99,
                known: VERSION,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn a_version_4_database_gains_ask_rules_and_keeps_its_rule_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut db = Connection::open(&path).unwrap();
        let tx = db.transaction().unwrap();
        for step in &STEPS[..4] {
            match step {
                Step::Sql(sql) => tx.execute_batch(sql).unwrap(),
                Step::NetTables => net_tables(&tx, &path).unwrap(),
                Step::PresetSets => panic!("step 6 in the first four"),
            }
        }
        tx.pragma_update(None, "user_version", 4).unwrap();
        tx.execute_batch(
            "INSERT INTO net_rules (sandbox, action, host, port, source, created_at, private_address)
                 VALUES ('old', 'allow', 'one.test', 'default', 'user', 1, 1);
             INSERT INTO net_rules (sandbox, action, host, port, source, created_at)
                 VALUES (NULL, 'deny', 'two.test', '443', 'user', 2);
             INSERT INTO net_rules (sandbox, action, host, port, source, created_at)
                 VALUES (NULL, 'allow', 'three.test', 'default', 'user', 3);
             DELETE FROM net_rules WHERE host = 'three.test';",
        )
        .unwrap();
        // The old table refuses what the new one takes.
        assert!(
            tx.execute_batch(
                "INSERT INTO net_rules (sandbox, action, host, port, source, created_at)
                 VALUES (NULL, 'ask', 'x.test', 'default', 'user', 4)"
            )
            .is_err()
        );
        tx.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(user_version(&store.conn).unwrap(), VERSION);
    let rules: Vec<_> = store
        .all()
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.id,
                r.rule.action,
                r.rule.host.to_string(),
                r.rule.private_address,
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            (1, Action::Allow, "one.test".into(), true),
            (2, Action::Deny, "two.test".into(), false),
        ]
    );
    // A removed rule's id is not given again.
    let ids = store
        .add(
            &Scope::Global,
            &[Rule::parse_target(Action::Ask, "x.test").unwrap()],
            "user",
        )
        .unwrap();
    assert_eq!(ids, [4]);
}

#[test]
fn copies_of_a_preset_become_one_shared_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // A database at version 5, as the paddock before shared presets left it: each scope with
    // its own copy of its preset's rules.
    {
        let mut db = Connection::open(&path).unwrap();
        let tx = db.transaction().unwrap();
        for step in &STEPS[..5] {
            match step {
                Step::Sql(sql) => tx.execute_batch(sql).unwrap(),
                Step::NetTables => net_tables(&tx, &path).unwrap(),
                Step::PresetSets => panic!("step 6 in the first five"),
            }
        }
        tx.pragma_update(None, "user_version", 5).unwrap();
        let copy = |scope: Option<&str>, hosts: &[&str]| {
            for h in hosts {
                tx.execute(
                    "INSERT INTO net_rules (sandbox, action, host, port, source, created_at)
                     VALUES (?1, 'allow', ?2, 'default', 'preset:balanced', 1)",
                    rusqlite::params![scope, h],
                )
                .unwrap();
            }
            tx.execute(
                "INSERT INTO net_presets (scope, preset, applied_at) VALUES (?1, 'balanced', 1)",
                [scope.unwrap_or("")],
            )
            .unwrap();
        };
        copy(Some("a"), &["x.test", "y.test"]);
        copy(Some("b"), &["x.test", "y.test"]);
        copy(Some("c"), &["x.test"]);
        copy(None, &["x.test", "y.test"]);
        tx.execute(
            "INSERT INTO net_rules (sandbox, action, host, port, source, created_at)
             VALUES ('a', 'deny', 'own.test', 'default', 'user', 1)",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    let all = store.all().unwrap();
    let words: Vec<(i64, String, String)> = all
        .iter()
        .map(|r| (r.id, r.scope.to_string(), r.rule.host.to_string()))
        .collect();
    // The copy for every sandbox (the first scope) is kept (ids 6, 7) and shared with a and
    // b; c's differs and stays its own.
    assert_eq!(
        words,
        [
            (5, "preset balanced".into(), "x.test".into()),
            (6, "preset balanced".into(), "x.test".into()),
            (7, "preset balanced".into(), "y.test".into()),
            (8, "a".into(), "own.test".into()),
        ]
    );
    assert_eq!(
        store
            .rules_for("b")
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [6, 7]
    );
    // c sees its own set and the one for every sandbox.
    assert_eq!(
        store
            .rules_for("c")
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [5, 6, 7]
    );
    assert_eq!(store.presets_in_use(None).unwrap().len(), 4);
}
