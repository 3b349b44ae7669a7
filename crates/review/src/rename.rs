//! Rename detection: a deleted regular file and an added one with the same non-empty content
//! become one `renamed` change. Only files whose size matches one on the other side are hashed,
//! each once.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::BorrowedFd;

use crate::change::{Change, ChangeKind, EntryType};
use crate::error::Error;
use crate::fsys;

/// A change with the facts its risk needs: `(change, new_git, deletes_repo)`.
pub(crate) type Found = (Change, bool, bool);

fn file_size(c: &Change, kind: &ChangeKind) -> Option<u64> {
    if c.kind != *kind || c.git_internal {
        return None;
    }
    let e = if *kind == ChangeKind::Deleted {
        c.old.as_ref()
    } else {
        c.new.as_ref()
    }?;
    (e.kind == EntryType::File && e.size > 0).then_some(e.size)
}

/// Pairs deleted and added files with the same content (see the module docs).
pub(crate) fn pair(
    host: BorrowedFd<'_>,
    upper: BorrowedFd<'_>,
    found: Vec<Found>,
) -> Result<Vec<Found>, Error> {
    let del_sizes: HashSet<u64> = found
        .iter()
        .filter_map(|f| file_size(&f.0, &ChangeKind::Deleted))
        .collect();
    let add_sizes: HashSet<u64> = found
        .iter()
        .filter_map(|f| file_size(&f.0, &ChangeKind::Added))
        .collect();
    if del_sizes.is_disjoint(&add_sizes) {
        return Ok(found);
    }
    let hash = |root: BorrowedFd<'_>, c: &Change| -> Option<[u8; 32]> {
        let mut f = fsys::open_file(root, &c.path).ok()?;
        fsys::hash(&mut f).ok()
    };
    // Deleted candidates by hash, in path order.
    let mut order: Vec<usize> = (0..found.len()).collect();
    order.sort_by(|a, b| found[*a].0.path.cmp(&found[*b].0.path));
    let mut sources: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
    for &i in &order {
        let c = &found[i].0;
        if file_size(c, &ChangeKind::Deleted).is_some_and(|s| add_sizes.contains(&s))
            && let Some(h) = hash(host, c)
        {
            sources.entry(h).or_default().push(i);
        }
    }
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for &i in &order {
        let c = &found[i].0;
        if file_size(c, &ChangeKind::Added).is_some_and(|s| del_sizes.contains(&s))
            && let Some(h) = hash(upper, c)
            && let Some(list) = sources.get_mut(&h)
            && !list.is_empty()
        {
            pairs.push((list.remove(0), i));
        }
    }
    let mut slots: Vec<Option<Found>> = found.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(slots.len());
    for (d, a) in pairs {
        let (Some(del), Some(add)) = (slots[d].take(), slots[a].take()) else {
            continue;
        };
        let (del, _, _) = del;
        let (add, new_git, _) = add;
        let conflict = add
            .conflict
            .or_else(|| del.conflict.map(|why| format!("{}: {why}", del.path)));
        out.push((
            Change {
                path: add.path,
                kind: ChangeKind::Renamed { from: del.path },
                old: del.old,
                new: add.new,
                binary: add.binary || del.binary,
                risk: None,
                conflict,
                git_internal: false,
            },
            new_git,
            false,
        ));
    }
    out.extend(slots.into_iter().flatten());
    Ok(out)
}
