//! The stream the review helper writes for `paddock apply --branch` and `--commits`: the
//! agent's version of the selected changes ([`Record::Change`], each followed by its content),
//! or the sandbox's git `HEAD` and the object files its layer holds ([`Record::Head`],
//! [`Record::Object`]). The CLI reads it with [`Reader`] and hands the content to the host's
//! git; nothing here runs a program.
//!
//! The helper parses bytes the sandbox wrote and is confined, but the stream is still read as
//! untrusted: every field has a bound, every path is a valid [`RelPath`], every object id and
//! object file name is checked, and data is streamed (never held whole in memory).
//!
//! Encoding: the magic [`MAGIC`], then records. A record is a tag byte and its fields; a byte
//! string is a big-endian `u32` length and the bytes (at most [`MAX_FIELD`]); a length of data
//! is a big-endian `u64`, and that many bytes follow the record. [`Record::End`] closes the
//! stream, so a truncated one is an error, not a shorter list.

use std::io::{self, Read, Write};

use crate::relpath::RelPath;

/// The stream's first bytes.
pub const MAGIC: &[u8; 8] = b"PDKEXP1\n";

/// The longest byte string a record carries.
pub const MAX_FIELD: usize = 64 * 1024;

/// What the agent's side of a change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum New {
    /// Nothing (a deletion).
    Absent,
    /// A directory (git records none: its files are changes of their own).
    Dir,
    /// A regular file; `exec`: it has an execute bit. Its content follows.
    File {
        /// Any execute bit set.
        exec: bool,
    },
    /// A symlink; its target follows as the data.
    Symlink,
}

impl New {
    fn code(self) -> u8 {
        match self {
            New::Absent => b'-',
            New::Dir => b'd',
            New::File { exec: false } => b'f',
            New::File { exec: true } => b'x',
            New::Symlink => b'l',
        }
    }

    fn from_code(c: u8) -> Option<New> {
        Some(match c {
            b'-' => New::Absent,
            b'd' => New::Dir,
            b'f' => New::File { exec: false },
            b'x' => New::File { exec: true },
            b'l' => New::Symlink,
            _ => return None,
        })
    }

    /// Whether data (content or target) follows the record.
    pub fn has_data(self) -> bool {
        matches!(self, New::File { .. } | New::Symlink)
    }
}

/// Which kind of change (the letters of `paddock diff --stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `A`: the host has nothing there.
    Added,
    /// `M`: new content.
    Modified,
    /// `D`: removed.
    Deleted,
    /// `R`: moved from [`Record::Change::from`].
    Renamed,
    /// `X`: only the execute bits (or a directory's permissions).
    Mode,
    /// `T`: another type of entry.
    TypeChanged,
}

impl Kind {
    /// The letter.
    pub fn letter(self) -> char {
        match self {
            Kind::Added => 'A',
            Kind::Modified => 'M',
            Kind::Deleted => 'D',
            Kind::Renamed => 'R',
            Kind::Mode => 'X',
            Kind::TypeChanged => 'T',
        }
    }

    fn from_letter(c: u8) -> Option<Kind> {
        Some(match c {
            b'A' => Kind::Added,
            b'M' => Kind::Modified,
            b'D' => Kind::Deleted,
            b'R' => Kind::Renamed,
            b'X' => Kind::Mode,
            b'T' => Kind::TypeChanged,
            _ => return None,
        })
    }
}

/// What kind of git object file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFile {
    /// A loose object, `objects/XX/REST` (named `XX/REST`).
    Loose,
    /// A pack, `objects/pack/pack-HEX.pack` (named `pack-HEX.pack`).
    Pack,
}

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A selected change; `len` bytes of content (a file's, or a symlink's target) follow when
    /// [`New::has_data`].
    Change {
        /// What kind.
        kind: Kind,
        /// Where (the new path of a rename).
        path: RelPath,
        /// A rename's old path.
        from: Option<RelPath>,
        /// The agent's side.
        new: New,
        /// Bytes of data that follow.
        len: u64,
    },
    /// A selected change that is not exported, and why.
    Skipped {
        /// Where.
        path: RelPath,
        /// Why (one line).
        reason: String,
    },
    /// The sandbox's `HEAD`: a full hex object id and the branch it is on (`refs/heads/...`),
    /// if any.
    Head {
        /// The commit id (40 or 64 lowercase hex digits).
        id: String,
        /// The symbolic ref `HEAD` names.
        branch: Option<String>,
    },
    /// A git object file of the layer; `len` bytes follow.
    Object {
        /// Loose or pack.
        kind: ObjectFile,
        /// `XX/REST` or `pack-HEX.pack` (checked: [`object_file_name`]).
        name: String,
        /// Bytes that follow.
        len: u64,
    },
    /// The end of the stream.
    End,
}

