//! The seccomp filter every process in a namespace sandbox runs under.
//!
//! A reviewed deny-list: the sandbox keeps the whole Linux syscall surface a development
//! environment needs, minus the calls that reach kernel state the namespaces do not isolate,
//! widen kernel attack surface for no development use, or could undo the other layers. Each entry
//! carries its reason; `paddock doctor --seccomp` prints the table. Refused calls fail with
//! `EPERM` (or `ENOSYS` where callers are expected to fall back), so programs see an ordinary
//! error rather than a crash. Foreign architectures (i386 via `int 0x80`) are killed, and x32
//! syscall numbers are refused.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule, TargetArch, sock_filter,
};

/// Why the filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// the rule table does not compile (a bug in Paddock)
    #[error("the seccomp rule table does not compile: {0}")]
    Compile(String),
    /// the kernel refused the filter
    #[error("the kernel refused the seccomp filter")]
    Install(#[source] std::io::Error),
}

/// What the kernel is told to do with a matched call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deny {
    /// Fail with EPERM.
    Eperm,
    /// Fail with ENOSYS (the caller falls back to an older call we can inspect).
    Enosys,
}

/// Which calls of a syscall are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every call.
    All,
    /// Calls whose argument `arg` (low 32 bits) equals one of `values`.
    ArgEq {
        /// Argument index.
        arg: u8,
        /// Refused values.
        values: &'static [u64],
    },
    /// Calls whose argument `arg` has any of these bits set (each bit checked on its own).
    ArgAnyBit {
        /// Argument index.
        arg: u8,
        /// Refused bits.
        bits: &'static [u64],
    },
    /// `socket()` calls creating raw or packet sockets (see [`SOCKET_RULES`]).
    Socket,
}

/// One reviewed entry.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Syscall name.
    pub name: &'static str,
    /// Syscall number on x86_64.
    pub nr: i64,
    /// Which calls.
    pub scope: Scope,
    /// What happens.
    pub deny: Deny,
    /// Why it is refused.
    pub reason: &'static str,
}

const NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

/// `socket(domain, type, _)` pairs that are refused: (domain, type & 0xf or None for any type).
pub const SOCKET_RULES: &[(u64, Option<u64>, &str)] = &[
    (
        libc::AF_PACKET as u64,
        None,
        "AF_PACKET: raw link-layer frames",
    ),
    (
        libc::AF_VSOCK as u64,
        None,
        "AF_VSOCK: a path to the hypervisor/host outside the network namespace",
    ),
    (
        libc::AF_INET as u64,
        Some(libc::SOCK_RAW as u64),
        "raw IPv4: hand-made packets (ICMP, spoofing)",
    ),
    (
        libc::AF_INET6 as u64,
        Some(libc::SOCK_RAW as u64),
        "raw IPv6: hand-made packets",
    ),
    (
        libc::AF_INET as u64,
        Some(10 /* SOCK_PACKET */),
        "SOCK_PACKET: legacy raw frames",
    ),
    (
        libc::AF_INET6 as u64,
        Some(10 /* SOCK_PACKET */),
        "SOCK_PACKET: legacy raw frames",
    ),
];

macro_rules! rule {
    ($name:ident, $scope:expr, $deny:expr, $reason:expr) => {
        Rule {
            name: stringify!($name),
            nr: syscall_nr::$name,
            scope: $scope,
            deny: $deny,
            reason: $reason,
        }
    };
}

