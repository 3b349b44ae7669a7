//! The rules a running proxy decides with, re-read when they change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use paddock_policy::net::StoredRule;
use rusqlite::Connection;

use crate::store::{self, StoreError};

/// Where the proxy gets its rules.
#[derive(Debug, Clone)]
pub struct RuleSource(Arc<Inner>);

#[derive(Debug)]
enum Inner {
    Fixed(Arc<Vec<StoredRule>>),
    Live {
        sandbox: String,
        path: PathBuf,
        state: Mutex<Live>,
    },
}

#[derive(Debug)]
struct Live {
    db: Connection,
    generation: i64,
    rules: Arc<Vec<StoredRule>>,
}

impl RuleSource {
    /// A fixed set of rules (tests, benchmarks).
    pub fn fixed(rules: Vec<StoredRule>) -> RuleSource {
        RuleSource(Arc::new(Inner::Fixed(Arc::new(rules))))
    }

    /// The global rules and those of `sandbox` from the state database, re-read whenever any
    /// rule changes (checked on every request: one indexed read).
    pub fn live(db_path: &Path, sandbox: &str) -> Result<RuleSource, StoreError> {
        let db = store::open(db_path)?;
        let generation =
            store::generation(&db).map_err(|e| store::LoadError::Sql(e).into_store(db_path))?;
        let rules = store::load(&db, Some(sandbox)).map_err(|e| e.into_store(db_path))?;
        Ok(RuleSource(Arc::new(Inner::Live {
            sandbox: sandbox.to_owned(),
            path: db_path.to_owned(),
            state: Mutex::new(Live {
                db,
                generation,
                rules: Arc::new(rules),
            }),
        })))
    }

    /// The rules now. If the database cannot be read, no rules (everything is denied).
    pub fn current(&self) -> Arc<Vec<StoredRule>> {
        match &*self.0 {
            Inner::Fixed(r) => r.clone(),
            Inner::Live {
                sandbox,
                path,
                state,
            } => {
                let Ok(mut live) = state.lock() else {
                    return Arc::new(Vec::new());
                };
                match store::generation(&live.db) {
                    Ok(g) if g == live.generation => live.rules.clone(),
                    Ok(g) => match store::load(&live.db, Some(sandbox)) {
                        Ok(rules) => {
                            live.generation = g;
                            live.rules = Arc::new(rules);
                            live.rules.clone()
                        }
                        Err(e) => {
                            tracing::error!(
                                "rules in {} unreadable ({e:?}); denying all",
                                path.display()
                            );
                            Arc::new(Vec::new())
                        }
                    },
                    Err(e) => {
                        tracing::error!(
                            "rules in {} unreadable ({e}); denying all",
                            path.display()
                        );
                        Arc::new(Vec::new())
                    }
                }
            }
        }
    }
}
