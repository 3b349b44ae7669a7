//! The sandboxes' events: created, started, stopped, updated, removed.
//!
//! Triggers on the `sandboxes` table write them (schema step 4), in the transaction of the
//! change itself, whichever process makes it: a command, the API server or a supervisor. The
//! newest [`KEEP_EVENTS`] are kept.

use rusqlite::params;
use serde::Serialize;

use crate::{Store, StoreError};

/// How many events are kept (the newest; the pruning trigger names the same number).
pub const KEEP_EVENTS: i64 = 10_000;

/// One change of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SandboxEvent {
    /// Event id (increasing).
    pub id: i64,
    /// When it happened (ms since the epoch).
    pub ts: i64,
    /// The sandbox.
    pub sandbox: String,
    /// `created`, `started`, `stopped`, `updated` (its settings: limits, ports) or `removed`.
    pub kind: String,
    /// Its state after the change (none once removed).
    pub state: Option<String>,
    /// With `stopped`: its command's exit status, when known.
    pub exit: Option<i64>,
    /// With `stopped`: the limits it ran into, or why it stopped when no status is known.
    pub cause: Option<String>,
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only this sandbox's.
    pub sandbox: Option<String>,
    /// Only those after this id.
    pub after: Option<i64>,
    /// At most this many (the newest).
    pub limit: Option<u32>,
}

impl Store {
    /// Reads events, oldest first.
    pub fn events(&self, q: &EventQuery) -> Result<Vec<SandboxEvent>, StoreError> {
        events(&self.conn, q).map_err(self.err())
    }
}

fn events(db: &rusqlite::Connection, q: &EventQuery) -> rusqlite::Result<Vec<SandboxEvent>> {
    let mut st = db.prepare_cached(
        "SELECT * FROM (
           SELECT id, ts, sandbox, kind, state, exit, cause FROM sandbox_events
           WHERE (?1 IS NULL OR sandbox = ?1) AND id > ?2
           ORDER BY id DESC LIMIT ?3
         ) ORDER BY id",
    )?;
    let rows = st.query_map(
        params![
            q.sandbox,
            q.after.unwrap_or(0),
            q.limit.map(i64::from).unwrap_or(-1)
        ],
        |r| {
            Ok(SandboxEvent {
                id: r.get(0)?,
                ts: r.get(1)?,
                sandbox: r.get(2)?,
                kind: r.get(3)?,
                state: r.get(4)?,
                exit: r.get(5)?,
                cause: r.get(6)?,
            })
        },
    )?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use paddock_policy::SandboxName;

    use super::*;

    fn kinds(store: &Store, q: &EventQuery) -> Vec<(String, String, Option<i64>)> {
        store
            .events(q)
            .unwrap()
            .into_iter()
            .map(|e| (e.sandbox, e.kind, e.exit))
            .collect()
    }

    #[test]
    fn every_change_is_an_event_in_its_own_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let spec = crate::test_support::spec("box");
        let name: SandboxName = "box".parse().unwrap();
        store.insert(&spec).unwrap();
        store.mark_running(&name, 42).unwrap();
        // A supervisor's error paths may record the stop more than once: one event.
        store
            .mark_stopped(&name, Some(3), Some("memory limit"))
            .unwrap();
        store
            .mark_stopped(&name, Some(3), Some("memory limit"))
            .unwrap();
        let mut changed = spec.clone();
        changed.limits.pids = Some(7);
        store.update_spec(&changed).unwrap();
        // The same settings again change nothing.
        store.update_spec(&changed).unwrap();
        store.insert(&crate::test_support::spec("other")).unwrap();
        store.remove_sandbox(&name).unwrap();
        let all = kinds(&store, &EventQuery::default());
        let want = |s: &str, k: &str, e: Option<i64>| (s.to_owned(), k.to_owned(), e);
        assert_eq!(
            all,
            [
                want("box", "created", None),
                want("box", "started", None),
                want("box", "stopped", Some(3)),
                want("box", "updated", None),
                want("other", "created", None),
                want("box", "removed", None),
            ]
        );
        let events = store.events(&EventQuery::default()).unwrap();
        assert!(events.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(events[2].cause.as_deref(), Some("memory limit"));
        assert_eq!(events[1].state.as_deref(), Some("running"));
        assert!(events[0].ts > 1_600_000_000_000, "{events:?}");
        // A failed insert (the name is taken) writes no event.
        assert!(store.insert(&crate::test_support::spec("other")).is_err());
        assert_eq!(store.events(&EventQuery::default()).unwrap().len(), 6);
        // Filters: one sandbox, after an id, the newest few.
        let q = EventQuery {
            sandbox: Some("other".into()),
            ..EventQuery::default()
        };
        assert_eq!(kinds(&store, &q), [want("other", "created", None)]);
        let q = EventQuery {
            after: Some(events[3].id),
            limit: Some(1),
            ..EventQuery::default()
        };
        assert_eq!(kinds(&store, &q), [want("box", "removed", None)]);
    }

    #[test]
    fn only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let mut spec = crate::test_support::spec("box");
        store.insert(&spec).unwrap();
        let tx = store.conn.unchecked_transaction().unwrap();
        for i in 0..KEEP_EVENTS + 5 {
            spec.limits.pids = Some(i as u32 + 1);
            store.update_spec(&spec).unwrap();
        }
        tx.commit().unwrap();
        let all = store.events(&EventQuery::default()).unwrap();
        assert_eq!(all.len() as i64, KEEP_EVENTS);
        assert_eq!(all.last().unwrap().id, KEEP_EVENTS + 6);
    }
}
