//! The audit writer: every decision becomes one row, written off the request path.
//!
//! Requests hand records to a channel; one thread writes them in batches to the state store's
//! [`AuditLog`] (one transaction per batch), so a request never waits for the disk. A decision is inserted when it is made and
//! its byte counts and duration are filled in when the request or tunnel ends, so a long tunnel
//! is visible in `policy log --follow` while it is open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the writer gathers decisions before writing them (and how stale `policy log
/// --follow` may be).
const BATCH_WINDOW: Duration = Duration::from_millis(25);

/// The audit log as the state store keeps it: what the writer thread fills.
pub trait AuditLog {
    /// Why the store could not answer.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Drops the rows the store no longer keeps (old, or beyond its bound); runs when a proxy
    /// starts, so the log cannot grow without bound. Returns how many went.
    fn prune(&mut self, now_ms: i64) -> Result<usize, Self::Error>;

    /// Makes `changes`, in order, in one transaction.
    fn write(&mut self, changes: &[AuditChange<'_>]) -> Result<(), Self::Error>;
}

/// One change to the audit log.
#[derive(Debug, Clone, Copy)]
pub enum AuditChange<'a> {
    /// A new decision made at `ts` (ms since the epoch), with its end when that came in the
    /// same batch (one row, not a row and an update).
    Decision {
        /// The row's key, unique in the log.
        key: &'a str,
        /// When.
        ts: i64,
        /// The decision.
        record: &'a Record,
        /// Its end, if known already.
        end: Option<&'a Finish>,
    },
    /// The end of a decision written in an earlier batch.
    End {
        /// The decision's key.
        key: &'a str,
        /// Its end.
        finish: &'a Finish,
    },
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

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
    /// `allow` / `deny`, or `fail` for an allowed request that failed before a decision
    /// could matter (a name that does not resolve).
    pub action: &'static str,
    /// Deciding rule id, `default`, `address`, `protocol`, `ask` (a held request denied), or
    /// `resolve`.
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
        let _ = self.tx.send(Msg::Insert(key.clone(), now_ms(), rec));
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
    /// Starts the writer on `log`, after pruning it.
    pub fn start<L>(mut log: L) -> std::io::Result<(AuditWriter, AuditSink)>
    where
        L: AuditLog + Send + 'static,
    {
        if let Err(e) = log.prune(now_ms()) {
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
                    if let Err(e) = log.write(&changes(&batch)) {
                        tracing::error!("audit log write failed: {e}");
                    }
                }
            })?;
        let prefix = format!(
            "{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
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

/// The changes `batch` makes: a request that starts and ends within one batch is one new row,
/// not a row and an update.
fn changes(batch: &[Msg]) -> Vec<AuditChange<'_>> {
    let mut ends: HashMap<&str, &Finish> = batch
        .iter()
        .filter_map(|m| match m {
            Msg::Finish(k, f) => Some((k.as_str(), f)),
            Msg::Insert(..) => None,
        })
        .collect();
    let mut out = Vec::with_capacity(batch.len());
    for m in batch {
        match m {
            Msg::Insert(key, ts, record) => out.push(AuditChange::Decision {
                key,
                ts: *ts,
                record,
                end: ends.remove(key.as_str()),
            }),
            Msg::Finish(key, finish) => {
                if ends.remove(key.as_str()).is_some() {
                    out.push(AuditChange::End { key, finish });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(host: &str) -> Record {
        Record {
            sandbox: "s".into(),
            client: "c".into(),
            method: "GET".into(),
            host: host.into(),
            port: Some(80),
            path: None,
            action: "allow",
            rule: "1".into(),
            reason: "r".into(),
            status: None,
        }
    }

    fn finish(bytes_up: u64) -> Finish {
        Finish {
            bytes_up,
            bytes_down: 0,
            duration_ms: 1,
            status: None,
        }
    }

    /// What each change is: (key, whether a decision, the bytes up of its end).
    fn summary(changes: &[AuditChange<'_>]) -> Vec<(String, bool, Option<u64>)> {
        changes
            .iter()
            .map(|c| match c {
                AuditChange::Decision { key, end, .. } => {
                    (key.to_string(), true, end.map(|f| f.bytes_up))
                }
                AuditChange::End { key, finish } => (key.to_string(), false, Some(finish.bytes_up)),
            })
            .collect()
    }

    #[test]
    fn a_decision_that_ends_in_its_batch_is_one_change() {
        let batch = vec![
            Msg::Insert("a".into(), 1, record("a.example")),
            Msg::Insert("b".into(), 2, record("b.example")),
            Msg::Finish("a".into(), finish(7)),
            // The end of a decision of an earlier batch.
            Msg::Finish("z".into(), finish(9)),
        ];
        assert_eq!(
            summary(&changes(&batch)),
            [
                ("a".into(), true, Some(7)),
                ("b".into(), true, None),
                ("z".into(), false, Some(9)),
            ]
        );
    }
}
