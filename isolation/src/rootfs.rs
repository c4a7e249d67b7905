//! Mount-point placeholders inside the rootfs, and their exact removal afterwards.
//!
//! The snapshotter walks the rootfs after a RUN step, so every directory or file created
//! here only to serve as a mount point is removed again, and the timestamps of the
//! pre-existing parent directories disturbed by creating/removing it are restored.
//!
//! Paths are resolved with symlinks confined to the rootfs (like a chroot would), and
//! nothing is ever created through a symlink. Every file operation goes through
//! [`ocibuild_snapshot::RootDir`] and [`ocibuild_snapshot::Dir`]: a placeholder is created
//! by name in a directory held open by descriptor (`mkdirat`, `openat(O_CREAT | O_EXCL |
//! O_NOFOLLOW)`), and those parent descriptors are kept. The command may replace any
//! directory by a symlink to the host, so at removal time each parent is resolved again
//! inside the root and compared (device and inode) with the kept descriptor: if it is no
//! longer the same directory, the placeholder is left alone; otherwise it is removed with
//! `unlinkat` on the kept descriptor and the parent's times are restored through it
//! (`utimensat` on the directory itself). Nothing outside the rootfs is ever touched.
//!
//! An overlay rootfs is left alone altogether ([`Placeholders::over`]): paths are resolved
//! in a read-only view of the merged tree, and missing mount points are made in a
//! *skeleton* directory instead, which the sandbox stacks as the top-most lower layer.
//! Every directory on the way to one gets the view's mode, owner, xattrs and times, so the
//! merged tree looks exactly as before plus the mount points, and the upper directory
//! (the step's layer) never holds them.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use filetime::FileTime;
use ocibuild_snapshot::{Dir, RootDir};

use super::IsolationError;

/// What kind of mount point is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// (device, inode) of a file.
type Ident = (u64, u64);

/// A pre-existing directory a placeholder was created in.
#[derive(Debug)]
struct Touched {
    /// Index into [`Placeholders::roots`].
    root: usize,
    /// The directory, held open.
    dir: Dir,
    /// Its resolved path inside the root, to check it is still there at removal.
    rel: PathBuf,
    ident: Ident,
    original: (FileTime, FileTime),
    after_create: Option<FileTime>,
}

/// A placeholder: `name` created in `parent`.
#[derive(Debug)]
struct Created {
    root: usize,
    parent: Dir,
    parent_rel: PathBuf,
    name: OsString,
    kind: Kind,
    ident: Ident,
}

/// The placeholders created for one run; [`Placeholders::remove`] undoes them.
#[derive(Debug, Default)]
pub(crate) struct Placeholders {
    roots: Vec<RootDir>,
    created: Vec<Created>,
    touched: Vec<Touched>,
    done: bool,
    /// Overlay mode: missing mount points are made here, never in the rootfs.
    skeleton: Option<Skeleton>,
}

/// The top-most lower layer of an overlay rootfs that holds its missing mount points.
#[derive(Debug)]
struct Skeleton {
    root: RootDir,
    /// Directories copied from the view, with the times to give them once complete.
    times: Vec<(PathBuf, (FileTime, FileTime))>,
    /// Whether anything was made.
    used: bool,
}

