//! Errors of the layer cache.

use std::path::PathBuf;

/// Everything that can go wrong in the layer cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file operation in the cache directory (or on a layer file) failed.
    #[error("layer cache: cannot {action} {path}: {source}")]
    Io {
        /// What was being done (`create`, `read`, `rename`, ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A cache key is not usable as a file name and registry tag.
    #[error("invalid layer cache key {key:?}: {reason}")]
    InvalidKey {
        /// The key given.
        key: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A digest is not `sha256:` followed by 64 lowercase hex characters.
    #[error("invalid digest {digest:?}: expected sha256: followed by 64 lowercase hex characters")]
    InvalidDigest {
        /// The digest given.
        digest: String,
    },

    /// A [`CachedLayer`](super::CachedLayer) to store has an unusable field.
    #[error("invalid layer cache entry: {reason}")]
    InvalidEntry {
        /// What is wrong.
        reason: String,
    },

    /// A file to store does not have the digest it was announced with.
    #[error("{what} does not match its digest: expected {expected}, found {actual}")]
    DigestMismatch {
        /// The file or data checked.
        what: String,
        /// The announced digest.
        expected: String,
        /// The digest of its content.
        actual: String,
    },

    /// A file to store does not have the size it was announced with.
    #[error("{path} has {actual} bytes, but the layer says {expected}")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The announced size.
        expected: u64,
        /// The file's size.
        actual: u64,
    },

    /// A size such as `--cache-dir-max-size` could not be parsed.
    #[error("invalid size {input:?}: {reason} (examples: 1024, 500MiB, 10GB, 2Gi)")]
    InvalidSize {
        /// The text given.
        input: String,
        /// What is wrong.
        reason: String,
    },

    /// A duration such as `--cache-ttl` could not be parsed.
    #[error("invalid duration {input:?}: {reason} (examples: 336h, 2h30m, 14d)")]
    InvalidDuration {
        /// The text given.
        input: String,
        /// What is wrong.
        reason: String,
    },

    /// The cache repository is not a valid `registry/path` without tag or digest.
    #[error("invalid cache repository {input:?}: {reason}")]
    InvalidRepository {
        /// The text given.
        input: String,
        /// What is wrong.
        reason: String,
    },

    /// The `oci:` cache directory is not a usable OCI image layout.
    #[error("layer cache: {dir} is not a usable OCI image layout: {reason}")]
    InvalidLayout {
        /// The layout directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// Nothing was stored, and that is only a warning: see [`NotStored`].
    #[error(transparent)]
    NotStored(#[from] NotStored),

    /// A request to the cache repository failed.
    #[error("layer cache {what} in {repository}: {source}")]
    Registry {
        /// What was being done.
        what: String,
        /// The cache repository.
        repository: String,
        /// The registry client's error.
        source: Box<ocibuild_registry::Error>,
    },
}

/// A store into the local cache directory that stored nothing because the directory is full
/// (`ENOSPC`, `EDQUOT`, also after evicting to make room), failing (`EIO`, `EROFS`), or the
/// blob is larger than the size limit. The cache is a hint: callers show this as a warning
/// and carry on without caching.
#[derive(Debug, thiserror::Error)]
#[error("{what} was not stored in the layer cache: {reason}")]
pub struct NotStored {
    /// What was to be stored: `entry KEY` or `blob sha256:...`.
    pub what: String,
    /// Why not, for the warning.
    pub reason: String,
}

impl CacheError {
    /// Whether this is [`CacheError::NotStored`]: a warning, not a failure.
    pub fn is_not_stored(&self) -> bool {
        matches!(self, CacheError::NotStored(_))
    }

    /// Whether this is an I/O error of a full or failing filesystem (`ENOSPC`, `EDQUOT`,
    /// `EIO`, `EROFS`), which the local cache degrades to a miss or a [`NotStored`].
    pub(crate) fn is_storage_fault(&self) -> bool {
        matches!(self, CacheError::Io { source, .. } if is_storage_fault(source))
    }

    /// Whether this is an I/O error of a full filesystem (`ENOSPC`, `EDQUOT`), which
    /// evicting may cure.
    pub(crate) fn is_no_space(&self) -> bool {
        matches!(self, CacheError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc_errno::ENOSPC | libc_errno::EDQUOT)))
    }

    /// A closure turning an I/O error into [`CacheError::Io`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> CacheError {
        let path = path.into();
        move |source| CacheError::Io {
            action,
            path,
            source,
        }
    }
}

impl From<ocibuild_image::atomic::IoError> for CacheError {
    fn from(e: ocibuild_image::atomic::IoError) -> CacheError {
        CacheError::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}

/// Whether `e` is an error of a full or failing filesystem (`ENOSPC`, `EDQUOT`, `EIO`,
/// `EROFS`) rather than of the request (`ENOENT`, `EACCES`, ...).
pub(crate) fn is_storage_fault(e: &std::io::Error) -> bool {
    use libc_errno::{EDQUOT, EIO, ENOSPC, EROFS};
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT | EIO | EROFS))
}

/// The errno values the cache tells apart, from nix.
mod libc_errno {
    use nix::errno::Errno;
    pub const ENOSPC: i32 = Errno::ENOSPC as i32;
    pub const EDQUOT: i32 = Errno::EDQUOT as i32;
    pub const EIO: i32 = Errno::EIO as i32;
    pub const EROFS: i32 = Errno::EROFS as i32;
}
