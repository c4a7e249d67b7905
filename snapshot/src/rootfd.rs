//! File operations inside a root filesystem that never follow a link out of it.
//!
//! After a Dockerfile `RUN`, anything in the rootfs may be a symbolic link: `/etc` may
//! point at the host's `/etc`, or at `../../..`. Joining a host path (`rootfs.join(p)`)
//! and handing it to `std::fs` lets the kernel follow such links on the host. This module
//! is the one place where ocibuild touches files inside a rootfs from the host side:
//!
//! - [`RootDir`] holds a descriptor of the rootfs directory. Paths inside it are resolved
//!   with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: the kernel treats the
//!   descriptor as `/`, so `..` and absolute or relative symlink targets never leave it,
//!   and `/proc/self/fd`-style magic links are refused. When `openat2` is missing
//!   (`ENOSYS`, older kernels or seccomp profiles), the same resolution is done in user
//!   space: one component at a time with `openat(O_PATH | O_NOFOLLOW)`, reading links with
//!   `readlinkat` and restarting absolute targets at the root descriptor, with `..` taken
//!   from the stack of directories actually entered (so it stops at the root).
//! - [`Dir`] is one directory reached that way. Its methods act on a direct child given
//!   by a plain name, relative to the directory descriptor, and never follow that child
//!   if it is a symlink (`unlinkat`, `mkdirat`, `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`,
//!   `symlinkat`, `linkat` without `AT_SYMLINK_FOLLOW`, `mknodat`,
//!   `fchownat`/`fchmodat`/`utimensat` with `AT_SYMLINK_NOFOLLOW`).
//!
//! So an operation on `a/b/c` opens `a/b` inside the root (intermediate symlinks are
//! followed, but only inside the root) and then applies to the name `c` in that exact
//! directory. Even if another process swaps `a` for a link to the host at the same time,
//! the descriptor already held still names a directory inside the rootfs.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use filetime::FileTime;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use crate::error::{Error, Result};
use crate::rootpath::{is_missing, is_plain_name, steps_of, Step, MAX_SYMLINKS};

/// Set once `openat2` turned out to be unavailable; every later resolution walks.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// How often an `openat2` that reported a concurrent rename (`EAGAIN`) is retried.
const OPENAT2_RETRIES: u32 = 8;

/// Converts a nix error to an `io::Error`.
fn os_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Converts a rustix error to a nix one (the rest of this module speaks nix).
fn nix_err(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// `openat(dirfd, name, flags | O_CLOEXEC, mode)` as an owned descriptor.
fn open_at(dirfd: impl AsFd, name: &OsStr, flags: OFlag, mode: u32) -> nix::Result<OwnedFd> {
    let flags = rustix::fs::OFlags::from_bits_retain((flags | OFlag::O_CLOEXEC).bits() as _);
    rustix::fs::openat(
        dirfd,
        name,
        flags,
        rustix::fs::Mode::from_raw_mode(mode as _),
    )
    .map_err(nix_err)
}

/// `openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
fn openat2_in_root(root: impl AsFd, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode as RMode, OFlags, ResolveFlags};
    let flags = OFlags::from_bits_retain((flags | OFlag::O_CLOEXEC).bits() as _);
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    Ok(rustix::fs::openat2(
        root,
        path,
        flags,
        RMode::empty(),
        resolve,
    )?)
}

/// `setxattr(path, key, value)`, following `path` (used on `/proc/self/fd` entries).
fn set_xattr_following(path: &str, key: &OsStr, value: &[u8]) -> io::Result<()> {
    let flags = rustix::fs::XattrFlags::empty();
    Ok(rustix::fs::setxattr(path, key, value, flags)?)
}

/// A directory inside a root filesystem, held open.
///
/// Every method acts on a direct child named by a plain file name (`.` names the
/// directory itself where that makes sense) and never follows that child if it is a
/// symbolic link. Names with `/`, `..` or NUL bytes are refused with
/// [`Error::UnsafePath`].
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// The host path of the root, for messages.
    root: Arc<Path>,
    /// The path inside the root this directory was reached by, for messages and callers'
    /// bookkeeping (without symlinks when reached by a walk, see [`RootDir::resolve`]).
    rel: PathBuf,
}

impl Dir {
    /// The path inside the root this directory was opened by (symlink-free when it came
    /// from [`RootDir::create_dir_all`], [`RootDir::as_dir`] or [`Dir::open_dir`]).
    pub fn rel(&self) -> &Path {
        &self.rel
    }

