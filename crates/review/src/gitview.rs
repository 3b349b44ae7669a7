//! The sandbox's git repository as its overlay shows it (the workspace's `.git`, the upper
//! layer's entries over the host's): which commit its `HEAD` names, and the object files its
//! layer holds (the commits the agent made). Every file is read below a descriptor without
//! following a symlink, with a size bound; a ref value is taken only when it is a full object
//! id or a plain `refs/...` name.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::error::Error;
use crate::export::{ObjectFile, is_object_id, is_ref_name, object_file_name};
use crate::fsys::{self, Kind};
use crate::relpath::RelPath;
use crate::scan::{Upper, classify, upper_err};

/// The largest `HEAD` or loose ref file read.
const MAX_REF: u64 = 4096;
/// The largest `packed-refs` read.
const MAX_PACKED_REFS: u64 = 64 * 1024 * 1024;
/// How many symbolic refs are followed.
const MAX_SYMREFS: usize = 5;

/// Why the sandbox's `HEAD` cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The overlay shows no `.git/HEAD` file.
    #[error("the sandbox's workspace has no .git/HEAD (was the repository removed inside?)")]
    NoHead,
    /// The repository keeps refs in a reftable.
    #[error("the repository keeps its refs in a reftable, which paddock does not read")]
    Reftable,
    /// A ref's value is neither an object id nor a symbolic ref to `refs/...`.
    #[error("the sandbox's {0} holds no valid object id or ref name")]
    Invalid(String),
    /// The branch `HEAD` names has no commit.
    #[error("the sandbox's HEAD names {0}, which has no commit")]
    Unborn(String),
    /// Symbolic refs point at each other.
    #[error("the sandbox's HEAD leads through more than {MAX_SYMREFS} symbolic refs")]
    TooDeep,
}

/// Reads the file `rel` as the overlay shows it: the upper layer's entry when it has one (a
/// whiteout: nothing), else the host's unless an opaque upper directory above hides it. Only
/// regular files are read (`None` for anything else, or one larger than `max`).
fn read_merged(
    host: BorrowedFd<'_>,
    upper: BorrowedFd<'_>,
    rel: &RelPath,
    max: u64,
) -> Result<Option<Vec<u8>>, Error> {
    let names: Vec<&[u8]> = rel.components().collect();
    let mut up: Option<OwnedFd> =
        Some(fsys::reopen_dir(upper).map_err(|e| upper_err("open", rel, e))?);
    let mut lower: Option<OwnedFd> =
        Some(fsys::reopen_dir(host).map_err(|e| Error::io("cannot open the workspace", e))?);
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let mut hide_lower = false;
        let mut up_next = None;
        if let Some(dir) = &up
            && let Some(st) =
                fsys::stat_at(dir.as_fd(), name).map_err(|e| upper_err("read", rel, e))?
        {
            match classify(dir.as_fd(), name, &st).map_err(|e| upper_err("read", rel, e))? {
                Upper::Whiteout => return Ok(None),
                Upper::File if last => {
                    let mut f = fsys::open_child_file(dir.as_fd(), name)
                        .map_err(|e| upper_err("read", rel, e))?;
                    return fsys::read_limited(&mut f, max).map_err(|e| upper_err("read", rel, e));
                }
                Upper::Metacopy => return Err(Error::Metacopy(rel.clone())),
                Upper::Dir { fd, replaces } if !last => {
                    up_next = Some(fd);
                    hide_lower = replaces;
                }
                // A file over a directory, a directory where a file is wanted, a symlink, a
                // special file: not a regular file in the merged view.
                _ => return Ok(None),
            }
        }
        let mut lower_next = None;
        if let Some(dir) = lower.as_ref().filter(|_| !hide_lower) {
            let st = fsys::stat_at(dir.as_fd(), name)
                .map_err(|e| Error::io(format!("cannot read {rel} in the workspace"), e))?;
            match st.map(|s| s.kind()) {
                Some(Kind::File) if last => {
                    let mut f = fsys::open_child_file(dir.as_fd(), name)
                        .map_err(|e| Error::io(format!("cannot read {rel} in the workspace"), e))?;
                    return fsys::read_limited(&mut f, max)
                        .map_err(|e| Error::io(format!("cannot read {rel} in the workspace"), e));
                }
                Some(Kind::Dir) if !last => {
                    lower_next = fsys::open_child_dir(dir.as_fd(), name).ok();
                }
                _ => {}
            }
        }
        if up_next.is_none() && lower_next.is_none() {
            return Ok(None);
        }
        up = up_next;
        lower = lower_next;
    }
    Ok(None)
}

