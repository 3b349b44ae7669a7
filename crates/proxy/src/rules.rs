//! The rules a running proxy decides with, re-read when they change.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use paddock_policy::net::StoredRule;
use rusqlite::Connection;

use crate::channel::{self, RulesReply};
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
    Remote(Mutex<Remote>),
}

/// Rules asked of the privileged part over a stream ([`crate::channel`]).
#[derive(Debug)]
struct Remote {
    stream: UnixStream,
    generation: i64,
    rules: Arc<Vec<StoredRule>>,
    /// A request or answer failed part-way: the stream may be out of step, so nothing read
    /// from it is trusted again.
    broken: bool,
}

impl Remote {
    /// Asks for the rules if they changed; `Err` says why none can be trusted.
    fn refresh(&mut self) -> Result<(), String> {
        if self.broken {
            return Err("the rules channel failed earlier".into());
        }
        self.broken = true;
        self.stream
            .write_all(&self.generation.to_le_bytes())
            .map_err(|e| format!("cannot ask for the rules: {e}"))?;
        let reply: RulesReply = channel::receive(&mut self.stream, channel::MAX_FRAME)
            .map_err(|e| format!("no answer with the rules: {e}"))?;
        if let Some(rows) = reply.rows {
            let rules = rows
                .into_iter()
                .map(store::parse_row)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a rule does not parse: {e:?}"))?;
            self.rules = Arc::new(rules);
            self.generation = reply.generation;
        }
        self.broken = false;
        Ok(())
    }
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

    /// The rules the privileged part answers on `stream` ([`channel::serve_rules`]), asked
    /// for on every request (one round trip; the rules themselves only when they changed).
    pub fn remote(stream: UnixStream) -> RuleSource {
        // A stuck answer denies rather than holding requests for ever.
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
        RuleSource(Arc::new(Inner::Remote(Mutex::new(Remote {
            stream,
            generation: -1,
            rules: Arc::new(Vec::new()),
            broken: false,
        }))))
    }

    /// The rules now. If the database cannot be read, no rules (everything is denied).
    pub fn current(&self) -> Arc<Vec<StoredRule>> {
        match &*self.0 {
            Inner::Fixed(r) => r.clone(),
            Inner::Remote(remote) => {
                let Ok(mut remote) = remote.lock() else {
                    return Arc::new(Vec::new());
                };
                match remote.refresh() {
                    Ok(()) => remote.rules.clone(),
                    Err(e) => {
                        tracing::error!("{e}; denying all");
                        Arc::new(Vec::new())
                    }
                }
            }
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
