//! The requests `ask` rules hold, and the user's answers to them.
//!
//! A running sandbox's proxy holds a request an `ask` rule decides; its supervisor records it
//! in the state store ([`paddock_store::AskRow`]) and delivers the answer written here. An
//! approval either lets the waiting requests through once, or adds a rule that says exactly
//! what it grants (the request's host and port, and its method and path where they were
//! visible, unless the approval widens or narrows that), recorded with its origin. Nothing
//! inside a sandbox reaches these operations: they are the user's.

pub use paddock_store::{Approval, Lasting, grant_rule};
use paddock_store::{AskRow, StoreError};
use serde::Serialize;

use crate::{EngineError, Result};

/// What an answer did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Answered {
    /// The request, as it waited.
    pub request: AskRow,
    /// Allowed.
    pub allowed: bool,
    /// The rule the answer made, if it made one.
    #[schema(value_type = Option<crate::policy::RuleView>)]
    pub rule: Option<crate::policy::RuleView>,
}

fn no_ask(e: StoreError) -> EngineError {
    match e {
        StoreError::NoAsk(_) => EngineError::NotFound(e.to_string()),
        StoreError::Invalid(why) => EngineError::Invalid(why),
        e => e.into(),
    }
}

fn view(a: paddock_store::Answered) -> Answered {
    Answered {
        request: a.request,
        allowed: a.allowed,
        rule: a.rule.as_ref().map(Into::into),
    }
}

impl crate::Engine {
    /// The requests waiting for an answer: every sandbox's, or one's.
    pub fn pending(&self, sandbox: Option<&str>) -> Result<Vec<AskRow>> {
        if let Some(s) = sandbox {
            crate::policy::scope_of(Some(s))?;
        }
        Ok(self.store.pending(sandbox)?)
    }

    /// Approves request `id`: once, or with a rule (for the sandbox's run, or always).
    pub fn approve(&self, id: i64, a: &Approval) -> Result<Answered> {
        self.store.approve(id, a).map(view).map_err(no_ask)
    }

    /// Denies request `id`; `always` adds a rule that denies its host and port from now on.
    pub fn deny_request(&self, id: i64, always: bool) -> Result<Answered> {
        self.store
            .deny_request(id, always)
            .map(view)
            .map_err(no_ask)
    }
}