/// Why a stream cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Reading failed, or the stream ended early.
    #[error("the review helper's stream ended early or could not be read")]
    Io(#[from] io::Error),
    /// The stream does not start with [`MAGIC`].
    #[error("the review helper's stream is not an export stream")]
    Magic,
    /// A record is malformed.
    #[error("the review helper's stream is damaged: {0}")]
    Invalid(String),
}

/// Whether `id` is a full object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn is_object_id(id: &str) -> bool {
    matches!(id.len(), 40 | 64) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `name` is a valid object file name of `kind`: `XX/` and 38 or 62 hex digits for a
/// loose object, `pack-` 40 or 64 hex digits `.pack` for a pack.
pub fn object_file_name(kind: ObjectFile, name: &str) -> bool {
    match kind {
        ObjectFile::Loose => name.split_once('/').is_some_and(|(dir, rest)| {
            dir.len() == 2 && is_hex(dir) && matches!(rest.len(), 38 | 62) && is_hex(rest)
        }),
        ObjectFile::Pack => name
            .strip_prefix("pack-")
            .and_then(|n| n.strip_suffix(".pack"))
            .is_some_and(|h| matches!(h.len(), 40 | 64) && is_hex(h)),
    }
}

/// Whether `name` is a ref name this crate follows: `refs/...` of printable ASCII, without
/// `..`, `//`, `@{`, a trailing `/` or `.lock`, or a component starting with `.`.
pub fn is_ref_name(name: &str) -> bool {
    name.len() <= 1024
        && name.starts_with("refs/")
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"~^:?*[\\".contains(&b))
        && !name.contains("..")
        && !name.contains("@{")
        && !name.ends_with(".lock")
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.'))
}

fn put_bytes(w: &mut dyn Write, b: &[u8]) -> io::Result<()> {
    let n = u32::try_from(b.len())
        .ok()
        .filter(|n| *n as usize <= MAX_FIELD)
        .ok_or_else(|| io::Error::other("a field is longer than the stream allows"))?;
    w.write_all(&n.to_be_bytes())?;
    w.write_all(b)
}

/// Writes [`MAGIC`].
pub fn write_magic(w: &mut dyn Write) -> io::Result<()> {
    w.write_all(MAGIC)
}

/// Writes one record (its data, if any, is the caller's to write next, exactly `len` bytes).
pub fn write_record(w: &mut dyn Write, r: &Record) -> io::Result<()> {
    match r {
        Record::Change {
            kind,
            path,
            from,
            new,
            len,
        } => {
            w.write_all(&[b'C', kind.letter() as u8, new.code()])?;
            put_bytes(w, path.as_bytes())?;
            put_bytes(w, from.as_ref().map_or(&[][..], RelPath::as_bytes))?;
            w.write_all(&len.to_be_bytes())
        }
        Record::Skipped { path, reason } => {
            w.write_all(b"S")?;
            put_bytes(w, path.as_bytes())?;
            put_bytes(w, reason.as_bytes())
        }
        Record::Head { id, branch } => {
            w.write_all(b"H")?;
            put_bytes(w, id.as_bytes())?;
            put_bytes(w, branch.as_deref().unwrap_or("").as_bytes())
        }
        Record::Object { kind, name, len } => {
            w.write_all(match kind {
                ObjectFile::Loose => b"O",
                ObjectFile::Pack => b"P",
            })?;
            put_bytes(w, name.as_bytes())?;
            w.write_all(&len.to_be_bytes())
        }
        Record::End => w.write_all(b"E"),
    }
}

/// Copies exactly `len` bytes of `from` to `w` (the data of a record); fewer is an error (the
/// file shrank while it was read).
pub fn write_data(w: &mut dyn Write, from: &mut dyn Read, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut from.take(len), w)?;
    if copied != len {
        return Err(io::Error::other("the file changed while it was read"));
    }
    Ok(())
}

/// Reads a stream: [`Reader::next_record`] returns each record; the data after one is read with
/// [`Reader::data`] (or skipped by the next call to `next_record`).
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    /// Bytes of data not yet read.
    pending: u64,
    started: bool,
    ended: bool,
}

