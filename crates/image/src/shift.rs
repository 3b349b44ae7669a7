//! Shifting a freshly built tree's ownership into the sandbox id range.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use paddock_core::ID_RANGE;

/// Adds `base` to every uid and gid below the range size, keeping setuid/setgid bits (which
/// chown clears). Hard links are shifted once. Returns the tree's size in bytes.
pub fn shift_tree(root: &Path, base: u32, progress: bool) -> std::io::Result<u64> {
    let pb = if progress {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{spinner} shifting ownership: {pos} files")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut seen = HashSet::new();
    let mut size = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p)?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        size += meta.len();
        let (uid, gid) = (meta.uid(), meta.gid());
        if uid < ID_RANGE || gid < ID_RANGE {
            let nu = if uid < ID_RANGE { uid + base } else { uid };
            let ng = if gid < ID_RANGE { gid + base } else { gid };
            lchown(&p, Some(nu), Some(ng))?;
            let mode = meta.permissions().mode();
            if meta.is_file() && mode & 0o6000 != 0 {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
            }
        }
        pb.inc(1);
        if meta.is_dir() {
            for e in fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    pb.finish_and_clear();
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_once_and_keeps_setuid() {
        if !rustix_is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, b"x").unwrap();
        fs::hard_link(&f, d.path().join("g")).unwrap();
        lchown(d.path(), Some(0), Some(0)).unwrap();
        lchown(&f, Some(0), Some(0)).unwrap();
        // After the chowns above, which clear setuid themselves.
        fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).unwrap();
        shift_tree(d.path(), 0x7000_0000, false).unwrap();
        let m = fs::metadata(&f).unwrap();
        assert_eq!((m.uid(), m.gid()), (0x7000_0000, 0x7000_0000));
        assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
    }

    fn rustix_is_root() -> bool {
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }
}
