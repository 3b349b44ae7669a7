//! The one schema of the state database and its forward migrations.
//!
//! Until schema version 3 the network tables (rules, presets, the audit log) kept their own
//! version in a `proxy_schema` table, migrated apart from the sandboxes; version 3 brings them,
//! at whatever version that table names, under `user_version` and drops it.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::{StoreError, sql_err};

/// One step forward.
enum Step {
    /// Plain SQL.
    Sql(&'static str),
    /// The network tables: created, or brought forward from the version their own
    /// `proxy_schema` row names, and that row's table dropped.
    NetTables,
    /// [`PRESET_SETS`], then each scope's copy of its preset's rules made one shared set.
    PresetSets,
}

/// Every step; schema version N is the first N applied.
const STEPS: &[Step] = &[
    // 1: sandboxes
    Step::Sql(
        "CREATE TABLE sandboxes (
        name TEXT PRIMARY KEY NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        supervisor_pid INTEGER,
        last_exit INTEGER
    ) STRICT;",
    ),
    // 2: why the last run stopped, when a limit was hit
    Step::Sql("ALTER TABLE sandboxes ADD COLUMN last_cause TEXT;"),
    // 3: rules, presets and the audit log, under this version
    Step::NetTables,
    // 4: the sandboxes' events, written by triggers in the transaction of each change, so that
    // no change is ever recorded without its event or the other way round
    Step::Sql(EVENTS),
    // 5: rules that ask, rules that last one run, and the requests waiting for the user
    Step::Sql(ASKS),
    // 6: a preset's rules kept once and referenced by the scopes that use it
    Step::PresetSets,
    // 7: the command line of the process that made a waiting request, where it is known
    Step::Sql("ALTER TABLE net_asks ADD COLUMN command TEXT;"),
];

/// [`STEPS`]' step 6: `net_preset_sets` holds each distinct set of preset rules once (its key:
/// the preset's name and its rules in words); a set's rules are `net_rules` rows with
/// `preset_set` (and no sandbox), and `net_presets.set_id` says which set a scope uses. A set
/// no scope uses is removed with its rules.
const PRESET_SETS: &str = r"
CREATE TABLE net_preset_sets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    preset TEXT NOT NULL,
    ask_unlisted INTEGER NOT NULL DEFAULT 0,
    key TEXT NOT NULL UNIQUE,
    made_at INTEGER NOT NULL
) STRICT;
ALTER TABLE net_rules ADD COLUMN preset_set INTEGER REFERENCES net_preset_sets (id) ON DELETE CASCADE;
CREATE INDEX net_rules_preset_set ON net_rules (preset_set);
ALTER TABLE net_presets ADD COLUMN set_id INTEGER REFERENCES net_preset_sets (id);
";

/// [`STEPS`]' step 4: the events table and the triggers that fill and prune it.
const EVENTS: &str = r"
CREATE TABLE sandbox_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    sandbox TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT,
    exit INTEGER,
    cause TEXT
) STRICT;
CREATE INDEX sandbox_events_sandbox ON sandbox_events (sandbox, id);
CREATE TRIGGER sandbox_created AFTER INSERT ON sandboxes BEGIN
    INSERT INTO sandbox_events (ts, sandbox, kind, state)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), NEW.name, 'created', NEW.state);
END;
CREATE TRIGGER sandbox_started AFTER UPDATE OF state, started_at ON sandboxes
WHEN NEW.state = 'running' BEGIN
    INSERT INTO sandbox_events (ts, sandbox, kind, state)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), NEW.name, 'started', 'running');
END;
CREATE TRIGGER sandbox_stopped AFTER UPDATE OF state ON sandboxes
WHEN NEW.state = 'stopped' AND OLD.state IS NOT 'stopped' BEGIN
    INSERT INTO sandbox_events (ts, sandbox, kind, state, exit, cause)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), NEW.name, 'stopped', 'stopped', NEW.last_exit, NEW.last_cause);
END;
CREATE TRIGGER sandbox_updated AFTER UPDATE OF spec ON sandboxes
WHEN NEW.spec IS NOT OLD.spec BEGIN
    INSERT INTO sandbox_events (ts, sandbox, kind, state)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), NEW.name, 'updated', NEW.state);
END;
CREATE TRIGGER sandbox_removed AFTER DELETE ON sandboxes BEGIN
    INSERT INTO sandbox_events (ts, sandbox, kind)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), OLD.name, 'removed');
END;
CREATE TRIGGER sandbox_events_pruned AFTER INSERT ON sandbox_events BEGIN
    DELETE FROM sandbox_events WHERE id <= NEW.id - 10000;
END;
";

/// [`STEPS`]' step 5. SQLite cannot change a CHECK constraint, so `net_rules` is made again
/// (same ids, the id counter kept) with `ask` allowed and `until_stop` (a rule an approval made
/// for one run, removed when that run ends); `net_asks` holds the requests a proxy holds for
/// the user's answer, which the user's commands write and the sandbox's supervisor reads.
const ASKS: &str = r"
CREATE TABLE net_rules_5 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox TEXT,
    action TEXT NOT NULL CHECK (action IN ('allow', 'deny', 'ask')),
    host TEXT NOT NULL,
    port TEXT NOT NULL,
    method TEXT,
    path TEXT,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    private_address INTEGER NOT NULL DEFAULT 0,
    until_stop INTEGER NOT NULL DEFAULT 0
);
INSERT INTO net_rules_5 (id, sandbox, action, host, port, method, path, source, created_at, private_address)
    SELECT id, sandbox, action, host, port, method, path, source, created_at, private_address FROM net_rules;
