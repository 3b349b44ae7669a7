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
    use std::os::unix::fs::FileExt;
    // The ELF header, then the program headers only: the binary itself is megabytes.
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let mut h = [0u8; 64];
    if f.read_exact_at(&mut h, 0).is_err() || &h[..4] != b"\x7fELF" || h[4] != 2 {
        return false;
    }
    let u16at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(h[0x20..0x28].try_into().unwrap_or_default());
    let (entsize, num) = (u16at(0x36), u16at(0x38));
    if entsize < 4 {
        return false;
    }
    let mut ph = vec![0u8; entsize * num];
    if f.read_exact_at(&mut ph, phoff).is_err() {
        return false;
    }
    ph.chunks(entsize)
        .all(|e| u32::from_le_bytes([e[0], e[1], e[2], e[3]]) != 3)
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

    #[test]
    fn a_program_without_an_interpreter_is_static() {
        // A 64-bit ELF header with one program header right after it, of type `ty`.
        let elf = |ty: u32| {
            let mut b = vec![0u8; 64 + 56];
            b[..5].copy_from_slice(b"\x7fELF\x02");
            b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
            b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
            b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
            b[64..68].copy_from_slice(&ty.to_le_bytes());
            b
        };
        let dir = tempfile::tempdir().unwrap();
        let (load, interp) = (dir.path().join("load"), dir.path().join("interp"));
        fs::write(&load, elf(1)).unwrap();
        fs::write(&interp, elf(3)).unwrap();
        assert!(is_static_elf(&load));
        assert!(!is_static_elf(&interp));
        // Program headers beyond the end of the file: not a usable program.
        fs::write(&load, &elf(1)[..80]).unwrap();
        assert!(!is_static_elf(&load));
    }
}