    /// The host path of this directory, for messages only: it must never be opened.
    pub fn display_path(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    /// An error for operation `op` on child `name`.
    fn err(&self, name: &OsStr, op: &'static str, e: Errno) -> Error {
        let path = if name == "." {
            self.display_path()
        } else {
            self.display_path().join(name)
        };
        Error::io(&path, op, os_err(e))
    }

    /// Refuses anything but a plain name, or `.` when `self_ok`.
    fn check(&self, name: &OsStr, self_ok: bool) -> Result<()> {
        if is_plain_name(name) || (self_ok && name == ".") {
            return Ok(());
        }
        Err(Error::UnsafePath {
            path: self.rel.join(name),
            reason: "not a plain file name".into(),
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A second handle on the same directory.
    pub fn try_clone(&self) -> Result<Dir> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::io(&self.display_path(), "dup", e))?;
        Ok(Dir {
            fd,
            root: self.root.clone(),
            rel: self.rel.clone(),
        })
    }

    /// The metadata of this directory itself.
    pub fn metadata(&self) -> Result<fs::Metadata> {
        let name = OsStr::new(".");
        self.lstat(name)?
            .ok_or_else(|| self.err(name, "stat", Errno::ENOENT))
    }

    /// True if `other` is the same directory (same device and inode).
    pub fn same_as(&self, other: &Dir) -> Result<bool> {
        let (a, b) = (self.metadata()?, other.metadata()?);
        Ok(a.dev() == b.dev() && a.ino() == b.ino())
    }

    /// The metadata of child `name` without following it; `None` if it does not exist.
    pub fn lstat(&self, name: &OsStr) -> Result<Option<fs::Metadata>> {
        self.check(name, true)?;
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW;
        let fd = match open_at(&self.fd, name, flags, 0) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.err(name, "lstat", e)),
        };
        let meta = File::from(fd).metadata();
        meta.map(Some)
            .map_err(|e| Error::io(&self.display_path().join(name), "lstat", e))
    }

    /// Opens the child directory `name`; a symlink there is an error (`ELOOP`/`ENOTDIR`).
    pub fn open_dir(&self, name: &OsStr) -> Result<Dir> {
        self.check(name, false)?;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let fd =
            open_at(&self.fd, name, flags, 0).map_err(|e| self.err(name, "open directory", e))?;
        Ok(Dir {
            fd,
            root: self.root.clone(),
            rel: self.rel.join(name),
        })
    }

    /// Opens the file `name` for reading; a symlink there is an error (`ELOOP`), and so
    /// is anything that would block on open (a FIFO is opened non-blocking).
    pub fn open_file(&self, name: &OsStr) -> Result<File> {
        self.check(name, false)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        open_at(&self.fd, name, flags, 0)
            .map(File::from)
            .map_err(|e| self.err(name, "open file", e))
    }

    /// The target of the symlink `name`, verbatim.
    pub fn read_link(&self, name: &OsStr) -> Result<PathBuf> {
        self.check(name, false)?;
        nix::fcntl::readlinkat(Some(self.raw()), name)
            .map(PathBuf::from)
            .map_err(|e| self.err(name, "readlink", e))
    }