/// Where [`Placeholders::ensure`] arrived.
struct Ensured {
    /// The path inside the root (plain names only).
    rel: PathBuf,
    /// The directory itself when it is one.
    dir: Option<Dir>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IsolationError + '_ {
    move |source| IsolationError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Carries a rootfs operation's error over, keeping its path and OS error.
pub(crate) fn fd_err(e: ocibuild_snapshot::Error) -> IsolationError {
    use ocibuild_snapshot::Error as E;
    match e {
        E::Io { path, source, .. } => IsolationError::Io { path, source },
        E::SymlinkLoop { path, .. } => IsolationError::Io {
            path,
            source: io::Error::from_raw_os_error(libc::ELOOP),
        },
        other => IsolationError::Io {
            path: PathBuf::new(),
            source: io::Error::other(other.to_string()),
        },
    }
}

fn times(meta: &fs::Metadata) -> (FileTime, FileTime) {
    (
        FileTime::from_last_access_time(meta),
        FileTime::from_last_modification_time(meta),
    )
}

fn ident(meta: &fs::Metadata) -> Ident {
    (meta.dev(), meta.ino())
}

fn os_error(path: PathBuf, errno: i32) -> IsolationError {
    IsolationError::Io {
        path,
        source: io::Error::from_raw_os_error(errno),
    }
}

const MAX_SYMLINKS: usize = 40;

impl Placeholders {
    /// Placeholders for an overlay rootfs: paths are resolved in `view`, a read-only view
    /// of the merged tree whose [`RootDir::host_path`] is the path the rootfs is passed
    /// by, and missing mount points are made in the empty directory `skeleton`.
    pub(crate) fn over(view: RootDir, skeleton: RootDir) -> Placeholders {
        Placeholders {
            roots: vec![view],
            created: Vec::new(),
            touched: Vec::new(),
            done: false,
            skeleton: Some(Skeleton {
                root: skeleton,
                times: Vec::new(),
                used: false,
            }),
        }
    }

    /// The index of the open root for `root`, opening it on first use.
    fn root_index(&mut self, root: &Path) -> Result<usize, IsolationError> {
        if let Some(i) = self.roots.iter().position(|r| r.host_path() == root) {
            return Ok(i);
        }
        self.roots.push(RootDir::open(root).map_err(fd_err)?);
        Ok(self.roots.len() - 1)
    }

    /// Makes sure `inner` (a path inside `root`) exists as `kind`, creating missing
    /// components when `create` is set. Symlinks are followed within `root`. Returns the host
    /// path to mount on, or `None` when the path is missing and may not be created: nothing
    /// is ever created at a symlink's target (a dangling `/etc/resolv.conf` link stays as is).
    /// The returned path is `root` joined with plain names only.
    pub(crate) fn ensure(
        &mut self,
        root: &Path,
        inner: &str,
        kind: Kind,
        create: bool,
    ) -> Result<Option<PathBuf>, IsolationError> {
        let r = self.root_index(root)?;
        let found = self.ensure_in(r, inner, kind, create)?;
        Ok(found.map(|f| root.join(f.rel)))
    }

