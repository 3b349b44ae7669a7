//! The encrypted secrets file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::services::Injection;

/// A secret's value: zeroed when dropped, never printed, serialised only into the encrypted
/// store.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Wraps `value`.
    pub fn new(value: String) -> SecretValue {
        SecretValue(Zeroizing::new(value))
    }

    /// The value, for the proxy to write into a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(redacted)")
    }
}

/// Where a secret applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every sandbox.
    Global,
    /// One sandbox (it overrides a global secret of the same name).
    Sandbox(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Sandbox(n) => write!(f, "sandbox {n}"),
        }
    }
}

/// One stored secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Its name (a service name, or the user's name for a custom secret).
    pub name: String,
    /// Where it applies.
    pub scope: Scope,
    /// The built-in service it is for, if any.
    pub service: Option<String>,
    /// Variables set to the placeholder inside the sandbox.
    pub env: Vec<String>,
    /// Where and how the proxy puts it.
    pub inject: Vec<Injection>,
    /// What the sandbox sees instead of the value.
    pub placeholder: String,
    /// The value.
    pub value: SecretValue,
}

/// What `ls` shows: everything but the value.
#[derive(Debug, Clone, Serialize)]
pub struct EntryInfo {
    /// Name.
    pub name: String,
    /// Scope (`global` or `sandbox NAME`).
    pub scope: String,
    /// Built-in service.
    pub service: Option<String>,
    /// Bound hosts.
    pub hosts: Vec<String>,
    /// Variables set inside.
    pub env: Vec<String>,
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// an I/O error on one of the store's files
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// the file is not a secrets store, or the key does not open it
    #[error(
        "{path} cannot be decrypted with the key in {key} (a different or damaged key); nothing was changed"
    )]
    Decrypt {
        /// The store.
        path: PathBuf,
        /// Where its key is.
        key: KeyHome,
    },
    /// the OS keyring that holds the store's key cannot be used now
    #[error(
        "{path} keeps its key in {key}, which cannot be used now ({message}); run paddock where that keyring is unlocked (a desktop session), or remove the store to start over"
    )]
    Keyring {
        /// The store.
        path: PathBuf,
        /// Where its key is.
        key: KeyHome,
        /// What the keyring said.
        message: String,
    },
    /// a file is readable by others
    #[error("{0} is readable by other users; `chmod 600` it (or remove it to start over)")]
    Permissions(PathBuf),
}

/// The store's first bytes when its key is in a file.
const MAGIC: &[u8] = b"paddock-secrets-v1\n";
/// The store's first bytes when its key is in the OS keyring.
const MAGIC_KEYRING: &[u8] = b"paddock-secrets-v1-keyring\n";

/// The keyring service name the store's key is kept under.
const KEYRING_SERVICE: &str = "paddock";

/// Where the key that encrypts the store is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyHome {
    /// A file readable only by its owner.
    File(PathBuf),
    /// The OS keyring (the Secret Service on Linux), under service `paddock` and this account.
    Keyring(String),
}

impl std::fmt::Display for KeyHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyHome::File(p) => write!(f, "{}", p.display()),
            KeyHome::Keyring(account) => write!(
                f,
                "the OS keyring (service {KEYRING_SERVICE}, account {account:?})"
            ),
        }
    }
}

