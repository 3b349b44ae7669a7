//! The sandboxes' rows, and removing a sandbox with everything stored for it.

use std::time::{SystemTime, UNIX_EPOCH};

use paddock_core::{SandboxRecord, SandboxSpec, SandboxState};
use paddock_policy::SandboxName;
use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
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

    /// Removes a sandbox's record, its own rules, its preset and its waiting requests, in one transaction: either
    /// all go or nothing does. Its audit rows stay (the log is history; it is pruned by age).
    pub fn remove_sandbox(&self, name: &SandboxName) -> Result<(), StoreError> {
        let err = self.err();
        let tx = self.write_tx().map_err(err)?;
        let n = tx
            .execute(
                "DELETE FROM sandboxes WHERE name = ?1",
                params![name.as_str()],
            )
            .map_err(err)?;
        if n == 0 {
            return Err(StoreError::NotFound(name.clone()));
        }
        tx.execute(
            "DELETE FROM net_rules WHERE sandbox = ?1",
            params![name.as_str()],
        )
        .map_err(err)?;
        tx.execute(
            "DELETE FROM net_presets WHERE scope = ?1",
            params![name.as_str()],
        )
        .map_err(err)?;
        crate::rules::drop_unused_sets(&tx).map_err(err)?;
        tx.execute(
            "DELETE FROM net_asks WHERE sandbox = ?1",
            params![name.as_str()],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
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
        state: SandboxState::from_stored(&state),
        created_at,
        started_at,
        supervisor_pid,
        last_exit,
        last_cause,
    })
}

#[cfg(test)]
#[path = "sandboxes_tests.rs"]
mod tests;
