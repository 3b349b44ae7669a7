//! Landlock, the second filesystem layer.
//!
//! Applied by the in-sandbox helper after `pivot_root`, so the only hierarchy it allows is the
//! sandbox's own root: a descriptor or mount that leads outside it (a leaked host descriptor, a
//! bind mount a kernel bug lets through) is refused by Landlock even if the mount namespace
//! fails. Where the kernel offers scoping (ABI 6), signals and abstract Unix sockets are limited
//! to the sandbox too.

use std::os::fd::AsFd;

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

/// Why Landlock could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// the ruleset could not be built or enforced
    #[error("landlock: {0}")]
    Ruleset(String),
}

/// What was enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    /// Every requested restriction.
    Fully,
    /// Some restrictions (an older kernel ABI).
    Partially,
    /// The kernel has no Landlock.
    Unsupported,
}

/// The newest ABI this build knows.
pub const ABI_USED: ABI = ABI::V6;

/// Restricts the calling thread (and its future children) to the hierarchy under `/`.
pub fn restrict_to_root() -> Result<Enforced, LandlockError> {
    // The caller holds CAP_SYS_ADMIN in its user namespace; whether no_new_privs is set is the
    // sandbox's own setting (it would stop sudo inside).
    enforce(&[("/", AccessFs::from_all(ABI_USED))], false)
}

/// Restricts the calling thread (and its future children) to reading under `paths` (those
/// that exist), with signals and abstract Unix sockets scoped to itself: for a host helper
/// that needs the system's configuration and libraries and nothing of anyone's files.
pub fn restrict_to_reading(paths: &[&str]) -> Result<Enforced, LandlockError> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let rules: Vec<_> = paths
        .iter()
        .filter(|p| std::path::Path::new(p).exists())
        .map(|p| (*p, read))
        .collect();
    enforce(&rules, true)
}

/// Restricts the calling thread (and its future children) to the trees under the directory
/// descriptors `dirs`, where it may do anything, with signals and abstract Unix sockets scoped
/// to itself; sets `no_new_privs`. For the review helper.
pub fn restrict_beneath(dirs: &[std::os::fd::BorrowedFd<'_>]) -> Result<Enforced, LandlockError> {
    let rules: Vec<_> = dirs
        .iter()
        .map(|fd| (*fd, AccessFs::from_all(ABI_USED)))
        .collect();
    enforce_fds(&rules, true)
}

fn ruleset_error(x: &dyn std::fmt::Display) -> LandlockError {
    LandlockError::Ruleset(x.to_string())
}

/// [`enforce_fds`] with each path opened (one that cannot be opened is an error).
fn enforce(
    rules: &[(&str, BitFlags<AccessFs>)],
    no_new_privs: bool,
) -> Result<Enforced, LandlockError> {
    let opened = rules
        .iter()
        .map(|(path, access)| Ok((PathFd::new(path).map_err(|x| ruleset_error(&x))?, *access)))
        .collect::<Result<Vec<_>, LandlockError>>()?;
    let borrowed: Vec<_> = opened
        .iter()
        .map(|(fd, access)| (fd.as_fd(), *access))
        .collect();
    enforce_fds(&borrowed, no_new_privs)
}

/// Every filesystem access handled, signals and abstract sockets scoped, and `rules` (each
/// directory with what it allows beneath it) the only ones allowed; `no_new_privs` set with it
/// when asked.
fn enforce_fds(
    rules: &[(std::os::fd::BorrowedFd<'_>, BitFlags<AccessFs>)],
    no_new_privs: bool,
) -> Result<Enforced, LandlockError> {
    let e = ruleset_error;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI_USED))
        .map_err(|x| e(&x))?
        .scope(Scope::from_all(ABI_USED))
        .map_err(|x| e(&x))?
        .create()
        .map_err(|x| e(&x))?;
    for (fd, access) in rules {
        ruleset = ruleset
            .add_rule(PathBeneath::new(*fd, *access))
            .map_err(|x| e(&x))?;
    }
    let status = ruleset
        .no_new_privs(no_new_privs)
        .restrict_self()
        .map_err(|x| e(&x))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Fully,
        RulesetStatus::PartiallyEnforced => Enforced::Partially,
        RulesetStatus::NotEnforced => Enforced::Unsupported,
    })
}

/// The Landlock ABI version the running kernel offers (0: none).
pub fn kernel_abi() -> i32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute and size 0 only queries the
    // version; no memory is passed.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if v < 0 { 0 } else { v as i32 }
}
