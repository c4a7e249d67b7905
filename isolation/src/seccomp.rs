//! The seccomp filter of a RUN command: the reviewed list of system calls a build step
//! may not make, and the BPF program that refuses them.
//!
//! The list follows Docker's default profile for a container holding Docker's default
//! capabilities (see [`super::caps`]): everything that needs CAP_SYS_ADMIN, CAP_SYS_MODULE,
//! CAP_SYS_TIME, CAP_SYS_BOOT, CAP_SYS_PTRACE (`process_vm_*`, `kcmp`), CAP_SYS_NICE
//! (memory policies), CAP_SYSLOG or CAP_SYS_PACCT, plus the kernel interfaces Docker
//! blocks outright (keyrings, `bpf`, `userfaultfd`, `perf_event_open`, io_uring, ...).
//! Such calls fail with `EPERM`, as under Docker, so build tools see an ordinary refusal.
//! `clone` with a namespace flag fails with `EPERM`; `clone3` (whose flags a filter
//! cannot inspect) fails with `ENOSYS`, so that the C library falls back to `clone`.
//! Everything else is allowed: the filter is a deny-list, which keeps every build tool
//! working that works under Docker.
//!
//! Syscall numbers come from the `syscalls` crate's per-architecture tables. The BPF
//! program is generated here rather than by a filter crate because it must cover both
//! ABIs of the host: on x86_64 the i386 ABI (32-bit programs, which Docker allows) gets the
//! same list under its own numbers, and x32 calls are refused; on aarch64 likewise the
//! 32-bit arm ABI. A call under any other ABI kills the process.

use std::str::FromStr;

/// System calls refused with `EPERM`, by name (names an ABI lacks are skipped).
pub(crate) const DENIED: &[&str] = &[
    // Mounts, namespaces and the root: CAP_SYS_ADMIN.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "unshare",
    "setns",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "fanotify_init",
    "name_to_handle_at",
    "open_by_handle_at",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "nfsservctl",
    "swapon",
    "swapoff",
    "vhangup",
    // Kernel modules and kexec: CAP_SYS_MODULE, CAP_SYS_BOOT.
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    // Clocks: CAP_SYS_TIME.
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "clock_adjtime",
    "clock_adjtime64",
    // Keyrings, BPF, perf, userfaultfd, io_uring: blocked by Docker outright.
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Other processes' memory: CAP_SYS_PTRACE.
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    // NUMA memory policies: CAP_SYS_NICE.
    "mbind",
    "get_mempolicy",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "migrate_pages",
    "move_pages",
    // Kernel log, accounting, obsolete or raw hardware interfaces.
    "syslog",
    "acct",
    "_sysctl",
    "sysfs",
    "ustat",
    "uselib",
    "iopl",
    "ioperm",
    "vm86",
    "vm86old",
];

/// Namespace flags `clone` may not be given (as under Docker without CAP_SYS_ADMIN).
const CLONE_NAMESPACES: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// x32 system calls carry this bit in their number on the x86_64 ABI.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// `struct seccomp_data` offsets: nr, arch, and the low 32 bits of args[0].
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0_LOW: u32 = 16;

// BPF opcodes (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const JMP_JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// One ABI the filter covers: its audit arch value and its numbers of the calls.
struct Abi {
    audit_arch: u32,
    denied: Vec<u32>,
    clone: Option<u32>,
    clone3: Option<u32>,
    /// Refuse every x32 call (the x86_64 ABI).
    refuse_x32: bool,
}

impl Abi {
    fn new<S: FromStr>(audit_arch: u32, id: impl Fn(&S) -> i32, refuse_x32: bool) -> Abi {
        let number = |name: &str| S::from_str(name).ok().map(|s| id(&s) as u32);
        Abi {
            audit_arch,
            denied: DENIED.iter().filter_map(|name| number(name)).collect(),
            clone: number("clone"),
            clone3: number("clone3"),
            refuse_x32,
        }
    }
}

/// The ABIs of this host, native first.
fn host_abis() -> Vec<Abi> {
    #[cfg(target_arch = "x86_64")]
    {
        use syscalls::{x86, x86_64};
        vec![
            Abi::new(0xC000_003E, x86_64::Sysno::id, true), // AUDIT_ARCH_X86_64
            Abi::new(0x4000_0003, x86::Sysno::id, false),   // AUDIT_ARCH_I386
        ]
    }
    #[cfg(target_arch = "aarch64")]
    {
        use syscalls::{aarch64, arm};
        vec![
            Abi::new(0xC000_00B7, aarch64::Sysno::id, false), // AUDIT_ARCH_AARCH64
            Abi::new(0x4000_0028, arm::Sysno::id, false),     // AUDIT_ARCH_ARM
        ]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Vec::new()
    }
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}

