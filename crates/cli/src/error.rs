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

/// Prints `e` and its causes; returns the exit status.
pub fn report(e: &anyhow::Error) -> i32 {
    eprintln!("paddock: error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if let Some(u) = e.downcast_ref::<UserError>() {
        return u.code;
    }
    if let Some(x) = e.downcast_ref::<paddock_engine::EngineError>() {
        use paddock_engine::EngineError as E;
        match x {
            E::Invalid(_) | E::NotFound(_) | E::Conflict(_) => return EXIT_USAGE,
            E::Interrupted { signal, .. } => return 128 + signal,
            E::Supervisor(s) => return s.signal().map_or(EXIT_START, |sig| 128 + sig),
            E::Below(_) | E::Failed { .. } => {}
        }
    }
    let supervisor = e
        .chain()
        .find_map(|c| c.downcast_ref::<paddock_supervisor::SupervisorError>());
    if let Some(s) = supervisor {
        return s.signal().map_or(EXIT_START, |sig| 128 + sig);
    }
    EXIT_FAILURE
}

/// The engine's notes, on this terminal's stderr.
#[derive(Debug, Clone, Copy)]
pub struct Terminal;

impl paddock_engine::Reporter for Terminal {
    fn note(&self, text: &str) {
        eprintln!("paddock: {text}");
    }

    fn interactive(&self) -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    }

    fn terminal(&self) -> bool {
        use std::io::IsTerminal;
        std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal()
            && std::io::stderr().is_terminal()
    }
}