/// The secrets file and its key.
#[derive(Debug, Clone)]
pub struct SecretStore {
    path: PathBuf,
    key: PathBuf,
    /// The keyring account a new store's key goes to, when the OS keyring may be used.
    keyring: Option<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether the OS keyring answers for `account` (it has the entry, or could hold it).
fn keyring_answers(account: &str) -> bool {
    keyring::Entry::new(KEYRING_SERVICE, account)
        .is_ok_and(|e| matches!(e.get_secret(), Ok(_) | Err(keyring::Error::NoEntry)))
}

/// A fresh placeholder for secret `name`: recognisable, worthless, unique.
pub fn placeholder_for(name: &str) -> String {
    let key = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let hex: String = key.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("paddock-placeholder-{name}-{hex}")
}

fn owner_only(path: &Path) -> Result<(), StoreError> {
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(StoreError::Permissions(path.to_owned()));
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

impl SecretStore {
    /// The store at `path`, encrypted with the key in the file `key` (made on first write).
    pub fn new(path: PathBuf, key: PathBuf) -> SecretStore {
        SecretStore {
            path,
            key,
            keyring: None,
        }
    }

    /// The default places: `secrets.enc` in `state_dir`. A new store's key goes to the OS
    /// keyring when one answers (the Secret Service on the session bus) and no key file is
    /// named or already there; otherwise to `$PADDOCK_SECRET_KEY`, else
    /// `$XDG_CONFIG_HOME/paddock/secrets.key`, else `~/.config/paddock/secrets.key`.
    /// `PADDOCK_KEYRING=off` keeps the key in the file. A store, once written, records where
    /// its key is.
    pub fn at_default(state_dir: &Path) -> SecretStore {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let named = var("PADDOCK_SECRET_KEY");
        let keyring_off = std::env::var("PADDOCK_KEYRING").is_ok_and(|v| v == "off");
        let key = named.clone().unwrap_or_else(|| {
            var("XDG_CONFIG_HOME")
                .or_else(|| var("HOME").map(|h| h.join(".config")))
                .unwrap_or_else(|| PathBuf::from("/root/.config"))
                .join("paddock/secrets.key")
        });
        let path = state_dir.join("secrets.enc");
        let keyring =
            (named.is_none() && !keyring_off).then(|| format!("secrets key of {}", path.display()));
        SecretStore { path, key, keyring }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the key of this store is, or would go on a first write.
    pub fn key_home(&self) -> KeyHome {
        match fs::read(&self.path) {
            Ok(bytes) if bytes.starts_with(MAGIC_KEYRING) => {
                KeyHome::Keyring(self.keyring_account())
            }
            Ok(_) => KeyHome::File(self.key.clone()),
            Err(_) => match &self.keyring {
                Some(account) if !self.key.exists() && keyring_answers(account) => {
                    KeyHome::Keyring(account.clone())
                }
                _ => KeyHome::File(self.key.clone()),
            },
        }
    }

    fn keyring_account(&self) -> String {
        self.keyring
            .clone()
            .unwrap_or_else(|| format!("secrets key of {}", self.path.display()))
    }

    fn cipher(&self, home: &KeyHome, create: bool) -> Result<XChaCha20Poly1305, StoreError> {
        let bytes = match home {
            KeyHome::File(file) => {
                if !file.exists() && create {
                    let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                    write_private(file, key.as_slice())?;
                }
                owner_only(file)?;
                Zeroizing::new(fs::read(file).map_err(io(file))?)
            }
            KeyHome::Keyring(account) => {
                let failed = |e: keyring::Error| StoreError::Keyring {
                    path: self.path.clone(),
                    key: home.clone(),
                    message: e.to_string(),
                };
                let entry = keyring::Entry::new(KEYRING_SERVICE, account).map_err(failed)?;
                match entry.get_secret() {
                    Ok(b) => Zeroizing::new(b),
                    Err(keyring::Error::NoEntry) if create => {
                        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                        entry.set_secret(key.as_slice()).map_err(failed)?;
                        Zeroizing::new(key.to_vec())
                    }
                    Err(e) => return Err(failed(e)),
                }
            }
        };
        if bytes.len() != 32 {
            return Err(StoreError::Decrypt {
                path: self.path.clone(),
                key: home.clone(),
            });
        }
        Ok(XChaCha20Poly1305::new(Key::from_slice(&bytes)))
    }

    /// Every entry, decrypted (empty when there is no store yet).
    pub fn load(&self) -> Result<Vec<Entry>, StoreError> {
        if !self.path.exists() {
            return Ok(vec![]);
        }
        owner_only(&self.path)?;
        let bytes = fs::read(&self.path).map_err(io(&self.path))?;
        let (home, rest) = match bytes.strip_prefix(MAGIC_KEYRING) {
            Some(rest) => (KeyHome::Keyring(self.keyring_account()), rest),
            None => (KeyHome::File(self.key.clone()), {
                bytes.strip_prefix(MAGIC).unwrap_or_default()
            }),
        };
        let bad = || StoreError::Decrypt {
            path: self.path.clone(),
            key: home.clone(),
        };
        if rest.len() < 24 {
            return Err(bad());
        }
        let (nonce, sealed) = rest.split_at(24);
        let cipher = self.cipher(&home, false)?;
        let plain = Zeroizing::new(
            cipher
                .decrypt(XNonce::from_slice(nonce), sealed)
                .map_err(|_| bad())?,
        );
        serde_json::from_slice(&plain).map_err(|_| bad())
    }

    fn save(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let home = self.key_home();
        let cipher = self.cipher(&home, true)?;
        let plain = Zeroizing::new(serde_json::to_vec(entries).unwrap_or_default());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(&nonce, plain.as_slice())
            .map_err(|_| StoreError::Decrypt {
                path: self.path.clone(),
                key: home.clone(),
            })?;
        let mut out = match home {
            KeyHome::Keyring(_) => MAGIC_KEYRING.to_vec(),
            KeyHome::File(_) => MAGIC.to_vec(),
        };
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        write_private(&self.path, &out)
    }

    /// Holds the store's lock (one writer at a time) until dropped.
    fn lock(&self) -> Result<fs::File, StoreError> {
        let path = self.path.with_extension("lock");
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            StoreError::Io {
                path: path.clone(),
                source: e.into(),
            }
        })?;
        Ok(f)
    }

    /// Adds or replaces the entry with the same name and scope (a replaced secret keeps its
    /// placeholder, so running sandboxes stay valid).
    pub fn set(&self, mut entry: Entry) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut all = self.load()?;
        if let Some(old) = all
            .iter()
            .find(|e| e.name == entry.name && e.scope == entry.scope)
        {
            entry.placeholder = old.placeholder.clone();
        }
        all.retain(|e| !(e.name == entry.name && e.scope == entry.scope));
        all.push(entry);
        self.save(&all)
    }

