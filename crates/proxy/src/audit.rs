//! The audit writer: every decision becomes one row, written off the request path.
//!
//! Requests hand records to a channel; one thread writes them in batches (one transaction per
//! batch), so a request never waits for the disk. A decision is inserted when it is made and
//! its byte counts and duration are filled in when the request or tunnel ends, so a long tunnel
//! is visible in `policy log --follow` while it is open.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the writer gathers decisions before writing them (and how stale `policy log
/// --follow` may be).
const BATCH_WINDOW: Duration = Duration::from_millis(25);

use rusqlite::params;

use crate::store::{self, StoreError};

/// One decision.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    /// The sandbox.
    pub sandbox: String,
    /// The client inside the sandbox.
    pub client: String,
    /// Method (`CONNECT` for tunnels).
    pub method: String,
    /// Canonical host, or what was sent when it did not parse.
    pub host: String,
    /// Port.
    pub port: Option<u16>,
    /// Path, where visible.
    pub path: Option<String>,
    /// `allow` / `deny`.
    pub action: &'static str,
    /// Deciding rule id, `default`, `address` or `protocol`.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// Status answered.
    pub status: Option<u16>,
}

/// The end of an allowed request or tunnel.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finish {
    /// Bytes from the sandbox.
    pub bytes_up: u64,
    /// Bytes to the sandbox.
    pub bytes_down: u64,
    /// Duration.
    pub duration_ms: u64,
    /// Final status, when it changed (e.g. 502 after the upstream failed).
    pub status: Option<u16>,
}

pub(crate) enum Msg {
    Insert(String, i64, Record),
    Finish(String, Finish),
}

/// Where decisions go. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditSink {
    pub(crate) tx: mpsc::Sender<Msg>,
    pub(crate) prefix: std::sync::Arc<str>,
    counter: std::sync::Arc<AtomicU64>,
}

/// A decision's handle, to fill in its end.
#[derive(Debug, Clone)]
pub struct Entry(String);

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit message")
    }
}

impl AuditSink {
    /// A sink whose records go to `tx` (the proxy process's forwarder, [`crate::channel`]).
    pub(crate) fn to_channel(tx: mpsc::Sender<Msg>, prefix: &str) -> AuditSink {
        AuditSink {
            tx,
            prefix: prefix.into(),
            counter: Default::default(),
        }
    }

    /// Records a decision now.
    pub fn record(&self, rec: Record) -> Entry {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let key = format!("{}-{n}", self.prefix);
        let _ = self.tx.send(Msg::Insert(key.clone(), store::now_ms(), rec));
        Entry(key)
    }

    /// Fills in the end of a decision.
    pub fn finish(&self, entry: &Entry, fin: Finish) {
        let _ = self.tx.send(Msg::Finish(entry.0.clone(), fin));
    }
}

/// The writer thread; dropping every sink and calling [`AuditWriter::close`] flushes it.
#[derive(Debug)]
pub struct AuditWriter {
    thread: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Opens the database and starts the writer.
    pub fn start(db_path: &Path) -> Result<(AuditWriter, AuditSink), StoreError> {
        let mut db = store::open(db_path)?;
        if let Err(e) = prune(&db, store::now_ms()) {
            tracing::warn!("pruning the audit log failed: {e}");
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        let thread = std::thread::Builder::new()
            .name("paddock-audit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Gather what arrives within a short window into one transaction: one
                    // commit per request would cost the proxy as much CPU as forwarding it.
                    let mut batch = vec![first];
                    let deadline = Instant::now() + BATCH_WINDOW;
                    while batch.len() < 1024 {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = write_batch(&mut db, &batch) {
                        tracing::error!("audit log write failed: {e}");
                    }
                }
            })
            .map_err(|e| StoreError::Sqlite {
                path: db_path.to_owned(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        let prefix = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        Ok((
            AuditWriter {
                thread: Some(thread),
            },
            AuditSink {
                tx,
                prefix: prefix.into(),
                counter: Default::default(),
            },
        ))
    }

    /// Waits until every record sent through now-dropped sinks is written.
    pub fn close(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long audit rows are kept.
pub const KEEP_DAYS: i64 = 90;
/// How many audit rows are kept at most (the newest).
pub const KEEP_ROWS: i64 = 1_000_000;

/// Drops rows older than [`KEEP_DAYS`] and all but the newest [`KEEP_ROWS`]; runs when a proxy
/// starts, so the log cannot grow without bound.
pub fn prune(db: &rusqlite::Connection, now_ms: i64) -> rusqlite::Result<usize> {
    let old = db.execute(
        "DELETE FROM net_audit WHERE ts < ?1",
        [now_ms - KEEP_DAYS * 24 * 3600 * 1000],
    )?;
    let extra = db.execute(
        "DELETE FROM net_audit WHERE id <= (SELECT MAX(id) FROM net_audit) - ?1",
        [KEEP_ROWS],
    )?;
    Ok(old + extra)
}

fn write_batch(db: &mut rusqlite::Connection, batch: &[Msg]) -> rusqlite::Result<()> {
    // A request that starts and ends within one batch is written as one row, not a row and an
    // update.
    let mut ends: std::collections::HashMap<&str, &Finish> = batch
        .iter()
        .filter_map(|m| match m {
            Msg::Finish(k, f) => Some((k.as_str(), f)),
            Msg::Insert(..) => None,
        })
        .collect();
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
        for m in batch {
            match m {
                Msg::Insert(key, ts, r) => {
                    let end = ends.remove(key.as_str());
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
                Msg::Finish(key, f) => {
                    if ends.remove(key.as_str()).is_some() {
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
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn prune_drops_old_and_surplus_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(&dir.path().join("s.db")).unwrap();
        let now = 100 * 24 * 3600 * 1000;
        for (i, ts) in [(1, 0), (2, now - 1), (3, now)] {
            db.execute(
                "INSERT INTO net_audit (id, key, ts, sandbox, client, method, host, action, rule, reason)
                 VALUES (?1, ?1, ?2, 's', 'c', 'GET', 'h', 'deny', 'default', 'r')",
                [i, ts],
            )
            .unwrap();
        }
        assert_eq!(prune(&db, now).unwrap(), 1);
        db.execute(
            "UPDATE net_audit SET id = id + ?1 WHERE id = 3",
            [KEEP_ROWS],
        )
        .unwrap();
        assert_eq!(prune(&db, now).unwrap(), 1);
        let left: Vec<i64> = db
            .prepare("SELECT id FROM net_audit")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, vec![3 + KEEP_ROWS]);
    }
}
