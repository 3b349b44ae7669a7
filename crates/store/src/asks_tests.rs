#![allow(clippy::unwrap_used)]

use paddock_policy::net::{Action, Rule, Scope};

use super::*;
use crate::test_support::spec;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    (dir, store)
}

fn connect<'a>(sandbox: &'a str, host: &'a str) -> NewAsk<'a> {
    NewAsk {
        sandbox,
        kind: "connect",
        host,
        port: 443,
        method: None,
        path: None,
        rule: Some(1),
        expires_at: now_ms() + 60_000,
    }
}

#[test]
fn identical_requests_share_a_row_and_distinct_ones_are_bounded() {
    let (_d, store) = store();
    let AskSlot::New(a) = store.ask(&connect("s", "a.test"), 2).unwrap() else {
        panic!("not new");
    };
    assert_eq!(
        store.ask(&connect("s", "a.test"), 2).unwrap(),
        AskSlot::Joined(a)
    );
    // the same host over plain HTTP, or a path, is another request
    let plain = NewAsk {
        kind: "http",
        port: 80,
        method: Some("GET"),
        path: Some("/x"),
        ..connect("s", "a.test")
    };
    let AskSlot::New(b) = store.ask(&plain, 2).unwrap() else {
        panic!("not new");
    };
    assert_ne!(a, b);
    // the limit counts distinct requests of one sandbox; another sandbox has its own
    assert_eq!(
        store.ask(&connect("s", "c.test"), 2).unwrap(),
        AskSlot::Full
    );
    assert!(matches!(
        store.ask(&connect("t", "c.test"), 2).unwrap(),
        AskSlot::New(_)
    ));
    // joining is not bounded by the limit
    assert_eq!(
        store.ask(&connect("s", "a.test"), 2).unwrap(),
        AskSlot::Joined(a)
    );
    let rows = store.pending(Some("s")).unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.id, r.host.as_str(), r.kind.as_str(), r.waiting))
            .collect::<Vec<_>>(),
        [(a, "a.test", "connect", 3), (b, "a.test", "http", 1)]
    );
    assert_eq!(store.pending(None).unwrap().len(), 3);
}

#[test]
fn an_answer_reaches_its_sandbox_once_and_a_grant_is_made_with_it() {
    let (_d, store) = store();
    store.insert(&spec("s")).unwrap();
    let AskSlot::New(a) = store.ask(&connect("s", "a.test"), 64).unwrap() else {
        panic!()
    };
    let AskSlot::New(b) = store.ask(&connect("s", "b.test"), 64).unwrap() else {
        panic!()
    };
    let scope = Scope::Sandbox("s".into());
    let rule = Rule::parse_target(Action::Allow, "a.test").unwrap();
    let generation = {
        use paddock_proxy::rules::RuleRows;
        store.generation().unwrap()
    };
    let made = store
        .answer(
            a,
            true,
            "the user (for this run)",
            Some(&Grant {
                scope: &scope,
                rule: &rule,
                source: "approved",
                until_stop: true,
            }),
        )
        .unwrap();
    assert!(made.is_some());
    assert!({
        use paddock_proxy::rules::RuleRows;
        store.generation().unwrap() > generation
    });
    assert_eq!(store.answer(b, false, "the user", None).unwrap(), None);
    // answered requests are no longer pending, and a second answer is refused, adding nothing
    assert!(store.pending(Some("s")).unwrap().is_empty());
    let rules = store.rules_for("s").unwrap().len();
    assert!(matches!(
        store.answer(a, true, "the user", Some(&Grant {
            scope: &scope,
            rule: &rule,
            source: "approved",
            until_stop: false,
        })),
        Err(StoreError::NoAsk(id)) if id == a
    ));
    assert_eq!(store.rules_for("s").unwrap().len(), rules);
    // the supervisor reads each answer once; another sandbox's are not its
    assert!(store.take_answers("t").unwrap().is_empty());
    assert_eq!(
        store.take_answers("s").unwrap(),
        [
            Answer {
                id: a,
                allow: true,
                by: "the user (for this run)".into(),
                rule: made,
            },
            Answer {
                id: b,
                allow: false,
                by: "the user".into(),
                rule: None,
            }
        ]
    );
    assert!(store.take_answers("s").unwrap().is_empty());
    // the run's end takes the rules approved for it, and leaves the others
    let kept = store
        .add(
            &scope,
            &[Rule::parse_target(Action::Allow, "k.test").unwrap()],
            "user",
        )
        .unwrap();
    store.end_run("s").unwrap();
    assert_eq!(
        store
            .rules_for("s")
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        kept
    );
}

#[test]
fn a_timeout_and_an_answer_cannot_both_win() {
    let (_d, store) = store();
    let AskSlot::New(a) = store.ask(&connect("s", "a.test"), 64).unwrap() else {
        panic!()
    };
    let AskSlot::New(b) = store.ask(&connect("s", "b.test"), 64).unwrap() else {
        panic!()
    };
    store.answer(a, true, "the user", None).unwrap();
    // answered first: the timeout does not take it, the answer is delivered
    assert!(!store.expire_ask(a).unwrap());
    assert!(store.expire_ask(b).unwrap());
    // timed out first: the answer is refused
    assert!(matches!(
        store.answer(b, true, "the user", None),
        Err(StoreError::NoAsk(_))
    ));
    assert_eq!(store.take_answers("s").unwrap().len(), 1);
}

#[test]
fn removing_a_sandbox_forgets_its_requests() {
    let (_d, store) = store();
    store.insert(&spec("s")).unwrap();
    store.ask(&connect("s", "a.test"), 64).unwrap();
    store.remove_sandbox(&"s".parse().unwrap()).unwrap();
    assert!(store.pending(None).unwrap().is_empty());
}
