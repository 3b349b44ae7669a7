//! Discarding changes: their entries leave the upper layer (the sandbox is stopped), so the
//! merged view shows the host's version again.

use std::os::fd::{AsFd, BorrowedFd};

use serde::Serialize;

use crate::apply::{self, Refusal};
use crate::change::{Change, ChangeKind};
use crate::error::Error;
use crate::relpath::RelPath;
use crate::{fsys, scan, state, upper};

/// What a discard did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiscardReport {
    /// The changes discarded (their upper entries are gone).
    pub discarded: Vec<RelPath>,
    /// Changes that could not be discarded alone, with why.
    pub refused: Vec<Refusal>,
    /// Selected paths that matched no change.
    pub unmatched: Vec<RelPath>,
}

/// See [`Layer::discard`].
pub(crate) fn discard(
    host: BorrowedFd<'_>,
    upper_root: BorrowedFd<'_>,
    seen: &mut state::Seen,
    select: &[RelPath],
    all: &[Change],
) -> Result<DiscardReport, Error> {
    let mut report = DiscardReport {
        unmatched: apply::unmatched(select, all),
        ..DiscardReport::default()
    };
    if select.is_empty() || select.iter().any(RelPath::is_root) {
        let root = RelPath::root();
        let fd = fsys::open_dir(upper_root, &root)
            .map_err(|e| Error::io("cannot open the upper layer", e))?;
        for name in fsys::list(fd.as_fd()).map_err(|e| scan::upper_err("list", &root, e))? {
            let rel = root.join(&name)?;
            upper::remove(upper_root, &rel, true)?;
        }
        seen.clear();
        report.discarded = all.iter().map(|c| c.path.clone()).collect();
        return Ok(report);
    }
    let exists = |p: &RelPath| matches!(fsys::stat_rel(upper_root, p), Ok(Some(_)));
    // Selected paths that are upper entries go whole; each selected change's paths go too.
    let mut remove: Vec<RelPath> = Vec::new();
    for s in select {
        if all.iter().any(|c| c.selected_by(std::slice::from_ref(s))) && exists(s) {
            remove.push(s.clone());
        }
    }
    for c in all.iter().filter(|c| c.selected_by(select)) {
        let mut paths = vec![&c.path];
        if let ChangeKind::Renamed { from } = &c.kind {
            paths.push(from);
        }
        let mut ok = true;
        for p in paths {
            if remove.iter().any(|r| p.starts_with(r)) {
                continue;
            }
            if exists(p) {
                remove.push(p.clone());
            } else {
                ok = false;
                let dir = replacing_parent(upper_root, p).unwrap_or_default();
                report.refused.push(Refusal {
                    path: c.path.clone(),
                    reason: format!(
                        "{p} is hidden by the replaced directory {dir}: discard {dir} instead"
                    ),
                });
            }
        }
        if ok {
            report.discarded.push(c.path.clone());
        }
    }
    remove.sort();
    remove.dedup();
    let mut done: Vec<RelPath> = Vec::new();
    for p in remove {
        if done.iter().any(|d| p.starts_with(d)) {
            continue;
        }
        upper::remove(upper_root, &p, true)?;
        seen.retain(|k, _| !k.starts_with(&p));
        upper::prune(upper_root, host, seen, &p)?;
        done.push(p);
    }
    Ok(report)
}

/// The nearest parent of `p` that is an opaque or redirected upper directory.
fn replacing_parent(upper_root: BorrowedFd<'_>, p: &RelPath) -> Option<RelPath> {
    let mut at = p.parent();
    while let Some(d) = at {
        if d.is_root() {
            return None;
        }
        if let Ok(fd) = fsys::open_dir(upper_root, &d)
            && scan::replaces(fd.as_fd()).unwrap_or(false)
        {
            return Some(d);
        }
        at = d.parent();
    }
    None
}