#[allow(non_upper_case_globals)]
mod syscall_nr {
    pub const ptrace: i64 = libc::SYS_ptrace;
    pub const process_vm_readv: i64 = libc::SYS_process_vm_readv;
    pub const process_vm_writev: i64 = libc::SYS_process_vm_writev;
    pub const kcmp: i64 = libc::SYS_kcmp;
    pub const pidfd_getfd: i64 = libc::SYS_pidfd_getfd;
    pub const bpf: i64 = libc::SYS_bpf;
    pub const perf_event_open: i64 = libc::SYS_perf_event_open;
    pub const keyctl: i64 = libc::SYS_keyctl;
    pub const add_key: i64 = libc::SYS_add_key;
    pub const request_key: i64 = libc::SYS_request_key;
    pub const io_uring_setup: i64 = libc::SYS_io_uring_setup;
    pub const io_uring_enter: i64 = libc::SYS_io_uring_enter;
    pub const io_uring_register: i64 = libc::SYS_io_uring_register;
    pub const userfaultfd: i64 = libc::SYS_userfaultfd;
    pub const kexec_load: i64 = libc::SYS_kexec_load;
    pub const kexec_file_load: i64 = libc::SYS_kexec_file_load;
    pub const init_module: i64 = libc::SYS_init_module;
    pub const finit_module: i64 = libc::SYS_finit_module;
    pub const delete_module: i64 = libc::SYS_delete_module;
    pub const create_module: i64 = 174;
    pub const get_kernel_syms: i64 = 177;
    pub const query_module: i64 = 178;
    pub const open_by_handle_at: i64 = libc::SYS_open_by_handle_at;
    pub const name_to_handle_at: i64 = libc::SYS_name_to_handle_at;
    pub const mount: i64 = libc::SYS_mount;
    pub const umount2: i64 = libc::SYS_umount2;
    pub const pivot_root: i64 = libc::SYS_pivot_root;
    pub const open_tree: i64 = libc::SYS_open_tree;
    pub const move_mount: i64 = libc::SYS_move_mount;
    pub const fsopen: i64 = libc::SYS_fsopen;
    pub const fsconfig: i64 = libc::SYS_fsconfig;
    pub const fsmount: i64 = libc::SYS_fsmount;
    pub const fspick: i64 = libc::SYS_fspick;
    pub const mount_setattr: i64 = libc::SYS_mount_setattr;
    pub const setns: i64 = libc::SYS_setns;
    pub const unshare: i64 = libc::SYS_unshare;
    pub const clone: i64 = libc::SYS_clone;
    pub const clone3: i64 = libc::SYS_clone3;
    pub const ioctl: i64 = libc::SYS_ioctl;
    pub const socket: i64 = libc::SYS_socket;
    pub const acct: i64 = libc::SYS_acct;
    pub const swapon: i64 = libc::SYS_swapon;
    pub const swapoff: i64 = libc::SYS_swapoff;
    pub const reboot: i64 = libc::SYS_reboot;
    pub const syslog: i64 = libc::SYS_syslog;
    pub const settimeofday: i64 = libc::SYS_settimeofday;
    pub const clock_settime: i64 = libc::SYS_clock_settime;
    pub const clock_adjtime: i64 = libc::SYS_clock_adjtime;
    pub const adjtimex: i64 = libc::SYS_adjtimex;
    pub const quotactl: i64 = libc::SYS_quotactl;
    pub const quotactl_fd: i64 = 443;
    pub const lookup_dcookie: i64 = libc::SYS_lookup_dcookie;
    pub const uselib: i64 = libc::SYS_uselib;
    pub const iopl: i64 = libc::SYS_iopl;
    pub const ioperm: i64 = libc::SYS_ioperm;
    pub const vhangup: i64 = libc::SYS_vhangup;
    pub const nfsservctl: i64 = libc::SYS_nfsservctl;
    pub const _sysctl: i64 = libc::SYS__sysctl;
    pub const fanotify_init: i64 = libc::SYS_fanotify_init;
}

const TIOCSTI: u64 = libc::TIOCSTI;
const TIOCLINUX: u64 = libc::TIOCLINUX;