    /// [`Placeholders::ensure`] in the root `r`, walking with directory descriptors.
    fn ensure_in(
        &mut self,
        r: usize,
        inner: &str,
        kind: Kind,
        create: bool,
    ) -> Result<Option<Ensured>, IsolationError> {
        // A stack of (component, came from a symlink target); the top is the next component.
        let mut pending: Vec<(String, bool)> = components(inner)
            .into_iter()
            .rev()
            .map(|c| (c, false))
            .collect();
        let mut dirs = vec![self.roots[r].as_dir().try_clone().map_err(fd_err)?];
        let mut rel = PathBuf::new();
        let mut last_is_dir = true;
        let mut links = 0usize;
        while let Some((comp, from_link)) = pending.pop() {
            if comp == ".." {
                if dirs.len() > 1 {
                    dirs.pop();
                    rel.pop();
                }
                continue;
            }
            let name = OsStr::new(&comp);
            let is_last = pending.is_empty();
            let cur = dirs
                .last()
                .unwrap_or_else(|| unreachable!("the root is kept"));
            match cur.lstat(name).map_err(fd_err)? {
                Some(meta) if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(os_error(cur.display_path().join(name), libc::ELOOP));
                    }
                    let target = cur.read_link(name).map_err(fd_err)?;
                    let target = target.to_string_lossy().into_owned();
                    if target.starts_with('/') {
                        dirs.truncate(1);
                        rel = PathBuf::new();
                    }
                    pending.extend(components(&target).into_iter().rev().map(|c| (c, true)));
                }
                Some(meta) if meta.is_dir() => {
                    let dir = cur.open_dir(name).map_err(fd_err)?;
                    dirs.push(dir);
                    rel.push(name);
                }
                Some(_) if is_last => {
                    rel.push(name);
                    last_is_dir = false;
                }
                Some(_) => return Err(os_error(cur.display_path().join(name), libc::ENOTDIR)),
                None if !create || from_link => return Ok(None),
                None => {
                    let this_kind = if is_last { kind } else { Kind::Dir };
                    match self.make_missing(r, cur, &rel, name, this_kind)? {
                        Some(dir) => dirs.push(dir),
                        None => last_is_dir = false,
                    }
                    rel.push(name);
                }
            }
        }
        let ok = match kind {
            Kind::Dir => last_is_dir,
            Kind::File => !last_is_dir,
        };
        if !ok {
            let errno = match kind {
                Kind::Dir => libc::ENOTDIR,
                Kind::File => libc::EISDIR,
            };
            return Err(os_error(self.roots[r].host_path().join(&rel), errno));
        }
        let dir = if last_is_dir { dirs.pop() } else { None };
        Ok(Some(Ensured { rel, dir }))
    }

    /// Creates `name` in `parent` (at `parent_rel` in root `r`) as `kind`, remembering the
    /// parent's times first. Returns the new file, open for writing, for [`Kind::File`].
    fn create(
        &mut self,
        r: usize,
        parent: &Dir,
        parent_rel: &Path,
        name: &OsStr,
        kind: Kind,
    ) -> Result<Option<File>, IsolationError> {
        let parent_meta = parent.metadata().map_err(fd_err)?;
        let parent_ident = ident(&parent_meta);
        if !self.touched.iter().any(|t| t.ident == parent_ident)
            && !self.created.iter().any(|c| c.ident == parent_ident)
        {
            self.touched.push(Touched {
                root: r,
                dir: parent.try_clone().map_err(fd_err)?,
                rel: parent_rel.to_path_buf(),
                ident: parent_ident,
                original: times(&parent_meta),
                after_create: None,
            });
        }
        let file = match kind {
            Kind::Dir => {
                parent.mkdir(name, 0o755).map_err(fd_err)?;
                None
            }
            Kind::File => Some(parent.create_file(name, 0o644).map_err(fd_err)?),
        };
        let meta = parent.lstat(name).map_err(fd_err)?;
        let meta = meta.ok_or_else(|| os_error(parent.display_path().join(name), libc::ENOENT))?;
        self.created.push(Created {
            root: r,
            parent: parent.try_clone().map_err(fd_err)?,
            parent_rel: parent_rel.to_path_buf(),
            name: name.to_os_string(),
            kind,
            ident: ident(&meta),
        });
        Ok(file)
    }

    /// Makes the missing `name` (of `kind`) in `parent` (at `parent_rel` in root `r`), or
    /// in overlay mode in the skeleton; returns it for a directory.
    fn make_missing(
        &mut self,
        r: usize,
        parent: &Dir,
        parent_rel: &Path,
        name: &OsStr,
        kind: Kind,
    ) -> Result<Option<Dir>, IsolationError> {
        if self.skeleton.is_some() {
            return self.make_in_skeleton(r, parent_rel, name, kind);
        }
        self.create(r, parent, parent_rel, name, kind)?;
        match kind {
            Kind::Dir => Ok(Some(parent.open_dir(name).map_err(fd_err)?)),
            Kind::File => Ok(None),
        }
    }

    /// Makes `name` (of `kind`) in the skeleton's copy of the directory `parent_rel` of the
    /// view `r`, unless it is there already; returns it for a directory. Directories of
    /// `parent_rel` the skeleton lacks are copied from the view first.
    fn make_in_skeleton(
        &mut self,
        r: usize,
        parent_rel: &Path,
        name: &OsStr,
        kind: Kind,
    ) -> Result<Option<Dir>, IsolationError> {
        let parent = self.skeleton_dir(r, parent_rel)?;
        let Some(skeleton) = self.skeleton.as_mut() else {
            unreachable!("only called in overlay mode")
        };
        skeleton.used = true;
        if parent.lstat(name).map_err(fd_err)?.is_none() {
            match kind {
                Kind::Dir => parent.mkdir(name, 0o755).map_err(fd_err)?,
                Kind::File => drop(parent.create_file(name, 0o644).map_err(fd_err)?),
            }
        }
        match kind {
            Kind::Dir => Ok(Some(parent.open_dir(name).map_err(fd_err)?)),
            Kind::File => Ok(None),
        }
    }

    /// The skeleton's directory `rel`, made with the attributes of the view's directory
    /// `rel` (of root `r`) where missing, parents first.
    fn skeleton_dir(&mut self, r: usize, rel: &Path) -> Result<Dir, IsolationError> {
        let Some(skeleton) = self.skeleton.as_mut() else {
            unreachable!("only called in overlay mode")
        };
        let mut dir = skeleton.root.as_dir().try_clone().map_err(fd_err)?;
        let mut done = PathBuf::new();
        for name in rel.iter() {
            done.push(name);
            if dir.lstat(name).map_err(fd_err)?.is_none() {
                let source = self.roots[r].open_dir(&done).map_err(fd_err)?;
                dir.mkdir(name, 0o700).map_err(fd_err)?;
                let made = dir.open_dir(name).map_err(fd_err)?;
                let meta = source.metadata().map_err(fd_err)?;
                copy_attributes(&source, &made, &meta)?;
                skeleton.times.push((done.clone(), times(&meta)));
            }
            dir = dir.open_dir(name).map_err(fd_err)?;
        }
        Ok(dir)
    }

    /// Overlay mode: gives the skeleton's copied directories their times (now that nothing
    /// more is made in them) and closes the view. Returns whether the skeleton holds
    /// anything (an empty one need not be stacked).
    pub(crate) fn finish_skeleton(&mut self) -> Result<bool, IsolationError> {
        self.roots.clear();
        let Some(skeleton) = self.skeleton.as_mut() else {
            return Ok(false);
        };
        for (rel, (atime, mtime)) in skeleton.times.iter().rev() {
            let (dir, name) = skeleton.root.open_parent(rel).map_err(fd_err)?;
            dir.set_times(&name, *atime, *mtime).map_err(fd_err)?;
        }
        Ok(skeleton.used)
    }

    /// The content of the file `inner` of `root` (symlinks resolved inside it); `None`
    /// when it (or a directory on the way) is missing. Read through descriptors.
    pub(crate) fn read_file(
        &mut self,
        root: &Path,
        inner: &str,
    ) -> Result<Option<Vec<u8>>, IsolationError> {
        let r = self.root_index(root)?;
        let Some(found) = self.ensure_in(r, inner, Kind::File, false)? else {
            return Ok(None);
        };
        let (dir, name) = self.roots[r].open_parent(&found.rel).map_err(fd_err)?;
        let mut file = match dir.open_file(&name) {
            Ok(file) => file,
            Err(ocibuild_snapshot::Error::Io { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(fd_err(e)),
        };
        let mut bytes = Vec::new();
        let shown = dir.display_path().join(&name);
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(io_err(&shown))?;
        Ok(Some(bytes))
    }

    /// Writes a new file at `inner` (only when missing); it is removed like a placeholder.
    /// Returns false when something already exists there (or it lies behind a symlink).
    pub(crate) fn create_file_with(
        &mut self,
        root: &Path,
        inner: &str,
        content: &[u8],
    ) -> Result<bool, IsolationError> {
        let parent_inner = match inner.rsplit_once('/') {
            Some((p, _)) => p,
            None => "",
        };
        let r = self.root_index(root)?;
        let Some(Ensured {
            rel,
            dir: Some(parent),
        }) = self.ensure_in(r, parent_inner, Kind::Dir, true)?
        else {
            return Ok(false);
        };
        let name = OsStr::new(inner.rsplit('/').next().unwrap_or(inner));
        if parent.lstat(name).map_err(fd_err)?.is_some() {
            return Ok(false);
        }
        let path = parent.display_path().join(name);
        if let Some(mut file) = self.create(r, &parent, &rel, name, Kind::File)? {
            file.write_all(content).map_err(io_err(&path))?;
        }
        Ok(true)
    }

    /// Records the parents' timestamps right after all placeholders were created, to tell
    /// later whether the command itself modified those directories.
    pub(crate) fn seal(&mut self) {
        for t in &mut self.touched {
            t.after_create = t
                .dir
                .metadata()
                .ok()
                .map(|m| FileTime::from_last_modification_time(&m));
        }
    }

    /// True if `rel` still resolves (inside root `r`) to the directory `dir`: the command
    /// did not move it or replace a directory on its path by a symlink.
    fn still_there(&self, r: usize, rel: &Path, dir: &Dir) -> bool {
        let now = self.roots[r].open_dir(rel);
        now.and_then(|now| now.same_as(dir)).unwrap_or(false)
    }

    /// Removes what was created (newest first) and restores the parents' timestamps.
    /// Placeholders that are no longer what was created (e.g. a directory the command filled)
    /// or whose parent is no longer the same directory are left in place.
    pub(crate) fn remove(&mut self) -> Result<(), IsolationError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        // Timestamps just before removal: if the command changed a parent, keep its change.
        let before: Vec<Option<(FileTime, FileTime)>> = self
            .touched
            .iter()
            .map(|t| {
                let here = self.still_there(t.root, &t.rel, &t.dir);
                here.then(|| t.dir.metadata().ok().map(|m| times(&m)))
                    .flatten()
            })
            .collect();
        let mut first_err = None;
        for c in self.created.iter().rev() {
            if !self.still_there(c.root, &c.parent_rel, &c.parent) {
                continue;
            }
            if let Err(e) = remove_placeholder(c) {
                first_err.get_or_insert(e);
            }
        }
        for (t, before) in self.touched.iter().zip(before) {
            let Some(before) = before else { continue };
            let target = if Some(before.1) != t.after_create {
                before
            } else {
                t.original
            };
            if let Err(e) = t.dir.set_times(OsStr::new("."), target.0, target.1) {
                first_err.get_or_insert(fd_err(e));
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Gives the directory `to` the mode, owner and xattrs of `from` (whose metadata is
/// `meta`); xattrs the kernel will not set (e.g. overlayfs' own) are left out.
fn copy_attributes(from: &Dir, to: &Dir, meta: &fs::Metadata) -> Result<(), IsolationError> {
    use std::os::fd::{AsFd, AsRawFd};
    let here = OsStr::new(".");
    to.chown(here, meta.uid(), meta.gid()).map_err(fd_err)?;
    to.chmod(here, meta.mode() & 0o7777).map_err(fd_err)?;
    let source = format!("/proc/self/fd/{}", from.as_fd().as_raw_fd());
    let names = match xattr::list_deref(&source) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(io_err(&from.display_path())(e)),
    };
    for name in names {
        if let Ok(Some(value)) = xattr::get_deref(&source, &name) {
            let _ = to.set_xattr(here, &name, &value);
        }
    }
    Ok(())
}

/// Removes the placeholder `c` by name in its kept parent, if it is still of its kind (a
/// directory only when empty).
fn remove_placeholder(c: &Created) -> Result<(), IsolationError> {
    let meta = c.parent.lstat(&c.name).map_err(fd_err)?;
    let res = match meta {
        Some(m) if c.kind == Kind::Dir && m.is_dir() => match c.parent.remove_dir(&c.name) {
            Err(ocibuild_snapshot::Error::Io { source, .. })
                if source.raw_os_error() == Some(libc::ENOTEMPTY) =>
            {
                Ok(())
            }
            other => other,
        },
        Some(m) if c.kind == Kind::File && m.is_file() => c.parent.remove(&c.name),
        _ => Ok(()),
    };
    res.map_err(fd_err)
}

impl Drop for Placeholders {
    fn drop(&mut self) {
        // Best effort on early-return paths; the normal path calls `remove` explicitly.
        let _ = self.remove();
    }
}

/// Splits a path inside the rootfs into normal components and `..` (dropping `/` and `.`).
fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