    /// Removes the entry; false when there was none.
    pub fn remove(&self, name: &str, scope: &Scope) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        let mut all = self.load()?;
        let before = all.len();
        all.retain(|e| !(e.name == name && &e.scope == scope));
        if all.len() == before {
            return Ok(false);
        }
        self.save(&all)?;
        Ok(true)
    }

    /// Removes every secret scoped to `sandbox` (it is being removed: a later sandbox of the
    /// same name must not inherit them); how many there were.
    pub fn remove_sandbox(&self, sandbox: &str) -> Result<usize, StoreError> {
        if !self.path.exists() {
            return Ok(0);
        }
        let _lock = self.lock()?;
        let mut all = self.load()?;
        let before = all.len();
        all.retain(|e| e.scope != Scope::Sandbox(sandbox.to_owned()));
        let gone = before - all.len();
        if gone > 0 {
            self.save(&all)?;
        }
        Ok(gone)
    }

    /// What applies to `sandbox`: its own secrets, and the global ones it does not override.
    pub fn for_sandbox(&self, sandbox: &str) -> Result<Vec<Entry>, StoreError> {
        let all = self.load()?;
        let own: Vec<Entry> = all
            .iter()
            .filter(|e| e.scope == Scope::Sandbox(sandbox.to_owned()))
            .cloned()
            .collect();
        let mut out = own.clone();
        out.extend(
            all.into_iter()
                .filter(|e| e.scope == Scope::Global && !own.iter().any(|o| o.name == e.name)),
        );
        Ok(out)
    }

    /// Everything but the values.
    pub fn list(&self) -> Result<Vec<EntryInfo>, StoreError> {
        Ok(self
            .load()?
            .into_iter()
            .map(|e| EntryInfo {
                scope: e.scope.to_string(),
                hosts: e.inject.iter().map(|i| i.host().to_owned()).collect(),
                name: e.name,
                service: e.service,
                env: e.env,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, scope: Scope, value: &str) -> Entry {
        Entry {
            name: name.into(),
            scope,
            service: None,
            env: vec!["X_TOKEN".into()],
            inject: vec![Injection::Placeholder {
                host: "api.example.com".into(),
            }],
            placeholder: placeholder_for(name),
            value: SecretValue::new(value.into()),
        }
    }

    #[test]
    fn values_are_encrypted_at_rest_and_scoped() {
        let t = tempfile::tempdir().unwrap();
        let s = SecretStore::new(t.path().join("data/secrets.enc"), t.path().join("cfg/key"));
        s.set(entry("a", Scope::Global, "global-value-123"))
            .unwrap();
        s.set(entry("a", Scope::Sandbox("box".into()), "box-value-456"))
            .unwrap();
        s.set(entry("b", Scope::Global, "b-value-789")).unwrap();
        let raw = fs::read(s.path()).unwrap();
        for v in ["global-value-123", "box-value-456", "b-value-789"] {
            assert!(
                !raw.windows(v.len()).any(|w| w == v.as_bytes()),
                "{v} in clear"
            );
        }
        for p in [s.path().to_owned(), t.path().join("cfg/key")] {
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let for_box = s.for_sandbox("box").unwrap();
        let a = for_box.iter().find(|e| e.name == "a").unwrap();
        assert_eq!(a.value.expose(), "box-value-456");
        assert_eq!(for_box.len(), 2);
        assert_eq!(
            s.for_sandbox("other").unwrap()[0].value.expose(),
            "global-value-123"
        );
        // Replacing keeps the placeholder; removing removes one scope only.
        let placeholder = |s: &SecretStore| {
            s.for_sandbox("other")
                .unwrap()
                .into_iter()
                .find(|e| e.name == "a")
                .unwrap()
                .placeholder
        };
        let before = placeholder(&s);
        s.set(entry("a", Scope::Global, "new")).unwrap();
        assert_eq!(placeholder(&s), before);
        assert!(s.remove("a", &Scope::Global).unwrap());
        assert!(!s.remove("a", &Scope::Global).unwrap());
        assert_eq!(s.list().unwrap().len(), 2);
        assert!(!format!("{:?}", s.load().unwrap()).contains("b-value-789"));
    }

    #[test]
    fn a_wrong_key_or_open_permissions_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let s = SecretStore::new(t.path().join("secrets.enc"), t.path().join("key"));
        s.set(entry("a", Scope::Global, "v")).unwrap();
        let other = SecretStore::new(t.path().join("secrets.enc"), t.path().join("key2"));
        write_private(&t.path().join("key2"), &[7u8; 32]).unwrap();
        assert!(matches!(other.load(), Err(StoreError::Decrypt { .. })));
        fs::set_permissions(s.path(), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(s.load(), Err(StoreError::Permissions(_))));
    }
}
