//! What went wrong, as every front end needs it: a kind it maps to an exit status or an HTTP
//! status, and a message with its causes.

use std::error::Error as StdError;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// the request is invalid: nothing was done
    #[error("{0}")]
    Invalid(String),
    /// what the request names does not exist
    #[error("{0}")]
    NotFound(String),
    /// the request conflicts with the sandbox's state (running, already there)
    #[error("{0}")]
    Conflict(String),
    /// a stop signal ended the operation
    #[error("{message}")]
    Interrupted {
        /// What was interrupted.
        message: String,
        /// The signal.
        signal: i32,
    },
    /// the sandbox could not be started or run
    #[error(transparent)]
    Supervisor(#[from] paddock_supervisor::SupervisorError),
    /// a part below failed (the state store, a backend, the file system)
    #[error(transparent)]
    Below(Box<dyn StdError + Send + Sync>),
    /// anything else
    #[error("{what}")]
    Failed {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
}

/// The engine's results.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// A failure with no cause below it.
    pub fn failed(what: impl Into<String>) -> EngineError {
        EngineError::Failed {
            what: what.into(),
            source: None,
        }
    }

    /// A stable, machine-readable name of the kind (an API's error code).
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Invalid(_) => "invalid",
            EngineError::NotFound(_) => "not_found",
            EngineError::Conflict(_) => "conflict",
            EngineError::Interrupted { .. } => "interrupted",
            EngineError::Supervisor(_) => "start_failed",
            EngineError::Below(_) | EngineError::Failed { .. } => "internal",
        }
    }
}

/// Bad input: the message says what to do instead.
pub fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::Invalid(message.into())
}

/// Adds what was being done to an error, as the cause's context.
pub trait Context<T> {
    /// With a fixed description.
    fn context(self, what: impl Into<String>) -> Result<T>;
    /// With a description made only on failure.
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: StdError + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| EngineError::Failed {
            what: what.into(),
            source: Some(Box::new(e)),
        })
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| EngineError::Failed {
            what: what().into(),
            source: Some(Box::new(e)),
        })
    }
}

/// The state store's errors: a request it refuses as invalid is the caller's to mend, the rest
/// a failure below.
impl From<paddock_store::StoreError> for EngineError {
    fn from(e: paddock_store::StoreError) -> EngineError {
        use paddock_store::StoreError as S;
        match e {
            S::Invalid(why) => EngineError::Invalid(why),
            e => EngineError::Below(Box::new(e)),
        }
    }
}

/// Errors of the parts below, each a failure under its own message.
macro_rules! failed_from {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for EngineError {
            fn from(e: $t) -> EngineError {
                EngineError::Below(Box::new(e))
            }
        }
    )*};
}

failed_from!(
    std::io::Error,
    serde_json::Error,
    paddock_core::DirsError,
    paddock_core::ImageStoreError,
    paddock_core::BackendError,
    paddock_core::LockError,
    paddock_supervisor::SelectError,
    paddock_secrets::StoreError,
    paddock_image::BuildError,
);