/// The reviewed table.
pub const RULES: &[Rule] = &[
    rule!(
        ptrace,
        Scope::All,
        Deny::Eperm,
        "reads and writes other processes' memory; would let a sandboxed process tamper with the in-sandbox helper"
    ),
    rule!(
        process_vm_readv,
        Scope::All,
        Deny::Eperm,
        "cross-process memory read, same power as ptrace"
    ),
    rule!(
        process_vm_writev,
        Scope::All,
        Deny::Eperm,
        "cross-process memory write, same power as ptrace"
    ),
    rule!(
        kcmp,
        Scope::All,
        Deny::Eperm,
        "compares kernel objects across processes; a kernel-pointer oracle"
    ),
    rule!(
        pidfd_getfd,
        Scope::All,
        Deny::Eperm,
        "steals descriptors from other processes"
    ),
    rule!(
        bpf,
        Scope::All,
        Deny::Eperm,
        "eBPF programs run in the kernel; large attack surface"
    ),
    rule!(
        perf_event_open,
        Scope::All,
        Deny::Eperm,
        "kernel profiling interface; side channels and a long bug history"
    ),
    rule!(
        keyctl,
        Scope::All,
        Deny::Eperm,
        "kernel keyrings are not namespaced; host keys could be reached"
    ),
    rule!(
        add_key,
        Scope::All,
        Deny::Eperm,
        "kernel keyrings are not namespaced"
    ),
    rule!(
        request_key,
        Scope::All,
        Deny::Eperm,
        "kernel keyrings are not namespaced"
    ),
    rule!(
        io_uring_setup,
        Scope::All,
        Deny::Eperm,
        "io_uring bypasses syscall filtering and has a long exploit history"
    ),
    rule!(
        io_uring_enter,
        Scope::All,
        Deny::Eperm,
        "io_uring bypasses syscall filtering"
    ),
    rule!(
        io_uring_register,
        Scope::All,
        Deny::Eperm,
        "io_uring bypasses syscall filtering"
    ),
    rule!(
        userfaultfd,
        Scope::All,
        Deny::Eperm,
        "used to stretch kernel race windows in exploits"
    ),
    rule!(kexec_load, Scope::All, Deny::Eperm, "loads a new kernel"),
    rule!(
        kexec_file_load,
        Scope::All,
        Deny::Eperm,
        "loads a new kernel"
    ),
    rule!(init_module, Scope::All, Deny::Eperm, "loads kernel code"),
    rule!(finit_module, Scope::All, Deny::Eperm, "loads kernel code"),
    rule!(
        delete_module,
        Scope::All,
        Deny::Eperm,
        "unloads kernel code"
    ),
    rule!(
        create_module,
        Scope::All,
        Deny::Eperm,
        "obsolete module interface"
    ),
    rule!(
        get_kernel_syms,
        Scope::All,
        Deny::Eperm,
        "obsolete module interface"
    ),
    rule!(
        query_module,
        Scope::All,
        Deny::Eperm,
        "obsolete module interface"
    ),
    rule!(
        open_by_handle_at,
        Scope::All,
        Deny::Eperm,
        "opens files by handle, bypassing the mount tree (the 'shocker' escape)"
    ),
    rule!(
        name_to_handle_at,
        Scope::All,
        Deny::Eperm,
        "produces handles for open_by_handle_at"
    ),
    rule!(
        mount,
        Scope::All,
        Deny::Eperm,
        "the mount tree is fixed at start; also refused by the locked mount namespace"
    ),
    rule!(
        umount2,
        Scope::All,
        Deny::Eperm,
        "unmounting could reveal what a mount covers"
    ),
    rule!(
        pivot_root,
        Scope::All,
        Deny::Eperm,
        "the root is fixed at start"
    ),
    rule!(open_tree, Scope::All, Deny::Eperm, "new mount API"),
    rule!(move_mount, Scope::All, Deny::Eperm, "new mount API"),
    rule!(fsopen, Scope::All, Deny::Eperm, "new mount API"),
    rule!(fsconfig, Scope::All, Deny::Eperm, "new mount API"),
    rule!(fsmount, Scope::All, Deny::Eperm, "new mount API"),
    rule!(fspick, Scope::All, Deny::Eperm, "new mount API"),
    rule!(
        mount_setattr,
        Scope::All,
        Deny::Eperm,
        "could clear read-only flags"
    ),
    rule!(setns, Scope::All, Deny::Eperm, "joining other namespaces"),
    rule!(
        unshare,
        Scope::ArgAnyBit {
            arg: 0,
            bits: NS_FLAGS
        },
        Deny::Eperm,
        "new namespaces (a fresh user namespace regains capabilities and kernel attack surface)"
    ),
    rule!(
        clone,
        Scope::ArgAnyBit {
            arg: 0,
            bits: NS_FLAGS
        },
        Deny::Eperm,
        "new namespaces, as with unshare"
    ),
    rule!(
        clone3,
        Scope::All,
        Deny::Enosys,
        "its flags live in memory seccomp cannot read; libc falls back to clone, which is checked"
    ),
    rule!(
        ioctl,
        Scope::ArgEq {
            arg: 1,
            values: &[TIOCSTI, TIOCLINUX]
        },
        Deny::Eperm,
        "TIOCSTI/TIOCLINUX push input into a terminal (compared on 32 bits, as the kernel does)"
    ),
    rule!(
        socket,
        Scope::Socket,
        Deny::Eperm,
        "raw, packet and vsock sockets bypass the egress proxy"
    ),
    rule!(
        acct,
        Scope::All,
        Deny::Eperm,
        "host-wide process accounting"
    ),
    rule!(swapon, Scope::All, Deny::Eperm, "host swap"),
    rule!(swapoff, Scope::All, Deny::Eperm, "host swap"),
    rule!(reboot, Scope::All, Deny::Eperm, "host power state"),
    rule!(
        syslog,
        Scope::All,
        Deny::Eperm,
        "the kernel log leaks host information and kernel pointers"
    ),
    rule!(
        settimeofday,
        Scope::All,
        Deny::Eperm,
        "the clock is not namespaced"
    ),
    rule!(
        clock_settime,
        Scope::All,
        Deny::Eperm,
        "the clock is not namespaced"
    ),
    rule!(
        clock_adjtime,
        Scope::All,
        Deny::Eperm,
        "the clock is not namespaced"
    ),
    rule!(
        adjtimex,
        Scope::All,
        Deny::Eperm,
        "the clock is not namespaced"
    ),
    rule!(quotactl, Scope::All, Deny::Eperm, "host filesystem quotas"),
    rule!(
        quotactl_fd,
        Scope::All,
        Deny::Eperm,
        "host filesystem quotas"
    ),
    rule!(
        lookup_dcookie,
        Scope::All,
        Deny::Eperm,
        "kernel profiling interface"
    ),
    rule!(
        uselib,
        Scope::All,
        Deny::Eperm,
        "obsolete loader call with a bug history"
    ),
    rule!(iopl, Scope::All, Deny::Eperm, "raw I/O port access"),
    rule!(ioperm, Scope::All, Deny::Eperm, "raw I/O port access"),
    rule!(vhangup, Scope::All, Deny::Eperm, "hangs up terminals"),
    rule!(
        nfsservctl,
        Scope::All,
        Deny::Eperm,
        "obsolete kernel NFS server control"
    ),
    rule!(_sysctl, Scope::All, Deny::Eperm, "obsolete binary sysctl"),
    rule!(
        fanotify_init,
        Scope::All,
        Deny::Eperm,
        "filesystem-wide event monitoring"
    ),
];

