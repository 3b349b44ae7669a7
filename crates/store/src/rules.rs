//! The network rules and the presets applied to each scope.
//!
//! A generation counter bumped by triggers (`net_rules_gen`) lets a running proxy's privileged
//! side notice rule changes with one cheap query per request ([`RuleRows`]).

use paddock_policy::net::{Rule, Scope, StoredRule};
use paddock_proxy::audit::now_ms;
use paddock_proxy::rules::{RuleRow, RuleRows, parse_row};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::{Store, StoreError};

/// The sandbox column of a rule of `scope` (`None`: global); a preset's rules are not added
/// one by one.
fn scope_value(scope: &Scope) -> Result<Option<&str>, StoreError> {
    match scope {
        Scope::Global => Ok(None),
        Scope::Sandbox(n) => Ok(Some(n)),
        Scope::Preset(p) => Err(StoreError::Invalid(format!(
            "the rules of preset {p} change only with the preset; add a rule to a sandbox or to every sandbox instead"
        ))),
    }
}

/// The key of a scope in `net_presets`: the sandbox's name, or empty for every sandbox.
fn scope_key(scope: &Scope) -> String {
    match scope {
        Scope::Global | Scope::Preset(_) => String::new(),
        Scope::Sandbox(n) => n.clone(),
    }
}

/// A preset in use: the scope that uses it, its name, and whether it ends in an ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetInUse {
    /// The scope that uses it.
    pub scope: Scope,
    /// The preset's name.
    pub preset: String,
    /// It ends in an ask for every host no rule names.
    pub ask_unlisted: bool,
    /// The id of the set of rules it uses (shared with every scope that uses the same rules).
    pub set: Option<i64>,
}

/// The words that tell one set of preset rules from another: the preset's name and each rule
/// as stored.
fn set_key<'a>(preset: &str, rules: impl Iterator<Item = [&'a str; 6]>) -> String {
    let mut key = format!("{preset}\n");
    for r in rules {
        key.push_str(&format!("{r:?}\n"));
    }
    key
}

fn rule_words(r: &Rule) -> [String; 6] {
    [
        r.action.to_string(),
        r.host.to_string(),
        r.port.to_string(),
        r.method.clone().unwrap_or_default(),
        r.path
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        r.private_address.to_string(),
    ]
}

/// Removes the sets of preset rules no scope uses (their rules go with them).
pub(crate) fn drop_unused_sets(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM net_preset_sets WHERE id NOT IN
             (SELECT set_id FROM net_presets WHERE set_id IS NOT NULL)",
        [],
    )
    .map(drop)
}

/// The set of preset rules whose key is `key`, if there is one.
fn find_set(tx: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    tx.query_row(
        "SELECT id FROM net_preset_sets WHERE key = ?1",
        [key],
        |r| r.get(0),
    )
    .optional()
}

/// A new, empty set of preset rules; its id.
fn new_set(tx: &Connection, name: &str, ask_unlisted: bool, key: &str) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO net_preset_sets (preset, ask_unlisted, key, made_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, ask_unlisted, key, now_ms()],
    )?;
    Ok(tx.last_insert_rowid())
}

/// The ids of the rules of set `set`, in order.
fn set_rules(db: &Connection, set: i64) -> rusqlite::Result<Vec<i64>> {
    db.prepare_cached("SELECT id FROM net_rules WHERE preset_set = ?1 ORDER BY id")?
        .query_map([set], |r| r.get(0))?
        .collect()
}

/// The set holding exactly `rules` for preset `name`, made when there is none; its id.
fn set_for(
    tx: &Transaction<'_>,
    name: &str,
    ask_unlisted: bool,
    key: &str,
    rules: &[Rule],
    source: &str,
) -> rusqlite::Result<i64> {
    if let Some(id) = find_set(tx, key)? {
        return Ok(id);
    }
    let set = new_set(tx, name, ask_unlisted, key)?;
    let ids = insert_rules(tx, &Scope::Global, rules, source)?;
    for id in ids {
        tx.execute(
            "UPDATE net_rules SET preset_set = ?2 WHERE id = ?1",
            params![id, set],
        )?;
    }
    Ok(set)
}

