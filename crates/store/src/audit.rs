//! The audit log: one row per decision of a sandbox's egress proxy.
//!
//! The proxy's writer fills it through [`AuditLog`]; `paddock policy log` reads it
//! ([`Store::audit_rows`]). Rows are history: removing a sandbox keeps them, and they go only
//! when pruned by age or count.

use paddock_proxy::audit::{AuditChange, AuditLog};
use rusqlite::params;
use serde::Serialize;

use crate::{Store, StoreError};

/// How long audit rows are kept.
pub const KEEP_DAYS: i64 = 90;
/// How many audit rows are kept at most (the newest).
pub const KEEP_ROWS: i64 = 1_000_000;

/// One audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

impl Store {
    /// Reads audit rows, oldest first.
    pub fn audit_rows(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        audit_rows(&self.conn, q).map_err(self.err())
    }
}

fn audit_rows(db: &rusqlite::Connection, q: &AuditQuery) -> rusqlite::Result<Vec<AuditRow>> {
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

impl AuditLog for Store {
    type Error = StoreError;

    /// Drops rows older than [`KEEP_DAYS`] and all but the newest [`KEEP_ROWS`].
    fn prune(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        let err = self.err();
        let old = self
            .conn
            .execute(
                "DELETE FROM net_audit WHERE ts < ?1",
                [now_ms - KEEP_DAYS * 24 * 3600 * 1000],
            )
            .map_err(err)?;
        let extra = self
            .conn
            .execute(
                "DELETE FROM net_audit WHERE id <= (SELECT MAX(id) FROM net_audit) - ?1",
                [KEEP_ROWS],
            )
            .map_err(err)?;
        Ok(old + extra)
    }

    fn write(&mut self, changes: &[AuditChange<'_>]) -> Result<(), StoreError> {
        let path = self.path.clone();
        write(&mut self.conn, changes).map_err(crate::sql_err(&path))
    }
}

fn write(db: &mut rusqlite::Connection, changes: &[AuditChange<'_>]) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    {
        let mut ins = tx.prepare_cached(
            "INSERT INTO net_audit (key, ts, sandbox, client, method, host, port, path, action,
                                    rule, reason, status, bytes_up, bytes_down, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?;
        let mut fin = tx.prepare_cached(
            "UPDATE net_audit SET bytes_up = ?2, bytes_down = ?3, duration_ms = ?4,
                                  status = COALESCE(?5, status)
             WHERE key = ?1",
        )?;
        for c in changes {
            match *c {
                AuditChange::Decision {
                    key,
                    ts,
                    record: r,
                    end,
                } => {
                    ins.execute(params![
                        key,
                        ts,
                        r.sandbox,
                        r.client,
                        r.method,
                        r.host,
                        r.port,
                        r.path,
                        r.action,
                        r.rule,
                        r.reason,
                        end.and_then(|f| f.status).or(r.status),
                        end.map_or(0, |f| f.bytes_up as i64),
                        end.map_or(0, |f| f.bytes_down as i64),
                        end.map(|f| f.duration_ms as i64),
                    ])?;
                }
                AuditChange::End { key, finish: f } => {
                    fin.execute(params![
                        key,
                        f.bytes_up as i64,
                        f.bytes_down as i64,
                        f.duration_ms as i64,
                        f.status
                    ])?;
                }
            }
        }
    }
    tx.commit()
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
