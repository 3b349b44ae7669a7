//! The state database: sandboxes and their settings (later: rules and the audit log).
//!
//! SQLite in WAL mode; every change is one transaction, so a crash leaves either the old or the
//! new row, never half of one. The schema version lives in `PRAGMA user_version` and migrations
//! run forward automatically when a newer Paddock opens an older database.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paddock_policy::SandboxName;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::spec::SandboxSpec;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// the database could not be opened or queried
    #[error("state database {path:?}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// the database was written by a newer Paddock
    #[error(
        "state database {path:?} has schema version {found}, newer than this paddock understands ({known}); upgrade paddock"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version found.
        found: i64,
        /// Newest version known here.
        known: i64,
    },
    /// a stored spec does not parse
    #[error("stored settings of sandbox {name} are unreadable")]
    BadSpec {
        /// The sandbox.
        name: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// a sandbox of that name exists
    #[error("a sandbox named {0} already exists")]
    Exists(SandboxName),
    /// no sandbox of that name
    #[error("no sandbox named {0}")]
    NotFound(SandboxName),
}

/// Lifecycle state as recorded. A `Running` record whose supervisor is gone is reported as
/// stopped by the caller that checks the sandbox lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Created, never started.
    Created,
    /// A supervisor is running it.
    Running,
    /// Not running.
    Stopped,
}

impl SandboxState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Created => "created",
            SandboxState::Running => "running",
            SandboxState::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> SandboxState {
        match s {
            "created" => SandboxState::Created,
            "running" => SandboxState::Running,
            _ => SandboxState::Stopped,
        }
    }
}

/// One sandbox as stored.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxRecord {
    /// Settings.
    pub spec: SandboxSpec,
    /// Recorded state.
    pub state: SandboxState,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Last start (Unix seconds).
    pub started_at: Option<i64>,
    /// Supervisor pid while running.
    pub supervisor_pid: Option<i64>,
    /// Exit status of the last command.
    pub last_exit: Option<i64>,
    /// The limits the last run ran into (memory, processes), if any.
    pub last_cause: Option<String>,
}

const MIGRATIONS: &[&str] = &[
    // 1: sandboxes
    "CREATE TABLE sandboxes (
        name TEXT PRIMARY KEY NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        supervisor_pid INTEGER,
        last_exit INTEGER
    ) STRICT;",
    // 2: why the last run stopped, when a limit was hit
    "ALTER TABLE sandboxes ADD COLUMN last_cause TEXT;",
];

/// Pages the state database's write-ahead log holds before it is checkpointed (see
/// [`Store::open`]); paddock-proxy's connection uses the same figure.
const WAL_PAGES: u32 = 128;

