//! The state directory the crate owns: `meta.json` (which workspace), `seen.json` (what the
//! host looked like when each upper entry was first seen), `base/` (merge bases, by content
//! hash), `journal` (temporary names an apply may leave behind) and `lock`.
//!
//! Files here are written to a temporary name, synced and renamed, so a kill leaves either the
//! old or the new version.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, show_path};
use crate::fsys::{self, Kind, Stat};
use crate::relpath::RelPath;

/// Host files up to this size get a merge base copy.
pub(crate) const MAX_BASE: u64 = 16 * 1024 * 1024;

/// Format version of the state files.
const VERSION: u32 = 1;

/// `meta.json`: the workspace this state belongs to.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Meta {
    pub version: u32,
    pub dev: u64,
    pub ino: u64,
}

/// What `lstat` said of a host path.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostStat {
    pub ino: u64,
    pub size: u64,
    pub ctime_ns: i64,
    pub mtime_ns: i64,
    pub mode: u32,
}

impl From<&Stat> for HostStat {
    fn from(st: &Stat) -> HostStat {
        HostStat {
            ino: st.ino,
            size: st.size,
            ctime_ns: st.ctime_ns,
            mtime_ns: st.mtime_ns,
            mode: st.mode,
        }
    }
}

/// The record of one path (see the crate docs on conflicts).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    /// The host changed the path while the run that made the upper entry was going on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub during_run: bool,
    /// The host's entry when first seen (or when last applied); `None`: absent.
    #[serde(default)]
    pub host: Option<HostStat>,
    /// The merge base: hash of a copy in `base/` of the host file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Set by an apply that left the upper entry in place: the upper entry then (a stat of it).
    /// While both it and the host are as recorded, the path has no change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<HostStat>,
}

/// `seen.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeenFile {
    version: u32,
    paths: BTreeMap<String, Record>,
}

/// The records, by path.
pub(crate) type Seen = BTreeMap<RelPath, Record>;

