//! The state store: one SQLite database holding the sandboxes, the network rules and presets,
//! and the audit log, under one schema.
//!
//! SQLite in WAL mode; every change is one transaction, so a crash leaves either the old or the
//! new rows, never half of a change (removing a sandbox takes its row, rules and preset at
//! once). The schema version lives in `PRAGMA user_version` and migrations run forward
//! automatically when a newer Paddock opens an older database.
//!
//! The egress proxy does not know this crate: its privileged side reads rules and writes audit
//! rows through the two small interfaces the proxy defines ([`paddock_proxy::rules::RuleRows`],
//! [`paddock_proxy::audit::AuditLog`]), which [`Store`] implements.
#![forbid(unsafe_code)]

mod answers;
mod asks;
mod audit;
mod events;
pub mod policyfile;
pub mod presets;
pub mod registries;
mod rules;
mod sandboxes;
mod schema;
#[cfg(test)]
mod test_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use answers::{Answered, Approval, Lasting, grant_rule};
pub use asks::{Answer, AskRow, AskSlot, Grant, NewAsk};
pub use audit::{AuditQuery, AuditRow, KEEP_DAYS, KEEP_ROWS};
pub use events::{EventQuery, KEEP_EVENTS, SandboxEvent};
use paddock_policy::SandboxName;
pub use rules::PresetInUse;
use rusqlite::Connection;
use rusqlite::config::DbConfig;

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
    /// a stored rule no longer parses
    #[error(transparent)]
    BadRule(#[from] paddock_proxy::rules::BadRule),
    /// no rule with that id
    #[error("no rule with id {0} (see `paddock policy ls`)")]
    NoRule(i64),
    /// no request with that id waits for an answer
    #[error(
        "no request {0} is waiting for an answer (it was answered, timed out, or its sandbox stopped; see `paddock policy pending`)"
    )]
    NoAsk(i64),
    /// an answer that does not fit its request (its words say why)
    #[error("{0}")]
    Invalid(String),
}

/// Pages the write-ahead log holds before it is checkpointed (see [`Store::open`]).
const WAL_PAGES: u32 = 128;

/// The state database: one connection to it.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = sql_err(path);
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // No checkpoint when the last connection closes: every paddock command would otherwise
        // end with two fsyncs (the log, the database) and begin the next write with a third (a
        // fresh log), tens of milliseconds each while the disk is busy; a proxy's writer would
        // pay them for the audit rows it wrote. The log is checkpointed once it holds
        // WAL_PAGES pages instead (a run writes 6-20); a commit is as safe either way. The
        // threshold is low because a command's first open reads the whole log back (about
        // 6 µs a page).
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
        schema::migrate(&mut store.conn, path)?;
        Ok(store)
    }

    /// The database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A transaction that writes. IMMEDIATE: it takes the write lock at its start, waiting
    /// for another writer as long as the busy timeout allows, instead of failing at once when
    /// a read inside it must become a write after another connection wrote
    /// (`SQLITE_BUSY_SNAPSHOT`, which no busy timeout waits out).
    pub(crate) fn write_tx(&self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
        sql_err(&self.path)
    }
}

/// Maps an SQLite error on the database at `path`.
fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    }
}
