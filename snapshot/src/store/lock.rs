//! `flock(2)` locks on per-layer files that the holder of an exclusive lock may remove.
//!
//! Removing a lock file races with processes that opened it before the removal and lock
//! it afterwards: they would hold a lock on a file nobody else can open any more. So after
//! every lock the file is checked to still be the one at its path; if it is not, the lock
//! is taken again on the file that is there now.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{io_err, Error, Result};

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Many holders at once (a build using a layer; an insertion in progress).
    Shared,
    /// One holder, no shared ones (removing a layer or leftovers of one).
    Exclusive,
}

/// A held lock, released when dropped (or when the process dies, however it dies).
#[derive(Debug)]
pub(super) struct Lock {
    _flock: Flock<File>,
}

/// Locks the file at `path` (created if missing), waiting for conflicting holders.
pub(super) fn wait(path: &Path, kind: Kind) -> Result<Lock> {
    let arg = match kind {
        Kind::Shared => FlockArg::LockShared,
        Kind::Exclusive => FlockArg::LockExclusive,
    };
    lock(path, arg).map(|lock| lock.unwrap_or_else(|| unreachable!("a waiting lock")))
}

/// Locks the file at `path` (created if missing) if nobody holds a conflicting lock.
pub(super) fn try_lock(path: &Path, kind: Kind) -> Result<Option<Lock>> {
    let arg = match kind {
        Kind::Shared => FlockArg::LockSharedNonblock,
        Kind::Exclusive => FlockArg::LockExclusiveNonblock,
    };
    lock(path, arg)
}

fn lock(path: &Path, arg: FlockArg) -> Result<Option<Lock>> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_err(path, "open lock file"))?;
        let flock = match Flock::lock(file, arg) {
            Ok(flock) => flock,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, errno)) => return Err(Error::io(path, "lock", io::Error::from(errno))),
        };
        if is_at(&flock, path)? {
            return Ok(Some(Lock { _flock: flock }));
        }
    }
}

/// True if `file` is (still) the file at `path`.
fn is_at(file: &File, path: &Path) -> Result<bool> {
    let held = file.metadata().map_err(io_err(path, "stat lock file"))?;
    match fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, "stat lock file", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let a = wait(&path, Kind::Shared).unwrap();
        let b = try_lock(&path, Kind::Shared).unwrap();
        assert!(b.is_some());
        assert!(try_lock(&path, Kind::Exclusive).unwrap().is_none());
        drop((a, b));
        let x = try_lock(&path, Kind::Exclusive).unwrap();
        assert!(x.is_some());
        assert!(try_lock(&path, Kind::Shared).unwrap().is_none());
    }

    #[test]
    fn a_lock_taken_on_a_removed_file_is_taken_again_on_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let remover = wait(&path, Kind::Exclusive).unwrap();
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || wait(&path, Kind::Shared).unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        fs::remove_file(&path).unwrap();
        drop(remover);
        let held = waiter.join().unwrap();
        assert!(path.exists(), "the waiter made a new lock file");
        assert!(
            try_lock(&path, Kind::Exclusive).unwrap().is_none(),
            "the waiter's lock is on the file now at the path"
        );
        drop(held);
    }
}