fn compile_error(e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Compile(e.to_string())
}

fn rules_for(rule: &Rule) -> Result<Vec<SeccompRule>, SeccompError> {
    let one = |conds: Vec<Cond>| SeccompRule::new(conds).map_err(compile_error);
    let cond =
        |arg: u8, len: Len, op: Op, v: u64| Cond::new(arg, len, op, v).map_err(compile_error);
    match rule.scope {
        Scope::All => Ok(vec![]),
        Scope::ArgEq { arg, values } => values
            .iter()
            .map(|v| one(vec![cond(arg, Len::Dword, Op::Eq, *v)?]))
            .collect(),
        Scope::ArgAnyBit { arg, bits } => bits
            .iter()
            .map(|b| one(vec![cond(arg, Len::Qword, Op::MaskedEq(*b), *b)?]))
            .collect(),
        Scope::Socket => SOCKET_RULES
            .iter()
            .map(|(domain, ty, _)| {
                let mut c = vec![cond(0, Len::Dword, Op::Eq, *domain)?];
                if let Some(t) = ty {
                    c.push(cond(1, Len::Dword, Op::MaskedEq(0xf), *t)?);
                }
                one(c)
            })
            .collect(),
    }
}

fn filter(deny: Deny) -> Result<BpfProgram, SeccompError> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for r in RULES.iter().filter(|r| r.deny == deny) {
        map.insert(r.nr, rules_for(r)?);
    }
    let errno = match deny {
        Deny::Eperm => libc::EPERM,
        Deny::Enosys => libc::ENOSYS,
    } as u32;
    let f = SeccompFilter::new(
        map,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        TargetArch::x86_64,
    )
    .map_err(compile_error)?;
    BpfProgram::try_from(f).map_err(compile_error)
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The compiled filters, in installation order.
pub fn programs() -> Result<Vec<BpfProgram>, SeccompError> {
    let mut eperm = filter(Deny::Eperm)?;
    // Prepend: refuse x32 syscall numbers, which share x86_64's architecture value.
    // ld [0] (nr); jge X32 ? next : skip 1; ret ERRNO(ENOSYS)
    let x32 = [
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: BPF_JMP_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: 0x0005_0000 | libc::ENOSYS as u32,
        },
    ];
    eperm.splice(0..0, x32);
    Ok(vec![eperm, filter(Deny::Enosys)?])
}