impl Store {
    /// Adds rules in one transaction; returns their ids.
    pub fn add(&self, scope: &Scope, rules: &[Rule], source: &str) -> Result<Vec<i64>, StoreError> {
        scope_value(scope)?;
        let err = self.err();
        let tx = self.write_tx().map_err(err)?;
        let ids = insert_rules(&tx, scope, rules, source).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    /// Removes one rule. A preset's rule is not removed: it is every user's of the preset.
    pub fn remove(&self, id: i64) -> Result<StoredRule, StoreError> {
        let rule = self
            .all()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(StoreError::NoRule(id))?;
        if let Scope::Preset(p) = &rule.scope {
            return Err(StoreError::Invalid(format!(
                "rule {id} is one of preset {p}'s rules, which every sandbox using that preset shares; to stop it for one sandbox, add a deny rule there (paddock policy deny {} --sandbox NAME), or give the sandbox another preset (paddock policy preset strict --sandbox NAME)",
                rule.rule.host
            )));
        }
        self.conn
            .execute("DELETE FROM net_rules WHERE id = ?1", [id])
            .map_err(self.err())?;
        Ok(rule)
    }

    /// Makes `scope` use preset `name`, whose rules are `rules` (`ask_unlisted`: they end in an
    /// ask for hosts no rule names), in one transaction. The rules are kept once for every
    /// scope that uses the same ones; returns their ids.
    pub fn apply_preset(
        &self,
        scope: &Scope,
        name: &str,
        rules: &[Rule],
        ask_unlisted: bool,
    ) -> Result<Vec<i64>, StoreError> {
        let owner = scope_value(scope)?;
        let err = self.err();
        let words: Vec<[String; 6]> = rules.iter().map(rule_words).collect();
        let key = set_key(name, words.iter().map(|w| w.each_ref().map(String::as_str)));
        let tx = self.write_tx().map_err(err)?;
        let source = format!("preset:{name}");
        let set = set_for(&tx, name, ask_unlisted, &key, rules, &source).map_err(err)?;
        // What an older paddock copied into the scope goes.
        match owner {
            Some(s) => tx.execute(
                "DELETE FROM net_rules WHERE sandbox = ?1 AND source LIKE 'preset:%' AND preset_set IS NULL",
                [s],
            ),
            None => tx.execute(
                "DELETE FROM net_rules WHERE sandbox IS NULL AND source LIKE 'preset:%' AND preset_set IS NULL",
                [],
            ),
        }
        .map_err(err)?;
        tx.execute(
            "INSERT INTO net_presets (scope, preset, applied_at, set_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (scope) DO UPDATE SET preset = ?2, applied_at = ?3, set_id = ?4",
            params![scope_key(scope), name, now_ms(), set],
        )
        .map_err(err)?;
        drop_unused_sets(&tx).map_err(err)?;
        let ids = set_rules(&tx, set).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    /// Adds (or with `replace`, replaces the user rules of each scope by) groups of rules, all
    /// in one transaction: a failure changes nothing. A rule the scope already has is not
    /// added again. Returns how many were added.
    pub fn import(
        &self,
        groups: &[(Scope, Vec<Rule>)],
        replace: bool,
    ) -> Result<usize, StoreError> {
        for (scope, _) in groups {
            scope_value(scope)?;
        }
        let existing = self.all()?;
        let err = self.err();
        let tx = self.write_tx().map_err(err)?;
        let mut n = 0;
        for (scope, rules) in groups {
            if replace {
                match scope_value(scope)? {
                    Some(s) => tx.execute(
                        "DELETE FROM net_rules WHERE sandbox = ?1 AND source NOT LIKE 'preset:%'",
                        [s],
                    ),
                    None => tx.execute(
                        "DELETE FROM net_rules WHERE sandbox IS NULL AND preset_set IS NULL AND source NOT LIKE 'preset:%'",
                        [],
                    ),
                }
                .map_err(err)?;
            }
            let mut fresh: Vec<Rule> = Vec::new();
            for r in rules {
                let had = !replace && existing.iter().any(|e| e.scope == *scope && e.rule == *r);
                if !had && !fresh.contains(r) {
                    fresh.push(r.clone());
                }
            }
            n += insert_rules(&tx, scope, &fresh, "user").map_err(err)?.len();
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

    /// The presets in use: every scope's, or those that apply to `sandbox` (its own and the
    /// one for every sandbox).
    pub fn presets_in_use(&self, sandbox: Option<&str>) -> Result<Vec<PresetInUse>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT p.scope, p.preset, coalesce(s.ask_unlisted, 0), p.set_id FROM net_presets p
                 LEFT JOIN net_preset_sets s ON s.id = p.set_id
                 WHERE ?1 IS NULL OR p.scope = ?1 OR p.scope = '' ORDER BY p.scope",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([sandbox], |r| {
                let scope: String = r.get(0)?;
                Ok(PresetInUse {
                    scope: if scope.is_empty() {
                        Scope::Global
                    } else {
                        Scope::Sandbox(scope)
                    },
                    preset: r.get(1)?,
                    ask_unlisted: r.get(2)?,
                    set: r.get(3)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(self.err())?;
        Ok(rows)
    }

    /// The ids of the rules of preset set `set` ([`PresetInUse::set`]), in order.
    pub fn preset_set_rules(&self, set: i64) -> Result<Vec<i64>, StoreError> {
        set_rules(&self.conn, set).map_err(self.err())
    }

    /// Every rule, ordered by id; a preset's rules once, however many scopes use them.
    pub fn all(&self) -> Result<Vec<StoredRule>, StoreError> {
        parse(load_rows(&self.conn, None).map_err(self.err())?)
    }

    /// The rules that apply to `sandbox`: the global ones, its own, and those of the presets
    /// it and every sandbox use, ordered by id.
    pub fn rules_for(&self, sandbox: &str) -> Result<Vec<StoredRule>, StoreError> {
        parse(load_rows(&self.conn, Some(sandbox)).map_err(self.err())?)
    }
}

/// [`crate::schema`]'s step 6: each scope's copy of its preset's rules, as an older paddock
/// made them, becomes one set shared by every scope with the same rules (the rows and ids of
/// the copy of the first scope in name order, every sandbox's first, are kept; the other
/// copies go).
pub(crate) fn share_preset_copies(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let scopes: Vec<(String, String)> = {
        let mut st = tx.prepare("SELECT scope, preset FROM net_presets ORDER BY scope")?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    for (scope, preset) in scopes {
        type Words = (
            i64,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            bool,
        );
        let rows: Vec<Words> = {
            let mut st = tx.prepare(
                "SELECT id, action, host, port, method, path, private_address FROM net_rules
                 WHERE preset_set IS NULL AND source LIKE 'preset:%'
                 AND ((?1 = '' AND sandbox IS NULL) OR sandbox = ?1) ORDER BY id",
            )?;
            st.query_map([&scope], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        let private: Vec<String> = rows.iter().map(|r| r.6.to_string()).collect();
        let key = set_key(
            &preset,
            rows.iter().zip(&private).map(|(r, p)| {
                [
                    r.1.as_str(),
                    r.2.as_str(),
                    r.3.as_str(),
                    r.4.as_deref().unwrap_or_default(),
                    r.5.as_deref().unwrap_or_default(),
                    p.as_str(),
                ]
            }),
        );
        let ask_unlisted = rows
            .iter()
            .any(|r| r.1 == "ask" && r.2 == "**" && r.3 == "any");
        let set = match find_set(tx, &key)? {
            Some(set) => {
                for r in &rows {
                    tx.execute("DELETE FROM net_rules WHERE id = ?1", [r.0])?;
                }
                set
            }
            None => {
                let set = new_set(tx, &preset, ask_unlisted, &key)?;
                for r in &rows {
                    tx.execute(
                        "UPDATE net_rules SET sandbox = NULL, preset_set = ?2 WHERE id = ?1",
                        params![r.0, set],
                    )?;
                }
                set
            }
        };
        tx.execute(
            "UPDATE net_presets SET set_id = ?2 WHERE scope = ?1",
            params![scope, set],
        )?;
    }
    Ok(())
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
    let owner = match scope {
        Scope::Sandbox(n) => Some(n.as_str()),
        Scope::Global | Scope::Preset(_) => None,
    };
    for r in rules {
        st.execute(params![
            owner,
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

/// All rule rows (a preset's once), or those for one sandbox (global, its own, and its
/// presets'), ordered by id.
fn load_rows(db: &Connection, sandbox: Option<&str>) -> rusqlite::Result<Vec<RuleRow>> {
    let sql = match sandbox {
        Some(_) => {
            "SELECT r.id, r.sandbox, r.action, r.host, r.port, r.method, r.path, r.source,
                    r.private_address, s.preset
             FROM net_rules r LEFT JOIN net_preset_sets s ON s.id = r.preset_set
             WHERE (r.preset_set IS NULL AND (r.sandbox IS NULL OR r.sandbox = ?1))
                OR r.preset_set IN (SELECT set_id FROM net_presets WHERE scope = ?1 OR scope = '')
             ORDER BY r.id"
        }
        // Every rule (`?1` is NULL here; one parameter list serves both queries).
        None => {
            "SELECT r.id, r.sandbox, r.action, r.host, r.port, r.method, r.path, r.source,
                    r.private_address, s.preset
             FROM net_rules r LEFT JOIN net_preset_sets s ON s.id = r.preset_set
             WHERE ?1 IS NULL ORDER BY r.id"
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
            preset: r.get(9)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