/// Why a change conflicts with the host, given its record and the host's entry now, if it does.
/// Directories compare by identity and mode only (adding a file in one changes its times), except
/// a directory being deleted, whose mtime counts too (something was added or removed in it).
pub(crate) fn conflict(
    record: Option<&Record>,
    now: Option<&Stat>,
    deleting_dir: bool,
) -> Option<String> {
    let record = record?;
    if record.during_run {
        return Some("changed on the host while the sandbox ran".to_owned());
    }
    match (&record.host, now) {
        (None, None) => None,
        (None, Some(_)) => Some("the host created it after the sandbox first saw it".to_owned()),
        (Some(_), None) => Some("the host deleted it after the sandbox first saw it".to_owned()),
        (Some(then), Some(now)) => {
            let now = HostStat::from(now);
            let type_bits = |m: u32| m & 0o170_000;
            let same = if type_bits(then.mode) != type_bits(now.mode) {
                return Some("the host replaced it with another type of file".to_owned());
            } else if type_bits(now.mode) == 0o040_000 {
                then.ino == now.ino
                    && then.mode == now.mode
                    && (!deleting_dir || then.mtime_ns == now.mtime_ns)
            } else {
                *then == now
            };
            (!same).then(|| "changed on the host since the sandbox first saw it".to_owned())
        }
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub(crate) struct State {
    dir: PathBuf,
}

impl State {
    /// Creates the directory (mode 0700) when missing.
    pub(crate) fn create(dir: &Path) -> Result<State, Error> {
        let what = || {
            format!(
                "cannot create the review state directory {}",
                show_path(dir)
            )
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(what(), e))?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("base"))
            .map_err(|e| Error::io(what(), e))?;
        Ok(State {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Takes the state's exclusive lock (held while the returned descriptor lives).
    pub(crate) fn lock(&self) -> Result<OwnedFd, Error> {
        let p = self.path("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc_nofollow())
            .open(&p)
            .map_err(|e| Error::io(format!("cannot open {}", show_path(&p)), e))?;
        rustix::fs::flock(&f, FlockOperation::LockExclusive)
            .map_err(|e| Error::io(format!("cannot lock {}", show_path(&p)), e))?;
        Ok(OwnedFd::from(f))
    }

    /// `meta.json`, `None` when missing.
    pub(crate) fn meta(&self) -> Result<Option<Meta>, Error> {
        self.read_json("meta.json")
    }

    pub(crate) fn write_meta(&self, meta: &Meta) -> Result<(), Error> {
        self.write_json("meta.json", meta)
    }

    /// The records (empty when there are none yet).
    pub(crate) fn seen(&self) -> Result<Seen, Error> {
        let Some(file) = self.read_json::<SeenFile>("seen.json")? else {
            return Ok(Seen::new());
        };
        Ok(file
            .paths
            .into_iter()
            .filter_map(|(k, v)| Some((RelPath::from_key(&k)?, v)))
            .collect())
    }

    /// Saves the records and removes base copies no record names.
    pub(crate) fn save_seen(&self, seen: &Seen) -> Result<(), Error> {
        let file = SeenFile {
            version: VERSION,
            paths: seen.iter().map(|(k, v)| (k.key(), v.clone())).collect(),
        };
        self.write_json("seen.json", &file)?;
        let keep: HashSet<&str> = seen.values().filter_map(|r| r.base.as_deref()).collect();
        let base = self.path("base");
        if let Ok(entries) = fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name();
                if !keep.contains(name.to_string_lossy().as_ref()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// Copies a host file (at most [`MAX_BASE`] bytes) into `base/`; returns its hash, `None`
    /// when it is larger.
    pub(crate) fn store_base(&self, f: &mut File) -> Result<Option<String>, Error> {
        let what = "cannot read a host file for its merge base";
        let Some(bytes) = fsys::read_limited(f, MAX_BASE).map_err(|e| Error::io(what, e))? else {
            return Ok(None);
        };
        self.store_base_bytes(&bytes).map(Some)
    }

    /// Stores `bytes` in `base/`; returns the hash naming it.
    pub(crate) fn store_base_bytes(&self, bytes: &[u8]) -> Result<String, Error> {
        let hash = fsys::hex(&Sha256::digest(bytes));
        let target = self.path("base").join(&hash);
        if !target.exists() {
            self.write_atomic(&target, bytes)?;
        }
        Ok(hash)
    }

    /// The content of a merge base.
    pub(crate) fn base(&self, hash: &str) -> Result<Option<Vec<u8>>, Error> {
        if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        match fs::read(self.path("base").join(hash)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("cannot read a merge base", e)),
        }
    }

    /// Opens the journal for an apply: first removes every leftover temporary it lists (a
    /// regular file or symlink only, never following a symlink), then empties it.
    pub(crate) fn journal(&self, root: BorrowedFd<'_>) -> Result<Journal, Error> {
        let p = self.path("journal");
        let what = || format!("cannot open the apply journal {}", show_path(&p));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc_nofollow())
            .open(&p)
            .map_err(|e| Error::io(what(), e))?;
        let mut lines = Vec::new();
        for line in BufReader::new(&mut file).split(b'\n') {
            lines.push(line.map_err(|e| Error::io(what(), e))?);
        }
        for line in lines {
            let Ok(line) = std::str::from_utf8(&line) else {
                continue;
            };
            let (is_dir, key) = match line.split_once(' ') {
                Some(("d", key)) => (true, key),
                Some(("f", key)) => (false, key),
                _ => continue,
            };
            let Some(rel) = RelPath::from_key(key) else {
                continue;
            };
            remove_temporary(root, &rel, is_dir)
                .map_err(|e| Error::io(format!("cannot remove the leftover temporary {rel}"), e))?;
        }
        file.set_len(0).map_err(|e| Error::io(what(), e))?;
        file.rewind().map_err(|e| Error::io(what(), e))?;
        file.sync_all().map_err(|e| Error::io(what(), e))?;
        Ok(Journal { file })
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, Error> {
        let p = self.path(name);
        let mut text = String::new();
        match File::open(&p).and_then(|mut f| f.read_to_string(&mut text)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("cannot read {}", show_path(&p)), e)),
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| Error::State { file: p, source })
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), Error> {
        let p = self.path(name);
        let text = serde_json::to_vec(value).map_err(|source| Error::State {
            file: p.clone(),
            source,
        })?;
        self.write_atomic(&p, &text)
    }

    fn write_atomic(&self, target: &Path, bytes: &[u8]) -> Result<(), Error> {
        let what = || format!("cannot write {}", show_path(target));
        let tmp = target.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc_nofollow())
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, target)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(what(), e)
        })?;
        let _ = fs::set_permissions(target, fs::Permissions::from_mode(0o600));
        Ok(())
    }
}

/// `O_NOFOLLOW` for [`OpenOptionsExt::custom_flags`].
fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Removes a leftover temporary, never through a symlink: a regular file or a symlink, or (when
/// listed as one: a directory being deleted that was renamed out of the way) a directory tree.
fn remove_temporary(root: BorrowedFd<'_>, rel: &RelPath, is_dir: bool) -> io::Result<()> {
    let (dir, name) = match fsys::open_parent(root, rel) {
        Ok(x) => x,
        // Its directory is gone or is no longer a plain directory: nothing of ours is there.
        Err(_) => return Ok(()),
    };
    match fsys::stat_at(dir.as_fd(), &name)? {
        Some(st) if !is_dir && matches!(st.kind(), Kind::File | Kind::Symlink) => {
            fsys::unlink(dir.as_fd(), &name, false)
        }
        Some(st) if is_dir && st.kind() == Kind::Dir => fsys::remove_tree(dir.as_fd(), &name),
        _ => Ok(()),
    }
}

/// The apply journal: each temporary name is listed (and synced) before the file is made or a
/// directory is renamed to it. A line is `f KEY` (a file or symlink) or `d KEY` (a directory
/// being deleted), KEY the path's [`RelPath::key`].
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
}

impl Journal {
    /// Lists `rel` (a temporary about to be created; `is_dir`: a directory renamed to it).
    pub(crate) fn add(&mut self, rel: &RelPath, is_dir: bool) -> io::Result<()> {
        let kind = if is_dir { "d" } else { "f" };
        self.file
            .write_all(format!("{kind} {}\n", rel.key()).as_bytes())?;
        self.file.sync_data()
    }

    /// Empties the journal (every temporary listed is gone).
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.sync_data()
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
