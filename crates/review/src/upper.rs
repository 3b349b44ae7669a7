//! Removing entries from the upper layer (settle after an apply, discard), never following a
//! symlink there.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::AtFlags;

use crate::error::Error;
use crate::fsys::{self, Kind};
use crate::relpath::RelPath;
use crate::scan::{replaces, upper_err};
use crate::state::Seen;

/// Removes the upper entry at `rel`: a file, symlink or whiteout; a directory only when empty,
/// or with everything in it when `recursive`. Returns whether it is gone.
pub(crate) fn remove(upper: BorrowedFd<'_>, rel: &RelPath, recursive: bool) -> Result<bool, Error> {
    let (dir, name) = match fsys::open_parent(upper, rel) {
        Ok(x) => x,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(upper_err("open", rel, e)),
    };
    match fsys::stat_at(dir.as_fd(), &name).map_err(|e| upper_err("read", rel, e))? {
        None => Ok(true),
        Some(st) if st.kind() == Kind::Dir && !recursive => {
            match rustix::fs::unlinkat(&dir, name.as_slice(), AtFlags::REMOVEDIR) {
                Ok(()) => Ok(true),
                Err(rustix::io::Errno::NOTEMPTY) => Ok(false),
                Err(e) => Err(upper_err("remove", rel, e.into())),
            }
        }
        Some(_) => fsys::remove_tree(dir.as_fd(), &name)
            .map(|()| true)
            .map_err(|e| upper_err("remove", rel, e)),
    }
}

/// Removes the upper parents of `rel` that are now empty, merge with the host's directory (not
/// opaque or redirected) and have its permission bits, deepest first, with their records: the
/// merged view stays the same without them.
pub(crate) fn prune(
    upper: BorrowedFd<'_>,
    host: BorrowedFd<'_>,
    seen: &mut Seen,
    rel: &RelPath,
) -> Result<(), Error> {
    let mut at = rel.parent();
    while let Some(p) = at.filter(|p| !p.is_root()) {
        let Ok(fd) = fsys::open_dir(upper, &p) else {
            return Ok(());
        };
        let empty = fsys::list(fd.as_fd()).is_ok_and(|l| l.is_empty());
        let merges = replaces(fd.as_fd()).is_ok_and(|r| !r);
        let ust = fsys::fstat(fd.as_fd()).map_err(|e| upper_err("read", &p, e))?;
        let same_on_host = matches!(
            fsys::stat_rel(host, &p),
            Ok(Some(h)) if h.kind() == Kind::Dir && h.perm() & 0o777 == ust.perm() & 0o777
        );
        drop(fd);
        if !(empty && merges && same_on_host && remove(upper, &p, false)?) {
            return Ok(());
        }
        seen.remove(&p);
        at = p.parent();
    }
    Ok(())
}
