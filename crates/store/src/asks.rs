//! Requests a proxy holds for the user's answer (`ask` rules), and the answers.
//!
//! The sandbox's supervisor writes a row for each distinct request its proxy holds
//! ([`Store::ask`]) and reads the answers ([`Store::take_answers`]); the user's commands list
//! the rows ([`Store::pending`]) and answer them ([`Store::answer`]), an approval that grants
//! more than the waiting requests adding its rule in the same transaction. Nothing inside a
//! sandbox can reach this database: an answer comes only from the user.

use paddock_policy::net::{Rule, Scope};
use paddock_proxy::ask::{Answered, AskBook, Question, Slot};
use paddock_proxy::audit::now_ms;
use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

/// A request to record: what the proxy saw of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAsk<'a> {
    /// The sandbox it comes from.
    pub sandbox: &'a str,
    /// `connect`, `http` or `https` (a request inside an intercepted tunnel).
    pub kind: &'a str,
    /// The canonical host.
    pub host: &'a str,
    /// The port.
    pub port: u16,
    /// The method, where visible.
    pub method: Option<&'a str>,
    /// The path, where visible.
    pub path: Option<&'a str>,
    /// The ask rule that held it.
    pub rule: Option<i64>,
    /// When it is denied unless answered (ms since the epoch).
    pub expires_at: i64,
}

/// Where a request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskSlot {
    /// A new row, with its id.
    New(i64),
    /// An identical request already waits: one more waits with it.
    Joined(i64),
    /// The sandbox has as many distinct requests waiting as it may.
    Full,
}

/// A waiting request, as the user's commands list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AskRow {
    /// Its id (for `policy approve` and `policy deny`).
    pub id: i64,
    /// The sandbox it comes from.
    pub sandbox: String,
    /// `connect` (only host and port are visible), `http`, or `https` (intercepted).
    pub kind: String,
    /// The host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The method, where visible.
    pub method: Option<String>,
    /// The path, where visible.
    pub path: Option<String>,
    /// The ask rule that held it.
    pub rule: Option<i64>,
    /// How many identical requests wait on it.
    pub waiting: i64,
    /// When it was asked (ms since the epoch).
    pub asked_at: i64,
    /// When it is denied unless answered (ms since the epoch).
    pub expires_at: i64,
    /// The command line of the process that asked, where the backend can tell (the sandbox's
    /// own word: its processes write their command lines).
    pub command: Option<String>,
}

/// An answer for the supervisor to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The request.
    pub id: i64,
    /// Allowed.
    pub allow: bool,
    /// Who answered, in words (`the user`, `the user (always)`).
    pub by: String,
    /// The rule the approval made, if it made one.
    pub rule: Option<i64>,
}

/// A rule an approval adds with its answer.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    /// Its scope.
    pub scope: &'a Scope,
    /// The rule.
    pub rule: &'a Rule,
    /// Its origin, as `policy ls` shows it.
    pub source: &'a str,
    /// Removed when the sandbox's run ends.
    pub until_stop: bool,
}

