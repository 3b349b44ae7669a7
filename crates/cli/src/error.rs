//! Errors as the user sees them: one line, then the causes, and a documented exit status.

/// Exit status for invalid input (bad flag values, missing paths).
pub const EXIT_USAGE: i32 = 2;
/// Exit status when the sandbox could not be started (a layer failed, the backend is unusable).
pub const EXIT_START: i32 = 125;
/// Exit status for other failures of paddock itself.
pub const EXIT_FAILURE: i32 = 1;

/// An error with its exit status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    /// The one-line message.
    pub message: String,
    /// Exit status.
    pub code: i32,
}

/// Invalid input: nothing was created.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UserError {
        message: message.into(),
        code: EXIT_USAGE,
    }
    .into()
}

/// A start a signal interrupted: the exit status is 128 + the signal, as a shell reports it.
pub fn interrupted(message: impl Into<String>, signal: i32) -> anyhow::Error {
    UserError {
        message: message.into(),
        code: 128 + signal,
    }
    .into()
}

/// Prints `e` and its causes; returns the exit status.
pub fn report(e: &anyhow::Error) -> i32 {
    eprintln!("paddock: error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if let Some(u) = e.downcast_ref::<UserError>() {
        return u.code;
    }
    let supervisor = e
        .chain()
        .find_map(|c| c.downcast_ref::<paddock_supervisor::SupervisorError>());
    if let Some(s) = supervisor {
        return s.signal().map_or(EXIT_START, |sig| 128 + sig);
    }
    EXIT_FAILURE
}