fn git_path(rest: &str) -> Result<RelPath, Error> {
    Ok(RelPath::new(format!(".git/{rest}"))?)
}

/// One ref file's value: `Ok(id)` or `Err(name)` for a symbolic ref.
fn parse_ref(text: &[u8], what: &str) -> Result<Result<String, String>, HeadError> {
    let text = std::str::from_utf8(text)
        .map_err(|_| HeadError::Invalid(what.into()))?
        .trim_end_matches('\n');
    if let Some(target) = text.strip_prefix("ref: ") {
        if target == "refs/heads/.invalid" {
            return Err(HeadError::Reftable);
        }
        if !is_ref_name(target) {
            return Err(HeadError::Invalid(what.into()));
        }
        return Ok(Err(target.to_owned()));
    }
    if is_object_id(text) {
        Ok(Ok(text.to_owned()))
    } else {
        Err(HeadError::Invalid(what.into()))
    }
}

/// The id `name` has in a `packed-refs` text.
fn packed(text: &[u8], name: &str) -> Option<String> {
    text.split(|b| *b == b'\n')
        .filter(|l| !l.starts_with(b"#") && !l.starts_with(b"^"))
        .find_map(|l| {
            let l = std::str::from_utf8(l).ok()?;
            let (id, n) = l.split_once(' ')?;
            (n == name && is_object_id(id)).then(|| id.to_owned())
        })
}

/// The sandbox's `HEAD`: the commit id, and the branch (`refs/...`) when it is on one.
pub(crate) fn head(
    host: BorrowedFd<'_>,
    upper: BorrowedFd<'_>,
) -> Result<(String, Option<String>), Error> {
    let Some(text) = read_merged(host, upper, &git_path("HEAD")?, MAX_REF)? else {
        return Err(HeadError::NoHead.into());
    };
    let mut value = parse_ref(&text, ".git/HEAD")?;
    let mut branch = None;
    for _ in 0..MAX_SYMREFS {
        let name = match value {
            Ok(id) => return Ok((id, branch)),
            Err(name) => name,
        };
        branch.get_or_insert_with(|| name.clone());
        value = match read_merged(host, upper, &git_path(&name)?, MAX_REF)? {
            Some(text) => parse_ref(&text, &format!(".git/{name}"))?,
            None => {
                let packed_refs =
                    read_merged(host, upper, &git_path("packed-refs")?, MAX_PACKED_REFS)?;
                match packed_refs.and_then(|t| packed(&t, &name)) {
                    Some(id) => Ok(id),
                    None => return Err(HeadError::Unborn(name).into()),
                }
            }
        };
    }
    Err(HeadError::TooDeep.into())
}