/// The state database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // No checkpoint when the last connection closes: every paddock command would otherwise
        // end with two fsyncs (the log, the database) and begin the next write with a third (a
        // fresh log), tens of milliseconds each while the disk is busy. The log is checkpointed
        // once it holds WAL_PAGES pages instead (a run writes 6-20); a commit is as safe either
        // way. The threshold is low because a command's first open reads the whole log back
        // (about 6 µs a page).
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(err)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_PAGES)
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let known = MIGRATIONS.len() as i64;
        let found: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if found > known {
            return Err(StoreError::TooNew { path, found, known });
        }
        if found == known {
            return Ok(());
        }
        // IMMEDIATE: two paddock processes opening a fresh database do not both migrate.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let current: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Adds a new sandbox in state `created`.
    pub fn insert(&self, spec: &SandboxSpec) -> Result<(), StoreError> {
        let json = serde_json::to_string(spec).unwrap_or_default();
        let r = self.conn.execute(
            "INSERT INTO sandboxes (name, spec, state, created_at) VALUES (?1, ?2, 'created', ?3)",
            params![spec.name.as_str(), json, now()],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Exists(spec.name.clone()))
            }
            Err(e) => Err(self.err()(e)),
        }
    }

    /// Replaces a sandbox's settings.
    pub fn update_spec(&self, spec: &SandboxSpec) -> Result<(), StoreError> {
        let json = serde_json::to_string(spec).unwrap_or_default();
        let n = self
            .conn
            .execute(
                "UPDATE sandboxes SET spec = ?2 WHERE name = ?1",
                params![spec.name.as_str(), json],
            )
            .map_err(self.err())?;
        if n == 0 {
            Err(StoreError::NotFound(spec.name.clone()))
        } else {
            Ok(())
        }
    }

    /// Records that a supervisor started the sandbox.
    pub fn mark_running(&self, name: &SandboxName, supervisor_pid: u32) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE sandboxes SET state = 'running', started_at = ?2, supervisor_pid = ?3 WHERE name = ?1",
                params![name.as_str(), now(), supervisor_pid],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records that the sandbox stopped, with the command's exit status if known and the limits
    /// it ran into.
    pub fn mark_stopped(
        &self,
        name: &SandboxName,
        exit: Option<i32>,
        cause: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE sandboxes SET state = 'stopped', supervisor_pid = NULL, last_exit = ?2, last_cause = ?3 WHERE name = ?1",
                params![name.as_str(), exit, cause],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Looks a sandbox up.
    pub fn get(&self, name: &SandboxName) -> Result<Option<SandboxRecord>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT spec, state, created_at, started_at, supervisor_pid, last_exit, last_cause FROM sandboxes WHERE name = ?1",
                params![name.as_str()],
                row_tuple,
            )
            .optional()
            .map_err(self.err())?;
        row.map(|t| record(name.as_str(), t)).transpose()
    }

    /// All sandboxes, by name.
    pub fn list(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT spec, state, created_at, started_at, supervisor_pid, last_exit, last_cause, name FROM sandboxes ORDER BY name",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((row_tuple(r)?, r.get::<_, String>(7)?)))
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (t, name) = row.map_err(self.err())?;
            out.push(record(&name, t)?);
        }
        Ok(out)
    }

    /// The connection, for the state database's other tables (the egress proxy's rules).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes a sandbox's record.
    pub fn delete(&self, name: &SandboxName) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM sandboxes WHERE name = ?1",
                params![name.as_str()],
            )
            .map_err(self.err())?;
        if n == 0 {
            Err(StoreError::NotFound(name.clone()))
        } else {
            Ok(())
        }
    }
}

type Row = (
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

fn row_tuple(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn record(name: &str, t: Row) -> Result<SandboxRecord, StoreError> {
    let (spec, state, created_at, started_at, supervisor_pid, last_exit, last_cause) = t;
    let spec: SandboxSpec = serde_json::from_str(&spec).map_err(|source| StoreError::BadSpec {
        name: name.to_owned(),
        source,
    })?;
    Ok(SandboxRecord {
        spec,
        state: SandboxState::parse(&state),
        created_at,
        started_at,
        supervisor_pid,
        last_exit,
        last_cause,
    })
}

#[cfg(test)]
mod tests {
    use paddock_policy::{AbsPath, Limits, User};

    use super::*;

    fn spec(name: &str) -> SandboxSpec {
        SandboxSpec {
            name: name.parse().unwrap(),
            backend: "ns".into(),
            image: "default".into(),
            workspace: AbsPath::try_from("/w/p").unwrap(),
            mounts: vec![],
            limits: Limits::default(),
            env: vec![],
            user: User::Agent,
            no_new_privs: false,
            network: crate::spec::Network::Proxy,
            allow_git_config: false,
            ports: vec![],
            dangerously_mount_sockets: false,
            host_ca: true,
            upstream_proxy: None,
            review: false,
            discard_layer: false,
        }
    }

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
        store.delete(&a).unwrap();
        assert!(store.get(&a).unwrap().is_none());
        drop(store);
        // Reopening a migrated database is a no-op; a newer schema is refused.
        let store = Store::open(&db).unwrap();
        store.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(store);
        assert!(matches!(
            Store::open(&db),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
