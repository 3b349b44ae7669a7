//! Paddock's credential store. Secrets stay on the host: the egress proxy writes them into
//! requests to the hosts they are bound to, and the sandbox sees only placeholders.
//!
//! The store is one file (`secrets.enc` in Paddock's state directory), encrypted with
//! XChaCha20-Poly1305 under a key kept in a separate file (`secrets.key` in the user's config
//! directory), both readable by their owner only. Values live in [`SecretValue`], which zeroes
//! its memory when dropped and never prints.

mod services;
mod store;

pub use services::{Injection, Service, find_service, services};
pub use store::{Entry, EntryInfo, Scope, SecretStore, SecretValue, StoreError, placeholder_for};

/// Reads a secret from the terminal without echo, or from stdin when it is not a terminal (one
/// line; the trailing newline is dropped). Never from arguments.
pub fn read_secret(prompt: &str) -> std::io::Result<SecretValue> {
    use std::io::{BufRead, Write};
    let stdin = rustix::stdio::stdin();
    let tty = rustix::termios::isatty(stdin);
    let saved = if tty {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let old = rustix::termios::tcgetattr(stdin)?;
        let mut quiet = old.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &quiet)?;
        Some(old)
    } else {
        None
    };
    let mut line = zeroize::Zeroizing::new(String::new());
    let read = std::io::stdin().lock().read_line(&mut line);
    if let Some(old) = saved {
        let _ = rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &old);
        eprintln!();
    }
    read?;
    let value = line.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the secret is empty",
        ));
    }
    Ok(SecretValue::new(value.to_owned()))
}