DELETE FROM sqlite_sequence WHERE name = 'net_rules_5';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'net_rules_5', seq FROM sqlite_sequence WHERE name = 'net_rules';
DROP TABLE net_rules;
ALTER TABLE net_rules_5 RENAME TO net_rules;
CREATE INDEX net_rules_sandbox ON net_rules (sandbox);
CREATE TRIGGER net_rules_ins AFTER INSERT ON net_rules BEGIN UPDATE net_rules_gen SET gen = gen + 1; END;
CREATE TRIGGER net_rules_del AFTER DELETE ON net_rules BEGIN UPDATE net_rules_gen SET gen = gen + 1; END;
CREATE TRIGGER net_rules_upd AFTER UPDATE ON net_rules BEGIN UPDATE net_rules_gen SET gen = gen + 1; END;
UPDATE net_rules_gen SET gen = gen + 1;
CREATE TABLE net_asks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('connect', 'http', 'https')),
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    method TEXT,
    path TEXT,
    rule INTEGER,
    waiting INTEGER NOT NULL DEFAULT 1,
    asked_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    answer TEXT CHECK (answer IN ('allow', 'deny')),
    answered_by TEXT,
    grant_rule INTEGER,
    answered_at INTEGER
) STRICT;
CREATE INDEX net_asks_sandbox ON net_asks (sandbox, id);
";

/// The newest schema version.
pub(crate) const VERSION: i64 = STEPS.len() as i64;

/// The network tables' own steps as `proxy_schema` counted them (version N is the first N).
/// Kept as they were: a database may hold any of these versions.
const NET_STEPS: &[&str] = &[
    r"
CREATE TABLE net_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox TEXT,
    action TEXT NOT NULL CHECK (action IN ('allow', 'deny')),
    host TEXT NOT NULL,
    port TEXT NOT NULL,
    method TEXT,
    path TEXT,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX net_rules_sandbox ON net_rules (sandbox);
CREATE TABLE net_rules_gen (gen INTEGER NOT NULL);
INSERT INTO net_rules_gen VALUES (0);
CREATE TRIGGER net_rules_ins AFTER INSERT ON net_rules BEGIN UPDATE net_rules_gen SET gen = gen + 1; END;
CREATE TRIGGER net_rules_del AFTER DELETE ON net_rules BEGIN UPDATE net_rules_gen SET gen = gen + 1; END;
CREATE TRIGGER net_rules_upd AFTER UPDATE ON net_rules BEGIN UPDATE net_rules_gen SET gen = gen + 1; END;
CREATE TABLE net_presets (
    scope TEXT PRIMARY KEY,
    preset TEXT NOT NULL,
    applied_at INTEGER NOT NULL
);
CREATE TABLE net_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    ts INTEGER NOT NULL,
    sandbox TEXT NOT NULL,
    client TEXT NOT NULL,
    method TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER,
    path TEXT,
    action TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    status INTEGER,
    bytes_up INTEGER NOT NULL DEFAULT 0,
    bytes_down INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER
);
CREATE INDEX net_audit_sandbox ON net_audit (sandbox, id);
",
    "CREATE INDEX net_audit_ts ON net_audit (ts);",
    "ALTER TABLE net_rules ADD COLUMN private_address INTEGER NOT NULL DEFAULT 0;",
];

/// Brings the database at `path` (open on `conn`) to [`VERSION`]; refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let err = sql_err(path);
    let found = user_version(conn).map_err(err)?;
    if found > VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known: VERSION,
        });
    }
    if found == VERSION {
        return Ok(());
    }
    // IMMEDIATE: two paddock processes opening an older database do not both migrate.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let current = user_version(&tx).map_err(err)?;
    for (i, step) in STEPS.iter().enumerate().skip(current as usize) {
        match step {
            Step::Sql(sql) => tx.execute_batch(sql).map_err(err)?,
            Step::NetTables => net_tables(&tx, path)?,
            Step::PresetSets => {
                tx.execute_batch(PRESET_SETS).map_err(err)?;
                crate::rules::share_preset_copies(&tx).map_err(err)?;
            }
        }
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// [`Step::NetTables`].
fn net_tables(tx: &Transaction<'_>, path: &Path) -> Result<(), StoreError> {
    let err = sql_err(path);
    let versioned: bool = tx
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'proxy_schema'",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    let found: i64 = if versioned {
        tx.query_row("SELECT version FROM proxy_schema", [], |r| r.get(0))
            .optional()
            .map_err(err)?
            .unwrap_or(0)
    } else {
        0
    };
    let steps = usize::try_from(found)
        .ok()
        .and_then(|found| NET_STEPS.get(found..))
        .ok_or_else(|| StoreError::TooNew {
            path: path.to_owned(),
            found,
            known: NET_STEPS.len() as i64,
        })?;
    for sql in steps {
        tx.execute_batch(sql).map_err(err)?;
    }
    tx.execute_batch("DROP TABLE IF EXISTS proxy_schema")
        .map_err(err)
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
