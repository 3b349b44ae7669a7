//! The network rules and the presets applied to each scope.
//!
//! A generation counter bumped by triggers (`net_rules_gen`) lets a running proxy's privileged
//! side notice rule changes with one cheap query per request ([`RuleRows`]).

use paddock_policy::net::{Rule, Scope, StoredRule};
use paddock_proxy::audit::now_ms;
use paddock_proxy::rules::{RuleRow, RuleRows, parse_row};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::{Store, StoreError};

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

impl Store {
    /// Adds rules in one transaction; returns their ids.
    pub fn add(&self, scope: &Scope, rules: &[Rule], source: &str) -> Result<Vec<i64>, StoreError> {
        let err = self.err();
        let tx = self.conn.unchecked_transaction().map_err(err)?;
        let ids = insert_rules(&tx, scope, rules, source).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    /// Removes one rule.
    pub fn remove(&self, id: i64) -> Result<StoredRule, StoreError> {
        let rule = self
            .all()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(StoreError::NoRule(id))?;
        self.conn
            .execute("DELETE FROM net_rules WHERE id = ?1", [id])
            .map_err(self.err())?;
        Ok(rule)
    }

    /// Replaces the preset rules of `scope` with `rules` from preset `name`, in one transaction.
    pub fn apply_preset(
        &self,
        scope: &Scope,
        name: &str,
        rules: &[Rule],
    ) -> Result<Vec<i64>, StoreError> {
        let err = self.err();
        let tx = self.conn.unchecked_transaction().map_err(err)?;
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
        &self,
        groups: &[(Scope, Vec<Rule>)],
        replace: bool,
    ) -> Result<usize, StoreError> {
        let err = self.err();
        let tx = self.conn.unchecked_transaction().map_err(err)?;
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
        self.conn
            .query_row(
                "SELECT preset FROM net_presets WHERE scope = ?1",
                [scope_key(scope)],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Every rule, ordered by id.
    pub fn all(&self) -> Result<Vec<StoredRule>, StoreError> {
        parse(load_rows(&self.conn, None).map_err(self.err())?)
    }

    /// The rules that apply to `sandbox`: the global ones and its own, ordered by id.
    pub fn rules_for(&self, sandbox: &str) -> Result<Vec<StoredRule>, StoreError> {
        parse(load_rows(&self.conn, Some(sandbox)).map_err(self.err())?)
    }
}

impl RuleRows for Store {
    type Error = StoreError;

    fn generation(&self) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached("SELECT gen FROM net_rules_gen")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(self.err())
    }

    fn rule_rows(&self, sandbox: &str) -> Result<Vec<RuleRow>, StoreError> {
        load_rows(&self.conn, Some(sandbox)).map_err(self.err())
    }
}

fn parse(rows: Vec<RuleRow>) -> Result<Vec<StoredRule>, StoreError> {
    Ok(rows.into_iter().map(parse_row).collect::<Result<_, _>>()?)
}

pub(crate) fn insert_rules(
    tx: &Transaction<'_>,
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

/// All rule rows, or those for one sandbox (global + its own), ordered by id.
fn load_rows(db: &Connection, sandbox: Option<&str>) -> rusqlite::Result<Vec<RuleRow>> {
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
    let mut st = db.prepare_cached(sql)?;
    let rows = st.query_map([sandbox], |r| {
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
    })?;
    rows.collect()
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