/// The instructions for one ABI, entered with nothing loaded; every path returns.
fn abi_block(abi: &Abi) -> Vec<libc::sock_filter> {
    let mut p = vec![stmt(LD_W_ABS, OFFSET_NR)];
    if abi.refuse_x32 {
        p.push(jump(JMP_JGE_K, X32_SYSCALL_BIT, 0, 1));
        p.push(stmt(RET_K, errno(libc::EPERM)));
    }
    for nr in &abi.denied {
        p.push(jump(JMP_JEQ_K, *nr, 0, 1));
        p.push(stmt(RET_K, errno(libc::EPERM)));
    }
    if let Some(nr) = abi.clone3 {
        p.push(jump(JMP_JEQ_K, nr, 0, 1));
        p.push(stmt(RET_K, errno(libc::ENOSYS)));
    }
    if let Some(nr) = abi.clone {
        // clone: refuse when any namespace flag is set in its flags (args[0]).
        p.push(jump(JMP_JEQ_K, nr, 0, 3));
        p.push(stmt(LD_W_ABS, OFFSET_ARG0_LOW));
        p.push(jump(JMP_JSET_K, CLONE_NAMESPACES, 0, 1));
        p.push(stmt(RET_K, errno(libc::EPERM)));
    }
    p.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
    p
}

/// The whole program: per ABI, an architecture check that skips the ABI's block when it
/// does not match; a call under an ABI not covered kills the process. `None` on hosts
/// whose ABIs are not covered (only x86_64 and aarch64 are).
pub(crate) fn program() -> Option<Vec<libc::sock_filter>> {
    let abis = host_abis();
    if abis.is_empty() {
        return None;
    }
    let mut p = Vec::new();
    for abi in &abis {
        let block = abi_block(abi);
        p.push(stmt(LD_W_ABS, OFFSET_ARCH));
        p.push(jump(JMP_JEQ_K, abi.audit_arch, 1, 0));
        p.push(stmt(JMP_JA, block.len() as u32));
        p.extend(block);
    }
    p.push(stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS));
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `program` on a `seccomp_data` the way the kernel's BPF interpreter does (only
    /// the opcodes this module emits), returning the action.
    fn evaluate(program: &[libc::sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let word = |offset: u32| match offset {
            OFFSET_NR => nr,
            OFFSET_ARCH => arch,
            OFFSET_ARG0_LOW => arg0 as u32,
            other => panic!("unexpected load at {other}"),
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = program[pc];
            pc += 1;
            match ins.code {
                LD_W_ABS => acc = word(ins.k),
                JMP_JA => pc += ins.k as usize,
                JMP_JEQ_K | JMP_JGE_K | JMP_JSET_K => {
                    let taken = match ins.code {
                        JMP_JEQ_K => acc == ins.k,
                        JMP_JGE_K => acc >= ins.k,
                        _ => acc & ins.k != 0,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                RET_K => return ins.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_filter_refuses_the_listed_calls_under_both_x86_abis_and_allows_the_rest() {
        use syscalls::{x86, x86_64};
        let p = program().unwrap();
        let (native, i386) = (0xC000_003E, 0x4000_0003);
        let eperm = errno(libc::EPERM);
        let allow = libc::SECCOMP_RET_ALLOW;
        for s in [
            x86_64::Sysno::keyctl,
            x86_64::Sysno::mount,
            x86_64::Sysno::bpf,
        ] {
            assert_eq!(evaluate(&p, native, s.id() as u32, 0), eperm, "{s}");
        }
        for s in [x86::Sysno::keyctl, x86::Sysno::mount, x86::Sysno::unshare] {
            assert_eq!(evaluate(&p, i386, s.id() as u32, 0), eperm, "i386 {s}");
        }
        for s in [
            x86_64::Sysno::read,
            x86_64::Sysno::openat,
            x86_64::Sysno::chroot,
        ] {
            assert_eq!(evaluate(&p, native, s.id() as u32, 0), allow, "{s}");
        }
        assert_eq!(evaluate(&p, i386, x86::Sysno::read.id() as u32, 0), allow);
        let x32_keyctl = X32_SYSCALL_BIT | x86_64::Sysno::keyctl.id() as u32;
        assert_eq!(evaluate(&p, native, x32_keyctl, 0), eperm, "x32");
        assert_eq!(
            evaluate(&p, 0xC000_00B7, 0, 0),
            libc::SECCOMP_RET_KILL_PROCESS,
            "a foreign ABI"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn clone_is_refused_only_with_namespace_flags_and_clone3_is_unimplemented() {
        use syscalls::x86_64::Sysno;
        let p = program().unwrap();
        let native = 0xC000_003E;
        let clone = Sysno::clone.id() as u32;
        let fork_flags = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64 | 17;
        let thread_flags = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(
            evaluate(&p, native, clone, fork_flags),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(
            evaluate(&p, native, clone, thread_flags),
            libc::SECCOMP_RET_ALLOW
        );
        for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWPID] {
            assert_eq!(
                evaluate(&p, native, clone, fork_flags | flag as u64),
                errno(libc::EPERM)
            );
        }
        let clone3 = Sysno::clone3.id() as u32;
        assert_eq!(evaluate(&p, native, clone3, 0), errno(libc::ENOSYS));
    }

    #[test]
    fn every_listed_call_exists_under_the_native_abi_or_is_known_to_be_absent() {
        let abis = host_abis();
        let Some(native) = abis.first() else { return };
        // Obsolete or architecture-specific names absent from some tables.
        let optional = [
            "stime",
            "clock_settime64",
            "clock_adjtime64",
            "_sysctl",
            "uselib",
            "ustat",
            "sysfs",
            "iopl",
            "ioperm",
            "vm86",
            "vm86old",
            "create_module",
            "query_module",
            "get_kernel_syms",
            "nfsservctl",
            "umount",
        ];
        let required = DENIED.len() - optional.iter().filter(|n| DENIED.contains(n)).count();
        assert!(native.denied.len() >= required, "{}", native.denied.len());
    }
}