impl Store {
    /// Records a request held for the user, or counts one more waiter on an identical one;
    /// at most `limit` distinct requests of a sandbox wait.
    pub fn ask(&self, a: &NewAsk<'_>, limit: usize) -> Result<AskSlot, StoreError> {
        let err = self.err();
        let tx = self.write_tx().map_err(err)?;
        let same: Option<i64> = tx
            .query_row(
                "SELECT id FROM net_asks WHERE sandbox = ?1 AND kind = ?2 AND host = ?3
                 AND port = ?4 AND method IS ?5 AND path IS ?6 AND answer IS NULL",
                params![a.sandbox, a.kind, a.host, a.port, a.method, a.path],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let slot = match same {
            Some(id) => {
                tx.execute(
                    "UPDATE net_asks SET waiting = waiting + 1 WHERE id = ?1",
                    [id],
                )
                .map_err(err)?;
                AskSlot::Joined(id)
            }
            None => {
                let waiting: i64 = tx
                    .query_row(
                        "SELECT count(*) FROM net_asks WHERE sandbox = ?1 AND answer IS NULL",
                        [a.sandbox],
                        |r| r.get(0),
                    )
                    .map_err(err)?;
                if usize::try_from(waiting).unwrap_or(usize::MAX) >= limit {
                    return Ok(AskSlot::Full);
                }
                tx.execute(
                    "INSERT INTO net_asks
                         (sandbox, kind, host, port, method, path, rule, asked_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        a.sandbox,
                        a.kind,
                        a.host,
                        a.port,
                        a.method,
                        a.path,
                        a.rule,
                        now_ms(),
                        a.expires_at
                    ],
                )
                .map_err(err)?;
                AskSlot::New(tx.last_insert_rowid())
            }
        };
        tx.commit().map_err(err)?;
        Ok(slot)
    }

    /// The answered requests of `sandbox`, removed as they are read.
    pub fn take_answers(&self, sandbox: &str) -> Result<Vec<Answer>, StoreError> {
        let err = self.err();
        let tx = self.write_tx().map_err(err)?;
        let answers = {
            let mut st = tx
                .prepare_cached(
                    "SELECT id, answer, answered_by, grant_rule FROM net_asks
                     WHERE sandbox = ?1 AND answer IS NOT NULL ORDER BY id",
                )
                .map_err(err)?;
            st.query_map([sandbox], |r| {
                Ok(Answer {
                    id: r.get(0)?,
                    allow: r.get::<_, String>(1)? == "allow",
                    by: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    rule: r.get(3)?,
                })
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(err)?
        };
        if !answers.is_empty() {
            tx.execute(
                "DELETE FROM net_asks WHERE sandbox = ?1 AND answer IS NOT NULL",
                [sandbox],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(answers)
    }

    /// Removes request `id` unanswered (its time ran out); `false` when an answer came first
    /// ([`Store::take_answers`] has it then).
    pub fn expire_ask(&self, id: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM net_asks WHERE id = ?1 AND answer IS NULL",
                [id],
            )
            .map_err(self.err())?;
        Ok(n > 0)
    }

    /// Forgets what a run of `sandbox` left: its waiting requests and the rules approved for
    /// that run only.
    pub fn end_run(&self, sandbox: &str) -> Result<(), StoreError> {
        let err = self.err();
        let tx = self.write_tx().map_err(err)?;
        tx.execute("DELETE FROM net_asks WHERE sandbox = ?1", [sandbox])
            .map_err(err)?;
        tx.execute(
            "DELETE FROM net_rules WHERE sandbox = ?1 AND until_stop != 0",
            [sandbox],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// The requests waiting for an answer (every sandbox's, or one's), oldest first.
    pub fn pending(&self, sandbox: Option<&str>) -> Result<Vec<AskRow>, StoreError> {
        let err = self.err();
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, sandbox, kind, host, port, method, path, rule, waiting, asked_at,
                        expires_at, command
                 FROM net_asks WHERE answer IS NULL AND (?1 IS NULL OR sandbox = ?1) ORDER BY id",
            )
            .map_err(err)?;
        st.query_map([sandbox], |r| {
            Ok(AskRow {
                id: r.get(0)?,
                sandbox: r.get(1)?,
                kind: r.get(2)?,
                host: r.get(3)?,
                port: r.get(4)?,
                method: r.get(5)?,
                path: r.get(6)?,
                rule: r.get(7)?,
                waiting: r.get(8)?,
                asked_at: r.get(9)?,
                expires_at: r.get(10)?,
                command: r.get(11)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(err)
    }

    /// Answers request `id` (`by`: who, in words), adding `grant`'s rule in the same
    /// transaction; returns that rule's id. A request that is not waiting any more is
    /// [`StoreError::NoAsk`], and then nothing is added.
    pub fn answer(
        &self,
        id: i64,
        allow: bool,
        by: &str,
        grant: Option<&Grant<'_>>,
    ) -> Result<Option<i64>, StoreError> {
        let err = self.err();
        let tx = self.write_tx().map_err(err)?;
        let rule = match grant {
            Some(g) => {
                let ids = crate::rules::insert_rules(
                    &tx,
                    g.scope,
                    std::slice::from_ref(g.rule),
                    g.source,
                )
                .map_err(err)?;
                let rule = ids.first().copied();
                if g.until_stop {
                    tx.execute("UPDATE net_rules SET until_stop = 1 WHERE id = ?1", [rule])
                        .map_err(err)?;
                }
                rule
            }
            None => None,
        };
        let n = tx
            .execute(
                "UPDATE net_asks SET answer = ?2, answered_by = ?3, grant_rule = ?4,
                     answered_at = ?5
                 WHERE id = ?1 AND answer IS NULL",
                params![id, if allow { "allow" } else { "deny" }, by, rule, now_ms()],
            )
            .map_err(err)?;
        if n == 0 {
            // Dropping the transaction rolls the rule back.
            return Err(StoreError::NoAsk(id));
        }
        tx.commit().map_err(err)?;
        Ok(rule)
    }

    /// Records the command line of the process that made request `id`.
    pub fn set_command(&self, id: i64, command: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE net_asks SET command = ?2 WHERE id = ?1",
                params![id, command],
            )
            .map(drop)
            .map_err(self.err())
    }

    /// One waiting request.
    pub fn pending_one(&self, id: i64) -> Result<AskRow, StoreError> {
        self.pending(None)?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or(StoreError::NoAsk(id))
    }
}

impl AskBook for Store {
    type Error = StoreError;

    fn record(
        &self,
        sandbox: &str,
        q: &Question,
        expires_at: i64,
        limit: usize,
    ) -> Result<Slot, StoreError> {
        let a = NewAsk {
            sandbox,
            kind: &q.kind,
            host: &q.host,
            port: q.port,
            method: q.method.as_deref(),
            path: q.path.as_deref(),
            rule: q.rule,
            expires_at,
        };
        Ok(match self.ask(&a, limit)? {
            AskSlot::New(id) => Slot::New(id),
            AskSlot::Joined(id) => Slot::Joined(id),
            AskSlot::Full => Slot::Full,
        })
    }

    fn join(&self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE net_asks SET waiting = waiting + 1 WHERE id = ?1 AND answer IS NULL",
                [id],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn answers(&self, sandbox: &str) -> Result<Vec<Answered>, StoreError> {
        Ok(self
            .take_answers(sandbox)?
            .into_iter()
            .map(|a| Answered {
                id: a.id,
                allow: a.allow,
                by: a.by,
                rule: a.rule,
            })
            .collect())
    }

    fn expire(&self, id: i64) -> Result<bool, StoreError> {
        self.expire_ask(id)
    }
}

#[cfg(test)]
#[path = "asks_tests.rs"]
mod tests;
