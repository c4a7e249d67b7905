//! The one error type of this crate.

use std::io;
use std::path::{Path, PathBuf};

/// Result type used throughout `ocibuild-snapshot`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while reading, diffing or writing root filesystems and layers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The layer store was written with the overlay marks in another xattr namespace than
    /// this process' mounts read (a store of root used rootless, or the other way round).
    #[error(
        "the layer store {store} keeps overlay marks in {written}.overlay.* xattrs, and this \
         process reads {wanted}.overlay.* ({why}): give this build another --layer-store"
    )]
    StoreXattrs {
        /// The store's directory.
        store: PathBuf,
        /// The namespace the store was written with.
        written: String,
        /// This process' namespace.
        wanted: &'static str,
        /// Why this process uses it.
        why: &'static str,
    },
    /// An owner that the user namespace of a rootless build does not map.
    #[error(
        "{path}: owner {uid}:{gid} is not mapped in this user namespace (a rootless build \
         maps 0 to the user and 1.. to the user's ranges in /etc/subuid and /etc/subgid, \
         see `ocibuild unshare cat /proc/self/uid_map`): give the user a range that reaches \
         it, e.g. `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER` \
         for ids up to 65536"
    )]
    UnmappedId {
        /// The path in the layer.
        path: PathBuf,
        /// The owner's uid.
        uid: u32,
        /// The owner's gid.
        gid: u32,
    },
    /// A filesystem operation on `path` failed.
    #[error("{path}: {op} failed: {source}")]
    Io {
        /// The path the operation was applied to.
        path: PathBuf,
        /// What was being done, e.g. "lstat" or "create file".
        op: &'static str,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// A path from a layer (or a link target) would lead outside the root filesystem.
    #[error("unsafe path {path}: {reason}")]
    UnsafePath {
        /// The offending path as found in the layer.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Resolving a path inside the root met too many symbolic links.
    #[error("{path}: too many levels of symbolic links (more than {limit})")]
    SymlinkLoop {
        /// The path being resolved.
        path: PathBuf,
        /// The number of links allowed.
        limit: u32,
    },
    /// A tar stream could not be read.
    #[error("reading layer tar: {source}")]
    TarRead {
        /// The error reported by the tar reader or decompressor.
        #[source]
        source: io::Error,
    },
    /// A layer entry is well-formed tar but cannot be applied.
    #[error("layer entry {path}: {reason}")]
    BadEntry {
        /// The entry's path inside the layer.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A path or value cannot be written into a tar header.
    #[error("cannot write tar entry {path}: {reason}")]
    TarWrite {
        /// The entry's path inside the layer.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `Snapshotter::changes` was called before `Snapshotter::baseline`.
    #[error("{rootfs}: changes requested before a baseline was recorded")]
    NoBaseline {
        /// The root filesystem that was asked about.
        rootfs: PathBuf,
    },
    /// An option value is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A layer file's bytes do not match the digest and size recorded for it.
    #[error("{path}: the layer file is corrupt: recorded {expected}, the file has {found}")]
    CorruptLayer {
        /// The layer file.
        path: PathBuf,
        /// The recorded digest and size, `sha256:<hex> (<n> bytes)`.
        expected: String,
        /// What the file has, in the same form.
        found: String,
    },
    /// A digest is not of the form `sha256:<64 lowercase hex digits>`.
    #[error("{digest:?} is not a sha256 digest (sha256:<64 lowercase hex digits>)")]
    InvalidDigest {
        /// The digest as given.
        digest: String,
    },
    /// A layer's bytes do not match the digest they were announced with; nothing was kept.
    #[error("layer {diff_id}: its {what} is {found}, not {expected}")]
    DigestMismatch {
        /// The diff ID the layer was to be stored under.
        diff_id: String,
        /// Which digest: `digest` (of the compressed blob) or `diff_id` (of the tar).
        what: &'static str,
        /// The announced digest.
        expected: String,
        /// The digest of the bytes read.
        found: String,
    },
    /// More lower directories than one overlay mount can stack. The caller reacts: it can
    /// squash some of them into one directory, or fall back to the walk snapshotter.
    #[error(
        "{count} lower directories are more than one overlay mount takes here (at most \
         {limit}): squash layers or use the walk snapshotter"
    )]
    TooManyLowers {
        /// How many were asked for.
        count: usize,
        /// How many fit.
        limit: usize,
    },
    /// Mounting an overlay failed.
    #[error("overlay mount: {step} failed: {source}{}", kernel_note(.kernel))]
    Overlay {
        /// What was being done, e.g. "fsopen" or "create the filesystem".
        step: &'static str,
        /// What the kernel logged about it (the mount context's messages), if anything.
        kernel: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// A snapshotter was given lower directories that do not continue the ones it already
    /// holds.
    #[error("lower directories do not continue the snapshotter's rootfs: {0}")]
    LowersMismatch(String),
}

/// `" (kernel: ...)"` for a non-empty kernel message.
fn kernel_note(kernel: &str) -> String {
    if kernel.is_empty() {
        String::new()
    } else {
        format!(" (kernel: {kernel})")
    }
}

impl Error {
    /// Builds an [`Error::Io`] for `path` and `op` from an I/O error.
    pub fn io(path: &Path, op: &'static str, source: io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }
}

/// Returns a closure turning an `io::Error` into an [`Error::Io`] for `path` and `op`.
pub(crate) fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::io(path, op, source)
}
