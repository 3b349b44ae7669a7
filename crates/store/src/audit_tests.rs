#![allow(clippy::unwrap_used)]

use paddock_proxy::audit::{Finish, Record};

use super::*;

fn record(sandbox: &str, action: &'static str) -> Record {
    Record {
        sandbox: sandbox.into(),
        client: "c".into(),
        method: "GET".into(),
        host: "h.test".into(),
        port: Some(80),
        path: Some("/".into()),
        action,
        rule: "default".into(),
        reason: "r".into(),
        status: Some(200),
    }
}

#[test]
fn decisions_and_their_ends_are_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let (a, b) = (record("a", "allow"), record("b", "deny"));
    let end = Finish {
        bytes_up: 3,
        bytes_down: 4,
        duration_ms: 5,
        status: Some(502),
    };
    store
        .write(&[
            AuditChange::Decision {
                key: "1",
                ts: 10,
                record: &a,
                end: Some(&end),
            },
            AuditChange::Decision {
                key: "2",
                ts: 11,
                record: &b,
                end: None,
            },
        ])
        .unwrap();
    store
        .write(&[AuditChange::End {
            key: "2",
            finish: &Finish {
                status: None,
                ..end
            },
        }])
        .unwrap();
    let rows = store.audit_rows(&AuditQuery::default()).unwrap();
    let summary: Vec<_> = rows
        .iter()
        .map(|r| (r.sandbox.as_str(), r.status, r.bytes_down, r.duration_ms))
        .collect();
    assert_eq!(
        summary,
        [("a", Some(502), 4, Some(5)), ("b", Some(200), 4, Some(5))]
    );
    let denied = store
        .audit_rows(&AuditQuery {
            denied: true,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].sandbox, "b");
    let after = store
        .audit_rows(&AuditQuery {
            after: Some(rows[0].id),
            limit: Some(5),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(after, rows[1..]);
}

#[test]
fn prune_drops_old_and_surplus_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let now = 100 * 24 * 3600 * 1000;
    for (i, ts) in [(1, 0), (2, now - 1), (3, now)] {
        store
            .conn
            .execute(
                "INSERT INTO net_audit (id, key, ts, sandbox, client, method, host, action, rule, reason)
                 VALUES (?1, ?1, ?2, 's', 'c', 'GET', 'h', 'deny', 'default', 'r')",
                [i, ts],
            )
            .unwrap();
    }
    assert_eq!(store.prune(now).unwrap(), 1);
    store
        .conn
        .execute(
            "UPDATE net_audit SET id = id + ?1 WHERE id = 3",
            [KEEP_ROWS],
        )
        .unwrap();
    assert_eq!(store.prune(now).unwrap(), 1);
    let left: Vec<i64> = store
        .audit_rows(&AuditQuery::default())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![3 + KEEP_ROWS]);
}
