//! File helpers of the local cache: names, hashing, atomic writes and the eviction lock.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Writes `bytes` to `dest` atomically: a temporary file in `tmp_dir`, fsync, rename,
/// fsync of `dest`'s directory.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    atomic::write_atomic(&temp_name(tmp_dir, "write"), dest, bytes)?;
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// Copies `src` into a new temporary file in `tmp_dir`, hashing on the way, and fsyncs it.
/// Returns the temporary file, the digest and the size.
pub(crate) fn copy_to_temp(
    tmp_dir: &Path,
    src: &Path,
) -> Result<(PathBuf, String, u64), CacheError> {
    let tmp = temp_name(tmp_dir, "blob");
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
    if let Ok(meta) = fs::symlink_metadata(path) {
        if (meta.dev(), meta.ino()) == identity {
            let _ = fs::remove_file(path);
        }
    }
}

/// Sets `path`'s modification time to now (last use for LRU); errors are ignored because
/// the file may have been evicted meanwhile.
pub(crate) fn touch(path: &Path) {
    let _ = filetime::set_file_mtime(path, filetime::FileTime::now());
}

/// An exclusive `flock` on a file, released when dropped.
pub(crate) struct FileLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Tries to take an exclusive lock on `path` without waiting: `Ok(None)` when another
/// process (or another open file description in this one) holds it.
pub(crate) fn try_lock(path: &Path) -> Result<Option<FileLock>, CacheError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(CacheError::io("open lock file", path))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(FileLock { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(CacheError::Io {
            action: "lock",
            path: path.to_path_buf(),
            source: io::Error::from(errno),
        }),
    }
}
