//! Rules and the audit log in the state database.
//!
//! The proxy's tables live in the same SQLite file as the sandboxes (WAL mode, one transaction
//! per change) with their own schema version row, so the core and the proxy migrate
//! independently. A generation counter bumped by triggers lets a running proxy notice rule
//! changes with one cheap query per request.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paddock_policy::net::{
    Action, HostPattern, PathGlob, PortSpec, Rule, Scope, StoredRule, parse_method,
};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Why the policy store failed.
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
    /// the proxy tables were written by a newer Paddock
    #[error(
        "network tables in {path:?} have schema version {found}, newer than this paddock understands ({known}); upgrade paddock"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Found.
        found: i64,
        /// Known.
        known: i64,
    },
    /// a stored rule no longer parses
    #[error("stored rule {id} is unreadable: {reason}")]
    BadRule {
        /// Rule id.
        id: i64,
        /// Why.
        reason: String,
    },
    /// no rule with that id
    #[error("no rule with id {0} (see `paddock policy ls`)")]
    NoRule(i64),
}

const SCHEMA: i64 = 3;
const MIGRATIONS: &[&str] = &[
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

/// Maps an SQLite error on the database at `path`.
fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens `path` with the settings every user of the proxy tables needs, migrating forward.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let err = sql_err(path);
    let db = Connection::open(path).map_err(err)?;
    db.busy_timeout(Duration::from_secs(10)).map_err(err)?;
    db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    db.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    // As for the state database's own connection (paddock-core's store, whose WAL_PAGES this
    // repeats: the crates do not depend on each other): no checkpoint on close, so a command
    // pays no fsync for the audit rows it wrote, and a short log.
    db.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(err)?;
    db.pragma_update(None, "wal_autocheckpoint", 128)
        .map_err(err)?;
    migrate(&db, path)?;
    Ok(db)
}