/// A filter for host helpers that need only Unix sockets (the VM's vsock device): `socket()`
/// of any other family fails with EPERM. Installed on top of [`programs`].
pub fn unix_sockets_only() -> Result<BpfProgram, SeccompError> {
    let rule = SeccompRule::new(vec![
        Cond::new(0, Len::Dword, Op::Ne, libc::AF_UNIX as u64).map_err(compile_error)?,
    ])
    .map_err(compile_error)?;
    let f = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_socket, vec![rule])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(compile_error)?;
    BpfProgram::try_from(f).map_err(compile_error)
}

/// A filter for a host helper that talks to the network and never starts a program (the
/// egress proxy): `execve`/`execveat` fail with EPERM, and `socket()` of a family other than
/// IPv4, IPv6 or netlink (the resolver reads the host's addresses) fails with EAFNOSUPPORT.
/// Two filters, installed on top of [`programs`].
pub fn network_helper() -> Result<Vec<BpfProgram>, SeccompError> {
    let f = refused(&[libc::SYS_execve, libc::SYS_execveat])?;
    let families = [libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK];
    let conds = families
        .iter()
        .map(|f| Cond::new(0, Len::Dword, Op::Ne, *f as u64).map_err(compile_error))
        .collect::<Result<Vec<_>, _>>()?;
    let socket = SeccompFilter::new(
        BTreeMap::from([(
            libc::SYS_socket,
            vec![SeccompRule::new(conds).map_err(compile_error)?],
        )]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
        TargetArch::x86_64,
    )
    .map_err(compile_error)?;
    Ok(vec![
        f,
        BpfProgram::try_from(socket).map_err(compile_error)?,
    ])
}

/// A filter under which the system calls `nrs` fail with EPERM and every other is allowed.
fn refused(nrs: &[i64]) -> Result<BpfProgram, SeccompError> {
    let rules = nrs.iter().map(|nr| (*nr, Vec::new())).collect();
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(compile_error)?;
    BpfProgram::try_from(f).map_err(compile_error)
}

/// A filter for a host helper that only moves bytes between descriptors it was given (the
/// relay): `execve`/`execveat`, `socket` and `socketpair` fail with EPERM, so it can neither
/// start a program nor open a connection of its own. Installed on top of [`programs`].
pub fn relay_helper() -> Result<BpfProgram, SeccompError> {
    refused(&[
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_socket,
        libc::SYS_socketpair,
    ])
}

/// Installs one compiled filter on the calling thread. Makes one system call and allocates
/// nothing, so it may run between fork and exec.
#[cfg(target_os = "linux")]
pub fn apply(prog: &BpfProgram) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut().cast(),
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies the
    // program and keeps no pointer to our memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &raw const fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Installs the filters on the calling thread (inherited by every child). Does not set
/// `no_new_privs`: the caller either holds CAP_SYS_ADMIN in its user namespace or set it.
#[cfg(target_os = "linux")]
pub fn install() -> Result<(), SeccompError> {
    for prog in programs()? {
        apply(&prog).map_err(SeccompError::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under the network helper's filters, execve fails with EPERM and a Unix socket with
    /// EAFNOSUPPORT, while an IPv4 socket is made (checked in a child between fork and exec,
    /// with error codes that say which check failed).
    #[test]
    fn the_network_helper_refuses_exec_and_local_sockets() {
        use std::os::unix::process::CommandExt;
        let progs = network_helper().unwrap();
        let mut cmd = std::process::Command::new("/bin/true");
        // SAFETY: only system calls between fork and exec; nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for p in &progs {
                    apply(p)?;
                }
                if libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) < 0 {
                    return Err(std::io::Error::from_raw_os_error(libc::ENOTRECOVERABLE));
                }
                if libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) >= 0
                    || *libc::__errno_location() != libc::EAFNOSUPPORT
                {
                    return Err(std::io::Error::from_raw_os_error(libc::EOWNERDEAD));
                }
                Ok(())
            });
        }
        let e = cmd.spawn().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    }

    #[test]
    fn table_compiles_and_covers_the_required_calls() {
        let progs = programs().unwrap();
        assert_eq!(progs.len(), 2);
        let required = [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "userfaultfd",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "open_by_handle_at",
            "ioctl",
            "socket",
            "mount",
            "unshare",
            "setns",
        ];
        for r in required {
            assert!(RULES.iter().any(|x| x.name == r), "{r} missing");
        }
        let mut nrs: Vec<_> = RULES.iter().map(|r| r.nr).collect();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), RULES.len(), "a syscall is listed twice");
        assert!(RULES.iter().all(|r| !r.reason.is_empty()));
    }
}
