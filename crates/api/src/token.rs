//! The bearer token TCP clients present: 32 random bytes, hex, in a file only its owner reads.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header;
use subtle::ConstantTimeEq;

use crate::problem::Problem;

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// Why the token could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// reading or writing the token's file failed
    #[error("cannot use the token file {path:?}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// the system's random source failed
    #[error("cannot make a random token")]
    Random(#[source] getrandom::Error),
    /// the file is not a private regular file of this user
    #[error(
        "the token file {0:?} must be a regular file of this user's that only it can read (chmod 600)"
    )]
    NotPrivate(PathBuf),
    /// the file does not hold a token this server made
    #[error("the token file {0:?} does not hold a token (remove it to make a new one)")]
    Malformed(PathBuf),
}

/// The API's bearer token. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Reads the token at `path`, or makes one there (mode 0600) when the file does not exist.
    /// A file others can read, or that another user owns, is refused, not repaired.
    pub fn load_or_create(path: &Path) -> Result<Token, TokenError> {
        match Token::load(path) {
            Err(TokenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Token::create(path)
            }
            other => other,
        }
    }

    fn load(path: &Path) -> Result<Token, TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        // Never through a symbolic link.
        let mut file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file()
            || meta.uid() != rustix::process::geteuid().as_raw()
            || meta.mode() & 0o077 != 0
        {
            return Err(TokenError::NotPrivate(path.to_owned()));
        }
        let mut text = String::new();
        Read::by_ref(&mut file)
            .take(256)
            .read_to_string(&mut text)
            .map_err(|_| TokenError::Malformed(path.to_owned()))?;
        let text = text.trim_end_matches('\n');
        if text.len() != 2 * TOKEN_BYTES || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed(path.to_owned()));
        }
        Ok(Token(text.to_owned()))
    }

    /// Writes a new token to a private temporary file beside `path` and links it there unless
    /// another server was faster (then that one's token is used).
    fn create(path: &Path) -> Result<Token, TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = path.parent().unwrap_or(Path::new("."));
        // tempfile makes the file with mode 0600.
        let mut tmp = tempfile::Builder::new()
            .prefix(".api-token-")
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(format!("{token}\n").as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io)?;
        match tmp.persist_noclobber(path) {
            Ok(_) => Ok(Token(token)),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Token::load(path),
            Err(e) => Err(io(e.error)),
        }
    }

    /// Whether `presented` is this token, compared in constant time (the length aside).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

/// The credentials of an `Authorization: Bearer CREDENTIALS` header (the scheme's case does not
/// matter, RFC 9110 section 11.1).
pub(crate) fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let creds = rest.strip_prefix(b" ")?.trim_ascii();
    (!creds.is_empty()).then_some(creds)
}

/// Middleware: a request without the right bearer token is answered 401, before routing.
pub(crate) async fn require_token(
    State(token): State<std::sync::Arc<Token>>,
    req: Request,
    next: Next,
) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()))
        .is_some_and(|t| token.matches(t));
    if ok {
        next.run(req).await
    } else {
        Problem::unauthorized("this request needs the server's token: Authorization: Bearer TOKEN")
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn bearer_header() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"Bearer abc", Some(b"abc")),
            (b"bearer abc", Some(b"abc")),
            (b"BEARER  abc ", Some(b"abc")),
            (b"Bearer ", None),
            (b"Bearer", None),
            (b"Bearerabc", None),
            (b"Basic abc", None),
            (b"", None),
        ];
        for (header, want) in cases {
            assert_eq!(
                bearer(header),
                *want,
                "{:?}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-token");
        let first = Token::load_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(first.0.len(), 64);
        let again = Token::load_or_create(&path).unwrap();
        assert_eq!(first.0, again.0);
        assert!(first.matches(again.0.as_bytes()));
        assert!(!first.matches(b"wrong"));
        assert!(!first.matches(&again.0.as_bytes()[..63]));
        assert_eq!(format!("{first:?}"), "Token(..)");
        // The temporary file is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_readable_or_malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-token");
        std::fs::write(&path, format!("{}\n", "a".repeat(64))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Token::load_or_create(&path),
            Err(TokenError::NotPrivate(_))
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Token::load_or_create(&path).is_ok());
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            Token::load_or_create(&path),
            Err(TokenError::Malformed(_))
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            Token::load_or_create(&link),
            Err(TokenError::Io { .. })
        ));
    }
}