    /// The names in this directory (without `.` and `..`), unsorted.
    pub fn names(&self) -> Result<Vec<OsString>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dot = OsStr::new(".");
        let mut dir = nix::dir::Dir::openat(Some(self.raw()), dot, flags, Mode::empty())
            .map_err(|e| self.err(dot, "read directory", e))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| self.err(dot, "read directory", e))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_os_string());
            }
        }
        Ok(names)
    }

    /// Creates the directory `name` with `mode` (before the umask).
    pub fn mkdir(&self, name: &OsStr, mode: u32) -> Result<()> {
        self.check(name, false)?;
        let mode = Mode::from_bits_truncate(mode as libc::mode_t);
        nix::sys::stat::mkdirat(Some(self.raw()), name, mode)
            .map_err(|e| self.err(name, "create directory", e))
    }

    /// Creates the new file `name` (it must not exist, not even as a symlink) and opens
    /// it for writing.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> Result<File> {
        self.check(name, false)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        open_at(&self.fd, name, flags, mode)
            .map(File::from)
            .map_err(|e| self.err(name, "create file", e))
    }

    /// Creates the symlink `name` pointing to `target` (stored verbatim).
    pub fn symlink(&self, target: &Path, name: &OsStr) -> Result<()> {
        self.check(name, false)?;
        nix::unistd::symlinkat(target, Some(self.raw()), name)
            .map_err(|e| self.err(name, "create symlink", e))
    }

    /// Creates `new_name` in `to` as a hard link to the child `name` of this directory
    /// (a symlink is linked itself, never followed).
    pub fn hard_link(&self, name: &OsStr, to: &Dir, new_name: &OsStr) -> Result<()> {
        self.check(name, false)?;
        to.check(new_name, false)?;
        nix::unistd::linkat(
            Some(self.raw()),
            name,
            Some(to.raw()),
            new_name,
            AtFlags::empty(),
        )
        .map_err(|e| to.err(new_name, "create hard link", e))
    }

    /// Creates a device node or FIFO `name`; `mode` holds the type (`S_IFCHR`, `S_IFBLK`,
    /// `S_IFIFO`) and permission bits.
    pub fn mknod(&self, name: &OsStr, mode: u32, dev: u64) -> Result<()> {
        self.check(name, false)?;
        let kind = SFlag::from_bits_truncate(mode as libc::mode_t & libc::S_IFMT);
        let perm = Mode::from_bits_truncate(mode as libc::mode_t & 0o7777);
        nix::sys::stat::mknodat(Some(self.raw()), name, kind, perm, dev)
            .map_err(|e| self.err(name, "mknod", e))
    }

    /// Removes the child `name`: a file, symlink or empty directory.
    pub fn remove(&self, name: &OsStr) -> Result<()> {
        self.check(name, false)?;
        match nix::unistd::unlinkat(Some(self.raw()), name, UnlinkatFlags::NoRemoveDir) {
            Err(Errno::EISDIR) => self.remove_dir(name),
            other => other.map_err(|e| self.err(name, "remove", e)),
        }
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &OsStr) -> Result<()> {
        self.check(name, false)?;
        nix::unistd::unlinkat(Some(self.raw()), name, UnlinkatFlags::RemoveDir)
            .map_err(|e| self.err(name, "remove directory", e))
    }

    /// Removes the child `name` and, for a directory, everything below it; a missing
    /// `name` is fine. Symlinks met are removed, never followed. Iterative, so a deep tree
    /// cannot exhaust the stack.
    pub fn remove_all(&self, name: &OsStr) -> Result<()> {
        match self.lstat(name)? {
            None => return Ok(()),
            Some(meta) if !meta.is_dir() => return self.remove(name),
            Some(_) => {}
        }
        // Directories being emptied: (the directory, its name in its parent, names left).
        let first = self.open_dir(name)?;
        let left = first.names()?;
        let mut stack = vec![(first, name.to_os_string(), left)];
        while let Some((dir, _, left)) = stack.last_mut() {
            let Some(child) = left.pop() else {
                let (_, done, _) = stack.pop().unwrap_or_else(|| unreachable!());
                let parent = stack.last().map(|(d, _, _)| d).unwrap_or(self);
                parent.remove_dir(&done)?;
                continue;
            };
            match dir.lstat(&child)? {
                Some(meta) if meta.is_dir() => {
                    let sub = dir.open_dir(&child)?;
                    let names = sub.names()?;
                    stack.push((sub, child, names));
                }
                Some(_) => dir.remove(&child)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Changes the owner of `name` (`.`: this directory) without following a symlink.
    pub fn chown(&self, name: &OsStr, uid: u32, gid: u32) -> Result<()> {
        self.check(name, true)?;
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        nix::unistd::fchownat(
            Some(self.raw()),
            name,
            uid,
            gid,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.err(name, "lchown", e))
    }

    /// Sets the permission bits of `name` (`.`: this directory) without following a
    /// symlink; a symlink gives an `EOPNOTSUPP` error (Linux has no symlink modes).
    pub fn chmod(&self, name: &OsStr, mode: u32) -> Result<()> {
        self.check(name, true)?;
        let mode = Mode::from_bits_truncate(mode as libc::mode_t & 0o7777);
        let flag = FchmodatFlags::NoFollowSymlink;
        nix::sys::stat::fchmodat(Some(self.raw()), name, mode, flag)
            .map_err(|e| self.err(name, "chmod", e))
    }

    /// Sets the access and modification times of `name` (`.`: this directory) without
    /// following a symlink.
    pub fn set_times(&self, name: &OsStr, atime: FileTime, mtime: FileTime) -> Result<()> {
        self.check(name, true)?;
        let spec = |t: FileTime| TimeSpec::new(t.unix_seconds(), i64::from(t.nanoseconds()));
        let flag = UtimensatFlags::NoFollowSymlink;
        let (a, m) = (spec(atime), spec(mtime));
        nix::sys::stat::utimensat(Some(self.raw()), name, &a, &m, flag)
            .map_err(|e| self.err(name, "set times", e))
    }

    /// Sets the extended attribute `key` of `name` (`.`: this directory). The file is
    /// opened with `O_PATH | O_NOFOLLOW` and the attribute set through its
    /// `/proc/self/fd` entry, which names exactly that inode; a symlink is refused
    /// (`EOPNOTSUPP`), since there are no `*at` xattr calls to act on the link itself.
    pub fn set_xattr(&self, name: &OsStr, key: &OsStr, value: &[u8]) -> Result<()> {
        self.check(name, true)?;
        let fd = open_at(&self.fd, name, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0)
            .map_err(|e| self.err(name, "open for xattr", e))?;
        let file = File::from(fd);
        let is_link = file.metadata().map(|m| m.is_symlink());
        if is_link.map_err(|e| Error::io(&self.display_path().join(name), "lstat", e))? {
            return Err(self.err(name, "set xattr", Errno::EOPNOTSUPP));
        }
        let magic = format!("/proc/self/fd/{}", file.as_raw_fd());
        set_xattr_following(&magic, key, value)
            .map_err(|e| Error::io(&self.display_path().join(name), "set xattr", e))
    }
}

impl AsFd for Dir {
    /// The directory's descriptor (an `O_PATH` one), e.g. to name it as
    /// `/proc/self/fd/<n>`.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The state of a component-by-component resolution (see [`RootDir::resolve`]).
struct Walk {
    /// Directories entered, the root first.
    dirs: Vec<Dir>,
    /// The resolved path so far; the first `dirs.len() - 1` names are the entered
    /// directories, any after them were not entered (missing, or not a directory).
    names: Vec<OsString>,
    /// Why the walk first stopped entering: `ENOENT` or `ENOTDIR`.
    stopped: Option<Errno>,
}

/// What to do with a component that does not exist.
#[derive(Clone, Copy)]
enum Missing {
    /// Keep its name and go on without entering it.
    Append,
    /// Create it as a directory and enter it.
    Create(NewDir),
}

/// How a missing directory is made while walking.
#[derive(Clone, Copy)]
struct NewDir {
    /// Passed to `mkdirat` (so the umask applies), or set exactly when `owner` is given.
    mode: u32,
    /// Owner to give each created directory (then the mode is set exactly too).
    owner: Option<(u32, u32)>,
}

impl NewDir {
    /// Creates `name` in `dir` unless it appeared meanwhile.
    fn make(&self, dir: &Dir, name: &OsStr) -> Result<()> {
        match dir.mkdir(name, self.mode) {
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                return Ok(())
            }
            other => other?,
        }
        if let Some((uid, gid)) = self.owner {
            dir.chmod(name, self.mode)?;
            dir.chown(name, uid, gid)?;
        }
        Ok(())
    }
}

impl Walk {
    fn entered(&self) -> bool {
        self.names.len() + 1 == self.dirs.len()
    }

    fn stop(&mut self, why: Errno, name: OsString) {
        self.stopped.get_or_insert(why);
        self.names.push(name);
    }

    fn restart(&mut self) {
        self.dirs.truncate(1);
        self.names.clear();
    }

    fn up(&mut self) {
        if !self.entered() {
            self.names.pop();
        } else if self.dirs.len() > 1 {
            self.dirs.pop();
            self.names.pop();
        }
    }

    /// Steps into `name`. Returns a symlink's target when it is to be followed.
    fn enter(&mut self, name: OsString, follow: bool, missing: Missing) -> Result<Option<PathBuf>> {
        if !self.entered() {
            self.names.push(name);
            return Ok(None);
        }
        let top = self
            .dirs
            .last()
            .unwrap_or_else(|| unreachable!("the root is kept"));
        let meta = match (top.lstat(&name)?, missing) {
            (Some(meta), _) => meta,
            (None, Missing::Append) => {
                self.stop(Errno::ENOENT, name);
                return Ok(None);
            }
            (None, Missing::Create(new)) => {
                new.make(top, &name)?;
                let dir = top.open_dir(&name)?;
                self.dirs.push(dir);
                self.names.push(name);
                return Ok(None);
            }
        };
        if meta.is_symlink() && follow {
            return top.read_link(&name).map(Some);
        }
        if !meta.is_dir() {
            if let Missing::Create(_) = missing {
                return Err(top.err(&name, "create directory", Errno::ENOTDIR));
            }
            self.stop(Errno::ENOTDIR, name);
            return Ok(None);
        }
        let dir = top.open_dir(&name)?;
        self.dirs.push(dir);
        self.names.push(name);
        Ok(None)
    }

    /// The directory the whole path resolved to.
    fn into_dir(mut self, root: &Path, path: &Path) -> Result<Dir> {
        match self.stopped {
            Some(e) => Err(Error::io(
                &root.join(clean_for_message(path)),
                "open directory",
                os_err(e),
            )),
            None if self.entered() => Ok(self.dirs.pop().unwrap_or_else(|| unreachable!())),
            None => Err(Error::io(
                &root.join(clean_for_message(path)),
                "open directory",
                os_err(Errno::ENOTDIR),
            )),
        }
    }
}

/// `path` without its leading `/`, for joining onto the root in messages.
fn clean_for_message(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

/// A root filesystem directory, held open: paths given to its methods are paths inside
/// the image, resolved as if this directory were `/`.
#[derive(Debug)]
pub struct RootDir {
    dir: Dir,
    /// Whether to try `openat2` (tests turn it off to exercise the walk).
    openat2: bool,
}

impl RootDir {
    /// Opens the root filesystem at the host path `path` (trusted: it is ocibuild's own
    /// directory, so symlinks in it are followed).
    pub fn open(path: &Path) -> Result<RootDir> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let fd = open_at(rustix::fs::CWD, path.as_os_str(), flags, 0)
            .map_err(|e| Error::io(path, "open root directory", os_err(e)))?;
        Ok(RootDir::from_fd(fd, path))
    }

    /// Makes the directory `fd` refers to (an `O_PATH` or read descriptor, e.g. the root
    /// of a detached mount) a `RootDir`; `shown_as` is the path used in messages. A
    /// detached mount stays alive while this `RootDir` or any [`Dir`] opened from it does.
    pub fn from_fd(fd: OwnedFd, shown_as: &Path) -> RootDir {
        RootDir {
            dir: Dir {
                fd,
                root: Arc::from(shown_as),
                rel: PathBuf::new(),
            },
            openat2: !NO_OPENAT2.load(Ordering::Relaxed),
        }
    }

    /// Makes `dir` the root of a new `RootDir`: paths below are then confined to it (used
    /// e.g. to extract an archive into one directory of the image).
    pub fn from_dir(dir: Dir) -> RootDir {
        let host = dir.display_path();
        RootDir::from_fd(dir.fd, &host)
    }

    /// Resolves paths with the user-space walk only, never `openat2` (for tests of the
    /// fallback).
    pub fn without_openat2(mut self) -> RootDir {
        self.openat2 = false;
        self
    }

    /// A second handle on the same root (a duplicated descriptor: for a detached mount, it
    /// keeps the mount alive too).
    pub fn try_clone(&self) -> Result<RootDir> {
        Ok(RootDir {
            dir: self.dir.try_clone()?,
            openat2: self.openat2,
        })
    }

    /// The root directory itself.
    pub fn as_dir(&self) -> &Dir {
        &self.dir
    }

    /// The host path of the root, for messages only.
    pub fn host_path(&self) -> &Path {
        &self.dir.root
    }

    /// Opens the directory at `path`, following every symlink inside the root.
    pub fn open_dir(&self, path: &Path) -> Result<Dir> {
        if self.openat2 && !NO_OPENAT2.load(Ordering::Relaxed) {
            if let Some(dir) = self.open_dir_openat2(path)? {
                return Ok(dir);
            }
        }
        self.walk(path, true, Missing::Append)?
            .into_dir(self.host_path(), path)
    }

    /// `open_dir` through `openat2`; `None` when it is unavailable or kept reporting
    /// concurrent renames, so the caller walks instead.
    fn open_dir_openat2(&self, path: &Path) -> Result<Option<Dir>> {
        let asked = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        for _ in 0..OPENAT2_RETRIES {
            match openat2_in_root(&self.dir.fd, asked, flags) {
                Ok(fd) => {
                    return Ok(Some(Dir {
                        fd,
                        root: self.dir.root.clone(),
                        rel: clean_for_message(path).to_path_buf(),
                    }))
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    return Ok(None);
                }
                Err(e) => {
                    let shown = self.host_path().join(clean_for_message(path));
                    return Err(Error::io(&shown, "open directory", e));
                }
            }
        }
        Ok(None)
    }

    /// Opens the parent directory of `path` (following symlinks inside the root) and
    /// returns it with the last name, which is not followed. For the root itself (an
    /// empty path or `/`) this is the root and `.`. A path ending in `..` is refused.
    pub fn open_parent(&self, path: &Path) -> Result<(Dir, OsString)> {
        let Some(last) = path.components().next_back() else {
            return Ok((self.dir.try_clone()?, OsString::from(".")));
        };
        match last {
            Component::Normal(name) => {
                let parent = path.parent().unwrap_or(Path::new(""));
                Ok((self.open_dir(parent)?, name.to_os_string()))
            }
            Component::RootDir | Component::CurDir => {
                Ok((self.dir.try_clone()?, OsString::from(".")))
            }
            Component::ParentDir | Component::Prefix(_) => Err(Error::UnsafePath {
                path: path.to_path_buf(),
                reason: "ends in `..`".into(),
            }),
        }
    }

    /// The metadata of `path` without following its last component; `None` if it (or a
    /// parent) does not exist.
    pub fn lstat(&self, path: &Path) -> Result<Option<fs::Metadata>> {
        match self.open_parent(path) {
            Ok((dir, name)) => dir.lstat(&name),
            Err(Error::Io { source, .. }) if is_missing(&source) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Resolves `path` to a path inside the root made of plain names only: `..` and
    /// symlinks are resolved inside the root (the last component only when
    /// `follow_final`), components that do not exist are kept as they are. Like
    /// [`crate::resolve_in_root`], but every lookup is relative to a directory descriptor.
    pub fn resolve(&self, path: &Path, follow_final: bool) -> Result<PathBuf> {
        let walk = self.walk(path, follow_final, Missing::Append)?;
        Ok(walk.names.iter().collect())
    }

    /// Creates the directory `path` and any missing parents with `mode`, following
    /// existing symlinks inside the root (like `mkdir -p` in a chroot), and returns it. Its
    /// [`Dir::rel`] is the resolved, symlink-free path.
    pub fn create_dir_all(&self, path: &Path, mode: u32) -> Result<Dir> {
        let new = NewDir { mode, owner: None };
        self.walk(path, true, Missing::Create(new))?
            .into_dir(self.host_path(), path)
    }

    /// Like [`RootDir::create_dir_all`], but each directory it creates gets exactly `mode`
    /// (no umask) and the owner `uid:gid`; existing directories are left as they are.
    pub fn create_dir_all_owned(&self, path: &Path, mode: u32, owner: (u32, u32)) -> Result<Dir> {
        let new = NewDir {
            mode,
            owner: Some(owner),
        };
        self.walk(path, true, Missing::Create(new))?
            .into_dir(self.host_path(), path)
    }

    /// Walks `path` one component at a time from the root (see the module docs).
    fn walk(&self, path: &Path, follow_final: bool, missing: Missing) -> Result<Walk> {
        let mut pending: VecDeque<Step> = steps_of(path).into();
        let mut walk = Walk {
            dirs: vec![self.dir.try_clone()?],
            names: Vec::new(),
            stopped: None,
        };
        let mut links = 0u32;
        while let Some(step) = pending.pop_front() {
            let name = match step {
                Step::Root => {
                    walk.restart();
                    continue;
                }
                Step::Parent => {
                    walk.up();
                    continue;
                }
                Step::Name(name) => name,
            };
            let follow = follow_final || !pending.is_empty();
            let Some(target) = walk.enter(name, follow, missing)? else {
                continue;
            };
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Error::SymlinkLoop {
                    path: path.to_path_buf(),
                    limit: MAX_SYMLINKS,
                });
            }
            for step in steps_of(&target).into_iter().rev() {
                pending.push_front(step);
            }
        }
        Ok(walk)
    }
}

#[cfg(test)]
pub(crate) mod tests;
