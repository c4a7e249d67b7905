//! File helpers of the local cache: names, hashing, atomic writes and the eviction lock.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use ocibuild_image::atomic;
use ocibuild_image::digest::HashingWriter;

use super::CacheError;

/// The hex part of a `sha256:<64 lowercase hex>` digest.
pub(crate) fn digest_hex(digest: &str) -> Result<&str, CacheError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if is_sha256_hex(hex) => Ok(hex),
        _ => Err(CacheError::InvalidDigest {
            digest: digest.to_string(),
        }),
    }
}

/// Whether `hex` is 64 lowercase hex characters.
pub(crate) fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Checks that `key` is a valid registry tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`), which
/// also makes it a safe file name.
pub(crate) fn validate_key(key: &str) -> Result<(), CacheError> {
    let bad = |reason: &str| CacheError::InvalidKey {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let b = key.as_bytes();
    if b.is_empty() {
        return Err(bad("it is empty"));
    }
    if b.len() > 128 {
        return Err(bad("it is longer than 128 characters"));
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if !word(b[0]) {
        return Err(bad("it must start with a letter, digit or '_'"));
    }
    if !b.iter().all(|&c| word(c) || c == b'.' || c == b'-') {
        return Err(bad("only letters, digits, '_', '.' and '-' are allowed"));
    }
    Ok(())
}

pub(crate) use ocibuild_image::digest::sha256_reader as sha256_of;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh, unique temporary file name in `tmp_dir` (not created).
pub(crate) fn temp_name(tmp_dir: &Path, what: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    tmp_dir.join(format!(
        "{what}-{}-{}-{nanos:08x}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// fsyncs directory `dir` so that a rename into it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    atomic::sync_dir(dir).map_err(CacheError::from)
}

/// Removes `path` when it is missing is fine too.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `dest` atomically: the temporary file `tmp` (removed on failure),
/// fsync, rename, fsync of `dest`'s directory.
pub(crate) fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    atomic::write_atomic(tmp, dest, bytes)?;
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// Copies `src` into the new temporary file `tmp` (removed on failure), hashing on the way,
/// and fsyncs it. Returns the temporary file, the digest and the size.
pub(crate) fn copy_to_temp(tmp: PathBuf, src: &Path) -> Result<(PathBuf, String, u64), CacheError> {
    let result = (|| {
        let input = File::open(src).map_err(CacheError::io("open", src))?;
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(CacheError::io("create", &tmp))?;
        let mut hashing = HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, out));
        io::copy(&mut io::BufReader::new(input), &mut hashing)
            .map_err(CacheError::io("copy", src))?;
        let (out, digest, size) = hashing.finish();
        let out = out.into_inner().map_err(|e| CacheError::Io {
            action: "write",
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        out.sync_all().map_err(CacheError::io("sync", &tmp))?;
        Ok((digest, size))
    })();
    match result {
        Ok((digest, size)) => Ok((tmp, digest, size)),
        Err(e) => {
            let _ = remove_if_exists(&tmp);
            Err(e)
        }
    }
}

/// A file's identity: (device, inode).
pub(crate) type FileId = (u64, u64);

/// Outcome of checking a blob file against its digest.
pub(crate) enum BlobCheck {
    /// Not there.
    Missing,
    /// There and intact.
    Intact,
    /// There but wrong; `why` says how. `identity` is the (dev, inode) that was checked.
    Corrupt { why: String, identity: FileId },
}

/// Checks `path` against `digest` and, when given, `size`.
pub(crate) fn check_blob(path: &Path, digest: &str, size: Option<u64>) -> io::Result<BlobCheck> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BlobCheck::Missing),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let identity = (meta.dev(), meta.ino());
    if !meta.is_file() {
        return Ok(BlobCheck::Corrupt {
            why: "it is not a regular file".into(),
            identity,
        });
    }
    if let Some(size) = size {
        if meta.len() != size {
            return Ok(BlobCheck::Corrupt {
                why: format!("it has {} bytes instead of {size}", meta.len()),
                identity,
            });
        }
    }
    let (actual, _) = sha256_of(io::BufReader::new(file))?;
    if actual != digest {
        return Ok(BlobCheck::Corrupt {
            why: format!("its content hashes to {actual}"),
            identity,
        });
    }
    Ok(BlobCheck::Intact)
}

/// Removes `path` if it still is the file `identity` (so that a good blob another process
/// has just renamed into place is not removed instead of the corrupt one).
pub(crate) fn remove_if_same(path: &Path, identity: FileId) {
    if is_same(path, identity) {
        let _ = fs::remove_file(path);
    }
}

/// Whether `path` still is the file `identity`.
pub(crate) fn is_same(path: &Path, identity: FileId) -> bool {
    fs::symlink_metadata(path).is_ok_and(|meta| (meta.dev(), meta.ino()) == identity)
}

/// Sets `path`'s modification time to now (last use for LRU); errors are ignored because
/// the file may have been evicted meanwhile.
pub(crate) fn touch(path: &Path) {
    let _ = filetime::set_file_mtime(path, filetime::FileTime::now());
}

/// A `flock` on a file, released when dropped.
pub(crate) struct FileLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Whether a [`lock`] is shared with other holders or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// Several holders at once; none while an exclusive lock is held.
    Shared,
    /// One holder.
    Exclusive,
}

/// Takes a `flock` of `kind` on `path` (created if missing), waiting for it.
pub(crate) fn lock(path: &Path, kind: LockKind) -> Result<FileLock, CacheError> {
    lock_blocking(open_lock_file(path)?, kind, path)
}

/// Takes a `flock` of `kind` on `path` (created if missing), waiting for it up to `wait`
/// (not at all when it is zero): `None` when others held it all that time. So a stopped or
/// stuck holder cannot hang every other process. The waiting is done by a thread, which
/// releases the lock at once should it get it after `wait`.
pub(crate) fn lock_within(
    path: &Path,
    kind: LockKind,
    wait: Duration,
) -> Result<Option<FileLock>, CacheError> {
    let arg = match kind {
        LockKind::Shared => FlockArg::LockSharedNonblock,
        LockKind::Exclusive => FlockArg::LockExclusiveNonblock,
    };
    let file = match Flock::lock(open_lock_file(path)?, arg) {
        Ok(lock) => return Ok(Some(FileLock { _lock: lock })),
        Err((file, Errno::EWOULDBLOCK | Errno::EINTR)) => file,
        Err((_, errno)) => return Err(CacheError::io("lock", path)(errno.into())),
    };
    if wait.is_zero() {
        return Ok(None);
    }
    let (sender, receiver) = mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::spawn(move || {
        // Unsent (the caller gave up), the lock is dropped: released.
        let _ = sender.send(lock_blocking(file, kind, &owned));
    });
    match receiver.recv_timeout(wait) {
        Ok(locked) => locked.map(Some),
        Err(_) => Ok(None),
    }
}

/// Locks `file` (the lock file `path`), waiting for it.
fn lock_blocking(file: File, kind: LockKind, path: &Path) -> Result<FileLock, CacheError> {
    let arg = match kind {
        LockKind::Shared => FlockArg::LockShared,
        LockKind::Exclusive => FlockArg::LockExclusive,
    };
    let mut file = file;
    loop {
        match Flock::lock(file, arg) {
            Ok(lock) => return Ok(FileLock { _lock: lock }),
            Err((again, Errno::EINTR)) => file = again,
            Err((_, errno)) => return Err(CacheError::io("lock", path)(errno.into())),
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File, CacheError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(CacheError::io("open lock file", path))
}
