//! Placing new directory trees away from recently deleted files.
//!
//! A build creates thousands of files at a time (an extracted layer, a walk's rootfs, a
//! step's upper directory) and often right after something deleted thousands (the last
//! build's temporary directory, a pruned store). On ext4 without a journal the inode
//! allocator will not reuse an inode freed in the last minute or so, and checks every free
//! inode of the block group it searches against that rule, one inode table lookup each. A
//! new tree created where a big one was just deleted then pays for every deleted inode on
//! every file it creates: the Debian build of the performance benchmark took 9 s instead of
//! 2 s, 60 % of it in `find_inode_bit` and `recently_deleted`.
//!
//! [`spread_subdirectories`] sets ext4's top-directory flag (`FS_TOPDIR_FL`, `chattr +T`)
//! on a directory of ours that new trees are made in: ext4 then places each directory made
//! directly in it (the Orlov allocator's top-level rule) in a block group with few
//! directories and more than the average free inodes and blocks, so a new tree starts in a
//! quiet group instead of its parent's, and its files follow it there. Other filesystems
//! have no such flag and need none; for them it does nothing.

use std::fs::File;
use std::path::Path;

use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};

/// Whether [`spread_subdirectories`] took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// `dir` carries the top-directory flag (set now or before).
    Flagged,
    /// The filesystem has no such flag (not ext2/3/4), or `dir` could not be opened or
    /// changed: new directories are placed as the filesystem always does.
    Unsupported,
}

/// Asks the filesystem to place each directory created directly in `dir` in a block group
/// of its own choosing rather than next to `dir` (see the [module documentation](self)).
/// Only for directories ocibuild made and owns; a hint, never an error.
///
/// Give the directories made in `dir` names new to it each time: ext4 starts its search
/// from a hash of the name, so a name used again leads to the group its last holder (just
/// deleted, maybe) was placed in.
pub fn spread_subdirectories(dir: &Path) -> Spread {
    let Ok(file) = File::open(dir) else {
        return Spread::Unsupported;
    };
    // ENOTTY or EOPNOTSUPP: a filesystem without inode flags (tmpfs, overlay, xfs, ...).
    let Ok(flags) = ioctl_getflags(&file) else {
        return Spread::Unsupported;
    };
    if flags.contains(IFlags::TOPDIR) {
        return Spread::Flagged;
    }
    match ioctl_setflags(&file, flags | IFlags::TOPDIR) {
        Ok(()) => Spread::Flagged,
        // EOPNOTSUPP or EINVAL: inode flags, but not this one (btrfs, f2fs); EPERM: not
        // ours after all.
        Err(_) => Spread::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_only_unsupported() {
        assert_eq!(
            spread_subdirectories(Path::new("/nonexistent/ocibuild-spread")),
            Spread::Unsupported
        );
    }
}
