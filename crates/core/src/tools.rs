//! Finding the programs backends drive.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Name of the in-sandbox helper binary of the vm and gvisor backends, installed next to
/// `paddock`.
pub const GUEST_BINARY: &str = "paddock-guest";
/// Overrides where that helper is found.
pub const GUEST_ENV: &str = "PADDOCK_GUEST_BINARY";

/// Finds an installed program on `PATH`, `/usr/local/bin`, `/usr/bin` or `~/.cargo/bin`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // Not /usr/lib/qemu or /usr/libexec: Debian's qemu ships the old C virtiofsd there, whose
    // command line differs from the maintained Rust one this backend drives.
    dirs.extend(["/usr/local/bin", "/usr/bin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// True when `path` is an ELF executable without a program interpreter (statically linked): it
/// runs in any root filesystem (a VM's initramfs has no dynamic loader or libraries; a gVisor
/// sandbox's image may have other ones).
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = fs::read(path) else { return false };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap_or_default()) as usize;
    let (entsize, num) = (u16at(0x36), u16at(0x38));
    (0..num).all(|i| {
        let o = phoff + i * entsize;
        b.get(o..o + 4)
            .map(|t| u32::from_le_bytes(t.try_into().unwrap_or_default()) != 3)
            .unwrap_or(false)
    })
}

/// The in-sandbox helper of the vm and gvisor backends: [`GUEST_ENV`] or next to `paddock`.
pub fn find_guest() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(GUEST_ENV) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?.join(GUEST_BINARY);
    beside.exists().then_some(beside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_check_reads_program_headers() {
        // This test binary is dynamically linked.
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(Path::new("/nonexistent")));
    }
}