/// Creates or migrates the proxy's tables forward on `db` (the state database at `path`).
fn migrate(db: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = sql_err(path);
    let tx = db.unchecked_transaction().map_err(err)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS proxy_schema (version INTEGER NOT NULL)")
        .map_err(err)?;
    let found: i64 = tx
        .query_row("SELECT version FROM proxy_schema", [], |r| r.get(0))
        .optional()
        .map_err(err)?
        .unwrap_or(0);
    if found > SCHEMA {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known: SCHEMA,
        });
    }
    for m in &MIGRATIONS[found as usize..] {
        tx.execute_batch(m).map_err(err)?;
    }
    if found < SCHEMA {
        tx.execute("DELETE FROM proxy_schema", []).map_err(err)?;
        tx.execute("INSERT INTO proxy_schema VALUES (?1)", [SCHEMA])
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// Removes the rules and presets of sandbox `name` through `db`, another connection to the
/// state database at `path` (the state store's, when a sandbox is removed: a second
/// connection would cost its own open and schema parse on every `--rm` run).
pub fn remove_sandbox_rules(db: &Connection, path: &Path, name: &str) -> Result<(), StoreError> {
    migrate(db, path)?;
    let err = sql_err(path);
    let tx = db.unchecked_transaction().map_err(err)?;
    tx.execute("DELETE FROM net_rules WHERE sandbox = ?1", [name])
        .map_err(err)?;
    tx.execute("DELETE FROM net_presets WHERE scope = ?1", [name])
        .map_err(err)?;
    tx.commit().map_err(err)
}

/// The rules and presets of the state database.
#[derive(Debug)]
pub struct PolicyStore {
    db: Connection,
    path: PathBuf,
}

fn scope_value(scope: &Scope) -> Option<&str> {
    match scope {
        Scope::Global => None,
        Scope::Sandbox(n) => Some(n),
    }
}

fn scope_key(scope: &Scope) -> String {
    match scope {
        Scope::Global => String::new(),
        Scope::Sandbox(n) => n.clone(),
    }
}

impl PolicyStore {
    /// Opens (and migrates) the state database at `path`.
    pub fn open(path: &Path) -> Result<PolicyStore, StoreError> {
        Ok(PolicyStore {
            db: open(path)?,
            path: path.to_owned(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        sql_err(&self.path)
    }

    /// Adds rules in one transaction; returns their ids.
    pub fn add(
        &mut self,
        scope: &Scope,
        rules: &[Rule],
        source: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.db.transaction().map_err(err)?;
        let ids = insert_rules(&tx, scope, rules, source).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    /// Removes one rule.
    pub fn remove(&mut self, id: i64) -> Result<StoredRule, StoreError> {
        let rule = self
            .all()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(StoreError::NoRule(id))?;
        self.db
            .execute("DELETE FROM net_rules WHERE id = ?1", [id])
            .map_err(self.err())?;
        Ok(rule)
    }

    /// Replaces the preset rules of `scope` with `rules` from preset `name`, in one transaction.
    pub fn apply_preset(
        &mut self,
        scope: &Scope,
        name: &str,
        rules: &[Rule],
    ) -> Result<Vec<i64>, StoreError> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.db.transaction().map_err(err)?;
        match scope_value(scope) {
            Some(s) => tx.execute(
                "DELETE FROM net_rules WHERE sandbox = ?1 AND source LIKE 'preset:%'",
                [s],
            ),
            None => tx.execute(
                "DELETE FROM net_rules WHERE sandbox IS NULL AND source LIKE 'preset:%'",
                [],
            ),
        }
        .map_err(err)?;
        let ids = insert_rules(&tx, scope, rules, &format!("preset:{name}")).map_err(err)?;
        tx.execute(
            "INSERT INTO net_presets (scope, preset, applied_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (scope) DO UPDATE SET preset = ?2, applied_at = ?3",
            params![scope_key(scope), name, now_ms()],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    /// Adds (or with `replace`, replaces the user rules of each scope by) groups of rules, all
    /// in one transaction: a failure changes nothing.
    pub fn import(
        &mut self,
        groups: &[(Scope, Vec<Rule>)],
        replace: bool,
    ) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.db.transaction().map_err(err)?;
        let mut n = 0;
        for (scope, rules) in groups {
            if replace {
                match scope_value(scope) {
                    Some(s) => tx.execute(
                        "DELETE FROM net_rules WHERE sandbox = ?1 AND source NOT LIKE 'preset:%'",
                        [s],
                    ),
                    None => tx.execute(
                        "DELETE FROM net_rules WHERE sandbox IS NULL AND source NOT LIKE 'preset:%'",
                        [],
                    ),
                }
                .map_err(err)?;
            }
            n += insert_rules(&tx, scope, rules, "user").map_err(err)?.len();
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// The preset last applied to `scope`, if any.
    pub fn preset_of(&self, scope: &Scope) -> Result<Option<String>, StoreError> {
        self.db
            .query_row(
                "SELECT preset FROM net_presets WHERE scope = ?1",
                [scope_key(scope)],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Every rule.
    pub fn all(&self) -> Result<Vec<StoredRule>, StoreError> {
        load(&self.db, None).map_err(|e| e.into_store(&self.path))
    }

    /// The rules that apply to `sandbox`: the global ones and its own.
    pub fn rules_for(&self, sandbox: &str) -> Result<Vec<StoredRule>, StoreError> {
        load(&self.db, Some(sandbox)).map_err(|e| e.into_store(&self.path))
    }

    /// The underlying connection (for the audit queries).
    pub fn connection(&self) -> &Connection {
        &self.db
    }
}

fn insert_rules(
    tx: &rusqlite::Transaction<'_>,
    scope: &Scope,
    rules: &[Rule],
    source: &str,
) -> rusqlite::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(rules.len());
    let mut st = tx.prepare(
        "INSERT INTO net_rules
             (sandbox, action, host, port, method, path, source, created_at, private_address)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for r in rules {
        st.execute(params![
            scope_value(scope),
            r.action.to_string(),
            r.host.to_string(),
            r.port.to_string(),
            r.method,
            r.path.as_ref().map(|p| p.as_str()),
            source,
            now_ms(),
            r.private_address,
        ])?;
        ids.push(tx.last_insert_rowid());
    }
    Ok(ids)
}

/// Why loading rules failed.
#[derive(Debug)]
pub enum LoadError {
    /// SQLite failed.
    Sql(rusqlite::Error),
    /// A row does not parse.
    Bad(i64, String),
}

impl LoadError {
    /// As a store error for the database at `path`.
    pub fn into_store(self, path: &Path) -> StoreError {
        match self {
            LoadError::Sql(source) => sql_err(path)(source),
            LoadError::Bad(id, reason) => StoreError::BadRule { id, reason },
        }
    }
}

/// A rule row as stored, before parsing: what the privileged part hands the proxy process
/// ([`crate::channel`]), which parses it with [`parse_row`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRow {
    /// Rule id.
    pub id: i64,
    /// The sandbox, or none for a global rule.
    pub sandbox: Option<String>,
    /// `allow` / `deny`.
    pub action: String,
    /// Host pattern.
    pub host: String,
    /// Port spec.
    pub port: String,
    /// Method, if limited.
    pub method: Option<String>,
    /// Path glob, if limited.
    pub path: Option<String>,
    /// Where it came from.
    pub source: String,
    /// Whether the named host may resolve to a private address.
    #[serde(default)]
    pub private_address: bool,
}

/// Loads all rule rows, or those for one sandbox (global + its own), ordered by id.
pub fn load_rows(db: &Connection, sandbox: Option<&str>) -> Result<Vec<RuleRow>, LoadError> {
    let sql = match sandbox {
        Some(_) => {
            "SELECT id, sandbox, action, host, port, method, path, source, private_address FROM net_rules
                    WHERE sandbox IS NULL OR sandbox = ?1 ORDER BY id"
        }
        // Every rule (`?1` is NULL here; one parameter list serves both queries).
        None => {
            "SELECT id, sandbox, action, host, port, method, path, source, private_address FROM net_rules
                 WHERE ?1 IS NULL ORDER BY id"
        }
    };
    let mut st = db.prepare_cached(sql).map_err(LoadError::Sql)?;
    let rows = st
        .query_map([sandbox], |r| {
            Ok(RuleRow {
                id: r.get(0)?,
                sandbox: r.get(1)?,
                action: r.get(2)?,
                host: r.get(3)?,
                port: r.get(4)?,
                method: r.get(5)?,
                path: r.get(6)?,
                source: r.get(7)?,
                private_address: r.get(8)?,
            })
        })
        .map_err(LoadError::Sql)?;
    rows.collect::<Result<_, _>>().map_err(LoadError::Sql)
}

/// Parses one stored row.
pub fn parse_row(row: RuleRow) -> Result<StoredRule, LoadError> {
    let RuleRow {
        id,
        sandbox,
        action,
        host,
        port,
        method,
        path,
        source,
        private_address,
    } = row;
    let bad = |e: &dyn std::fmt::Display| LoadError::Bad(id, e.to_string());
    let action = match action.as_str() {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        other => return Err(bad(&format!("unknown action {other:?}"))),
    };
    Ok(StoredRule {
        id,
        scope: sandbox.map(Scope::Sandbox).unwrap_or(Scope::Global),
        source,
        rule: Rule {
            action,
            host: HostPattern::parse(&host).map_err(|e| bad(&e))?,
            port: PortSpec::parse(&port).map_err(|e| bad(&e))?,
            method: method
                .map(|m| parse_method(&m))
                .transpose()
                .map_err(|e| bad(&e))?,
            path: path
                .map(|p| PathGlob::parse(&p))
                .transpose()
                .map_err(|e| bad(&e))?,
            private_address,
        },
    })
}

/// Loads all rules, or those for one sandbox (global + its own), ordered by id.
pub fn load(db: &Connection, sandbox: Option<&str>) -> Result<Vec<StoredRule>, LoadError> {
    load_rows(db, sandbox)?.into_iter().map(parse_row).collect()
}

/// The rules generation: changes whenever any rule is added, changed or removed.
pub fn generation(db: &Connection) -> rusqlite::Result<i64> {
    db.prepare_cached("SELECT gen FROM net_rules_gen")?
        .query_row([], |r| r.get(0))
}

/// One audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    /// Row id (increasing).
    pub id: i64,
    /// When the decision was made (ms since the epoch).
    pub ts: i64,
    /// The sandbox.
    pub sandbox: String,
    /// The client inside the sandbox.
    pub client: String,
    /// Method (`CONNECT` for tunnels, `-` when unparsable).
    pub method: String,
    /// Canonical host (`-` when unparsable).
    pub host: String,
    /// Port.
    pub port: Option<u16>,
    /// Path, where visible.
    pub path: Option<String>,
    /// `allow` or `deny`.
    pub action: String,
    /// The deciding rule id, `default`, `address` or `protocol`.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// HTTP status answered, where known.
    pub status: Option<u16>,
    /// Bytes from the sandbox to the upstream.
    pub bytes_up: i64,
    /// Bytes from the upstream to the sandbox.
    pub bytes_down: i64,
    /// How long the request or tunnel lasted.
    pub duration_ms: Option<i64>,
}

/// Which audit rows to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this sandbox.
    pub sandbox: Option<String>,
    /// Only denials.
    pub denied: bool,
    /// Only rows after this id.
    pub after: Option<i64>,
    /// At most this many (the newest).
    pub limit: Option<u32>,
}

/// Reads audit rows, oldest first.
pub fn audit_rows(db: &Connection, q: &AuditQuery) -> rusqlite::Result<Vec<AuditRow>> {
    let mut st = db.prepare_cached(
        "SELECT * FROM (
           SELECT id, ts, sandbox, client, method, host, port, path, action, rule, reason, status,
                  bytes_up, bytes_down, duration_ms
           FROM net_audit
           WHERE (?1 IS NULL OR sandbox = ?1) AND (?2 = 0 OR action = 'deny') AND id > ?3
           ORDER BY id DESC LIMIT ?4
         ) ORDER BY id",
    )?;
    let rows = st.query_map(
        params![
            q.sandbox,
            q.denied as i64,
            q.after.unwrap_or(0),
            q.limit.map(i64::from).unwrap_or(-1)
        ],
        |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                ts: r.get(1)?,
                sandbox: r.get(2)?,
                client: r.get(3)?,
                method: r.get(4)?,
                host: r.get(5)?,
                port: r
                    .get::<_, Option<i64>>(6)?
                    .and_then(|p| u16::try_from(p).ok()),
                path: r.get(7)?,
                action: r.get(8)?,
                rule: r.get(9)?,
                reason: r.get(10)?,
                status: r
                    .get::<_, Option<i64>>(11)?
                    .and_then(|p| u16::try_from(p).ok()),
                bytes_up: r.get(12)?,
                bytes_down: r.get(13)?,
                duration_ms: r.get(14)?,
            })
        },
    )?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use paddock_policy::net::{Action, Rule};

    use super::*;

    #[test]
    fn removing_a_sandbox_takes_its_rules_and_presets_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        // A connection of the state store that never opened the proxy's tables: nothing to
        // remove, and no error.
        let state = Connection::open(&path).unwrap();
        remove_sandbox_rules(&state, &path, "gone").unwrap();

        let mut policy = PolicyStore::open(&path).unwrap();
        let rule = Rule::parse_target(Action::Allow, "example.test").unwrap();
        for scope in ["gone", "kept"] {
            let scope = Scope::Sandbox(scope.to_owned());
            policy
                .add(&scope, std::slice::from_ref(&rule), "cli")
                .unwrap();
            policy
                .apply_preset(&scope, "none", std::slice::from_ref(&rule))
                .unwrap();
        }
        policy
            .add(&Scope::Global, std::slice::from_ref(&rule), "cli")
            .unwrap();
        remove_sandbox_rules(&state, &path, "gone").unwrap();
        let own = |name: &str| {
            let rules = policy.rules_for(name).unwrap();
            rules.iter().filter(|r| r.scope != Scope::Global).count()
        };
        assert_eq!(own("gone"), 0);
        assert_eq!(own("kept"), 2);
        assert_eq!(
            policy.rules_for("gone").unwrap().len(),
            1,
            "the global rule stays"
        );
        let presets: i64 = state
            .query_row("SELECT count(*) FROM net_presets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(presets, 1);
    }
}