impl<R: Read> Reader<R> {
    /// A reader of the stream `inner`.
    pub fn new(inner: R) -> Reader<R> {
        Reader {
            inner,
            pending: 0,
            started: false,
            ended: false,
        }
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        let mut b = [0u8; 1];
        self.inner.read_exact(&mut b)?;
        Ok(b[0])
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let mut b = [0u8; 8];
        self.inner.read_exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let mut b = [0u8; 4];
        self.inner.read_exact(&mut b)?;
        let n = u32::from_be_bytes(b) as usize;
        if n > MAX_FIELD {
            return Err(WireError::Invalid(format!("a field of {n} bytes")));
        }
        let mut out = vec![0u8; n];
        self.inner.read_exact(&mut out)?;
        Ok(out)
    }

    fn text(&mut self, what: &str) -> Result<String, WireError> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| WireError::Invalid(format!("{what} is not UTF-8")))
    }

    fn path(&mut self) -> Result<Option<RelPath>, WireError> {
        let b = self.bytes()?;
        if b.is_empty() {
            return Ok(None);
        }
        let p = RelPath::new(b).map_err(|e| WireError::Invalid(e.to_string()))?;
        Ok(Some(p))
    }

    /// The next record; after [`Record::End`], always `End`.
    pub fn next_record(&mut self) -> Result<Record, WireError> {
        if self.ended {
            return Ok(Record::End);
        }
        if !self.started {
            let mut m = [0u8; 8];
            self.inner.read_exact(&mut m)?;
            if &m != MAGIC {
                return Err(WireError::Magic);
            }
            self.started = true;
        }
        if self.pending > 0 {
            let skipped = io::copy(&mut (&mut self.inner).take(self.pending), &mut io::sink())?;
            if skipped != self.pending {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            self.pending = 0;
        }
        let bad = |what: &str| WireError::Invalid(what.to_owned());
        let record = match self.byte()? {
            b'C' => {
                let kind = Kind::from_letter(self.byte()?).ok_or_else(|| bad("change kind"))?;
                let new = New::from_code(self.byte()?).ok_or_else(|| bad("entry type"))?;
                let path = self.path()?.ok_or_else(|| bad("a change without a path"))?;
                let from = self.path()?;
                let len = self.u64()?;
                if !new.has_data() && len != 0 {
                    return Err(bad("data after an entry that has none"));
                }
                if (kind == Kind::Renamed) != from.is_some() {
                    return Err(bad(
                        "a rename without its source, or a source without a rename",
                    ));
                }
                self.pending = len;
                Record::Change {
                    kind,
                    path,
                    from,
                    new,
                    len,
                }
            }
            b'S' => {
                let path = self.path()?.ok_or_else(|| bad("a skip without a path"))?;
                let reason = self.text("a reason")?;
                Record::Skipped { path, reason }
            }
            b'H' => {
                let id = self.text("an object id")?;
                if !is_object_id(&id) {
                    return Err(bad("HEAD is not a full object id"));
                }
                let branch = self.text("a ref name")?;
                let branch = if branch.is_empty() {
                    None
                } else if is_ref_name(&branch) {
                    Some(branch)
                } else {
                    return Err(bad("HEAD's ref name is not valid"));
                };
                Record::Head { id, branch }
            }
            t @ (b'O' | b'P') => {
                let kind = if t == b'O' {
                    ObjectFile::Loose
                } else {
                    ObjectFile::Pack
                };
                let name = self.text("an object file name")?;
                if !object_file_name(kind, &name) {
                    return Err(bad("an object file name is not valid"));
                }
                let len = self.u64()?;
                self.pending = len;
                Record::Object { kind, name, len }
            }
            b'E' => {
                self.ended = true;
                Record::End
            }
            _ => return Err(bad("unknown record")),
        };
        Ok(record)
    }

    /// Copies the data of the last record to `out` (all of it; then none is left).
    pub fn data(&mut self, out: &mut dyn Write) -> Result<u64, WireError> {
        let want = self.pending;
        let copied = io::copy(&mut (&mut self.inner).take(want), out)?;
        self.pending = 0;
        if copied != want {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        Ok(copied)
    }

    /// The data of the last record in memory, when it is at most `max` bytes (else an error).
    pub fn data_small(&mut self, max: u64) -> Result<Vec<u8>, WireError> {
        if self.pending > max {
            return Err(WireError::Invalid(format!(
                "{} bytes where at most {max} are expected",
                self.pending
            )));
        }
        let mut out = Vec::new();
        self.data(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
