//! Linux capabilities a RUN command may hold, as bit masks (bit n = capability n).
//!
//! The set is Docker's (and runc's) default for containers: what package managers,
//! `chown`, `setuid` programs and `mknod` need, and nothing that administers the host
//! (no CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_NET_ADMIN, CAP_SYS_TIME, ...).

/// `CAP_SYS_CHROOT`'s number.
pub(crate) const SYS_CHROOT: u32 = 18;

/// Docker's default capability set, by name and number.
pub(crate) const DEFAULT: &[(&str, u32)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_RAW", 13),
    ("CAP_SYS_CHROOT", SYS_CHROOT),
    ("CAP_MKNOD", 27),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_SETFCAP", 31),
];

/// The mask of [`DEFAULT`] (`0xa80425fb`).
pub(crate) fn default_mask() -> u64 {
    DEFAULT.iter().fold(0, |mask, (_, bit)| mask | 1 << bit)
}

/// Every capability up to `last` (the kernel's `cap_last_cap`).
pub(crate) fn full_mask(last: u32) -> u64 {
    if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    }
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`);
/// 40 (CAP_CHECKPOINT_RESTORE, Linux 5.9) when it cannot be read.
pub(crate) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// `CAP_SYS_ADMIN`'s number.
pub(crate) const SYS_ADMIN: u32 = 21;

/// What this process holds, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// The permitted set.
    pub permitted: u64,
    /// The effective set.
    pub effective: u64,
    /// The bounding set.
    pub bounding: u64,
    /// Whether a seccomp filter already applies (as a container runtime installs one).
    pub filtered: bool,
}

impl Held {
    /// Reads `/proc/self/status`; `None` when it cannot be read or parsed.
    pub(crate) fn current() -> Option<Held> {
        Held::parse(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    /// Parses the text of a `/proc/<pid>/status` file.
    pub(crate) fn parse(status: &str) -> Option<Held> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let mask = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
        Some(Held {
            permitted: mask("CapPrm")?,
            effective: mask("CapEff")?,
            bounding: mask("CapBnd")?,
            filtered: field("Seccomp").is_some_and(|m| m != "0"),
        })
    }

    /// Everything: a process that is root in a new user namespace.
    pub(crate) fn all(last: u32) -> Held {
        Held {
            permitted: full_mask(last),
            effective: full_mask(last),
            bounding: full_mask(last),
            filtered: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_set_is_dockers() {
        assert_eq!(default_mask(), 0xa804_25fb);
    }

    #[test]
    fn full_masks_cover_every_capability_up_to_the_last() {
        assert_eq!(full_mask(40), 0x1ff_ffff_ffff);
        assert_eq!(full_mask(63), u64::MAX);
        assert_eq!(full_mask(0), 1);
    }

    #[test]
    fn held_capabilities_are_read_from_a_status_file() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n\
                      CapEff:\t00000000a80425fb\nCapBnd:\t000001ffffffffff\n\
                      CapAmb:\t0000000000000000\nSeccomp:\t2\n";
        let held = Held::parse(status).unwrap();
        assert_eq!(held.permitted, 0xa804_25fb);
        assert_eq!(held.effective, 0xa804_25fb);
        assert_eq!(held.bounding, 0x1ff_ffff_ffff);
        assert!(held.filtered);
        assert_eq!(Held::parse("Name:\tx\n"), None);
    }
}