/// Calls `visit` with each git object file the upper layer holds under `.git/objects` (loose
/// objects and packs, by their checked names; anything else there, such as `info/alternates`,
/// an index or a temporary file, is left out) and the open file.
pub(crate) fn objects(
    upper: BorrowedFd<'_>,
    visit: &mut dyn FnMut(ObjectFile, String, std::fs::File) -> Result<(), Error>,
) -> Result<(), Error> {
    let rel = git_path("objects")?;
    let dir = match fsys::open_dir(upper, &rel) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(upper_err("open", &rel, e)),
    };
    let names = fsys::list(dir.as_fd()).map_err(|e| upper_err("list", &rel, e))?;
    for sub in names {
        let Ok(sub_text) = String::from_utf8(sub.clone()) else {
            continue;
        };
        let pack = sub_text == "pack";
        let fanout = sub_text.len() == 2 && sub_text.bytes().all(|b| b.is_ascii_hexdigit());
        if !(pack || fanout) {
            continue;
        }
        let Ok(subdir) = fsys::open_child_dir(dir.as_fd(), &sub) else {
            continue;
        };
        let files = fsys::list(subdir.as_fd()).map_err(|e| upper_err("list", &rel, e))?;
        for file in files {
            let Ok(file_text) = String::from_utf8(file.clone()) else {
                continue;
            };
            let (kind, name) = if pack {
                (ObjectFile::Pack, file_text)
            } else {
                (ObjectFile::Loose, format!("{sub_text}/{file_text}"))
            };
            if !object_file_name(kind, &name) {
                continue;
            }
            let Some(st) =
                fsys::stat_at(subdir.as_fd(), &file).map_err(|e| upper_err("read", &rel, e))?
            else {
                continue;
            };
            if !matches!(classify(subdir.as_fd(), &file, &st), Ok(Upper::File)) {
                continue;
            }
            let f = fsys::open_child_file(subdir.as_fd(), &file)
                .map_err(|e| upper_err("read", &rel, e))?;
            visit(kind, name, f)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn ref_values_are_ids_or_plain_names() {
        assert_eq!(
            parse_ref(format!("{A}\n").as_bytes(), "x").unwrap(),
            Ok(A.into())
        );
        assert_eq!(
            parse_ref(b"ref: refs/heads/main\n", "x").unwrap(),
            Err("refs/heads/main".into())
        );
        assert!(matches!(
            parse_ref(b"ref: refs/heads/.invalid\n", "x"),
            Err(HeadError::Reftable)
        ));
        for bad in [
            &b"ref: ../../etc/passwd"[..],
            b"ref: HEAD",
            b"0123",
            b"--upload-pack=evil",
            b"\xff",
        ] {
            assert!(parse_ref(bad, "x").is_err(), "{bad:?}");
        }
        let text = format!("# pack-refs with: peeled\n{A} refs/heads/a\n^{A}\n{A} refs/tags/t\n");
        assert_eq!(packed(text.as_bytes(), "refs/heads/a"), Some(A.into()));
        assert_eq!(packed(text.as_bytes(), "refs/heads/b"), None);
    }

    /// The merged view over two real directories (without overlay xattrs: plain entries).
    #[test]
    fn the_upper_layer_wins_and_the_host_shows_through() {
        let host = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let h = host.path();
        let u = upper.path();
        std::fs::create_dir_all(h.join(".git/refs/heads")).unwrap();
        std::fs::create_dir_all(u.join(".git/refs/heads")).unwrap();
        std::fs::write(h.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(h.join(".git/packed-refs"), format!("{A} refs/heads/main\n")).unwrap();
        let open = |p: &std::path::Path| fsys::open_root(p).unwrap();
        let (hd, ud) = (open(h), open(u));
        let got = head(hd.as_fd(), ud.as_fd()).unwrap();
        assert_eq!(got, (A.to_owned(), Some("refs/heads/main".to_owned())));
        // The agent's commit: a loose ref in the upper layer.
        let b = "b".repeat(40);
        std::fs::write(u.join(".git/refs/heads/main"), format!("{b}\n")).unwrap();
        let got = head(hd.as_fd(), ud.as_fd()).unwrap();
        assert_eq!(got.0, b);
        // A detached HEAD in the upper layer; a symlinked one is not followed.
        std::fs::write(u.join(".git/HEAD"), format!("{A}\n")).unwrap();
        assert_eq!(head(hd.as_fd(), ud.as_fd()).unwrap().1, None);
        std::fs::remove_file(u.join(".git/HEAD")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", u.join(".git/HEAD")).unwrap();
        assert!(matches!(
            head(hd.as_fd(), ud.as_fd()),
            Err(Error::Head(HeadError::NoHead))
        ));
        // A branch with no commit.
        std::fs::remove_file(u.join(".git/HEAD")).unwrap();
        std::fs::write(u.join(".git/HEAD"), "ref: refs/heads/none\n").unwrap();
        assert!(matches!(
            head(hd.as_fd(), ud.as_fd()),
            Err(Error::Head(HeadError::Unborn(_)))
        ));
    }

    #[test]
    fn only_object_files_are_listed() {
        let upper = tempfile::tempdir().unwrap();
        let u = upper.path();
        let loose = format!("{}/{}", &A[..2], &A[2..]);
        let pack = format!("pack-{A}.pack");
        std::fs::create_dir_all(u.join(".git/objects/01")).unwrap();
        std::fs::create_dir_all(u.join(".git/objects/pack")).unwrap();
        std::fs::create_dir_all(u.join(".git/objects/info")).unwrap();
        std::fs::write(u.join(".git/objects").join(&loose), "x").unwrap();
        std::fs::write(u.join(".git/objects/pack").join(&pack), "p").unwrap();
        std::fs::write(u.join(format!(".git/objects/pack/pack-{A}.idx")), "i").unwrap();
        std::fs::write(u.join(".git/objects/info/alternates"), "/etc\n").unwrap();
        std::fs::write(u.join(".git/objects/01/tmp_obj_x"), "t").unwrap();
        std::os::unix::fs::symlink(
            "/etc/passwd",
            u.join(format!(".git/objects/01/{}", "c".repeat(38))),
        )
        .unwrap();
        let ud = fsys::open_root(u).unwrap();
        let mut seen = Vec::new();
        objects(ud.as_fd(), &mut |k, n, _| {
            seen.push((k, n));
            Ok(())
        })
        .unwrap();
        seen.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            seen,
            vec![(ObjectFile::Loose, loose), (ObjectFile::Pack, pack)]
        );
    }
}
