//! Mount-point placeholders inside the rootfs, and their exact removal afterwards.
//!
//! The snapshotter walks the rootfs after a RUN step, so every directory or file created
//! here only to serve as a mount point is removed again, and the timestamps of the
//! pre-existing parent directories disturbed by creating/removing it are restored.
//! All paths are resolved with symlinks confined to the rootfs (like a chroot would), and
//! nothing is ever created through a symlink.

use std::fs::{self, FileTimes};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use super::IsolationError;

/// What kind of mount point is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

#[derive(Debug)]
struct Touched {
    dir: PathBuf,
    original: (SystemTime, SystemTime),
    after_create: Option<SystemTime>,
}

/// The placeholders created for one run; [`Placeholders::remove`] undoes them.
#[derive(Debug, Default)]
pub(crate) struct Placeholders {
    created: Vec<(PathBuf, Kind)>,
    touched: Vec<Touched>,
    done: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IsolationError + '_ {
    move |source| IsolationError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn times(meta: &fs::Metadata) -> (SystemTime, SystemTime) {
    (
        meta.accessed().unwrap_or(SystemTime::UNIX_EPOCH),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    )
}

const MAX_SYMLINKS: usize = 40;

impl Placeholders {
    /// Makes sure `inner` (a path inside `root`) exists as `kind`, creating missing
    /// components when `create` is set. Symlinks are followed within `root`. Returns the host
    /// path to mount on, or `None` when the path is missing and may not be created: nothing
    /// is ever created at a symlink's target (a dangling `/etc/resolv.conf` link stays as is).
    pub(crate) fn ensure(
        &mut self,
        root: &Path,
        inner: &str,
        kind: Kind,
        create: bool,
    ) -> Result<Option<PathBuf>, IsolationError> {
        // A stack of (component, came from a symlink target); the top is the next component.
        let mut pending: Vec<(String, bool)> = components(inner)
            .into_iter()
            .rev()
            .map(|c| (c, false))
            .collect();
        let mut resolved = root.to_path_buf();
        let mut depth = 0usize; // components of `resolved` below root
        let mut links = 0usize;
        while let Some((comp, from_link)) = pending.pop() {
            if comp == ".." {
                if depth > 0 {
                    resolved.pop();
                    depth -= 1;
                }
                continue;
            }
            let candidate = resolved.join(&comp);
            let is_last = pending.is_empty();
            match fs::symlink_metadata(&candidate) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(IsolationError::Io {
                            path: candidate,
                            source: io::Error::from_raw_os_error(libc::ELOOP),
                        });
                    }
                    let target = fs::read_link(&candidate).map_err(io_err(&candidate))?;
                    let target = target.to_string_lossy().into_owned();
                    if target.starts_with('/') {
                        resolved = root.to_path_buf();
                        depth = 0;
                    }
                    pending.extend(components(&target).into_iter().rev().map(|c| (c, true)));
                }
                Ok(meta) => {
                    if !is_last && !meta.is_dir() {
                        return Err(IsolationError::Io {
                            path: candidate,
                            source: io::Error::from_raw_os_error(libc::ENOTDIR),
                        });
                    }
                    resolved = candidate;
                    depth += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create || from_link {
                        return Ok(None);
                    }
                    let this_kind = if is_last { kind } else { Kind::Dir };
                    self.create(&resolved, &candidate, this_kind)?;
                    resolved = candidate;
                    depth += 1;
                }
                Err(e) => return Err(io_err(&candidate)(e)),
            }
        }
        let meta = fs::symlink_metadata(&resolved).map_err(io_err(&resolved))?;
        let ok = match kind {
            Kind::Dir => meta.is_dir(),
            Kind::File => !meta.is_dir(),
        };
        if !ok {
            return Err(IsolationError::Io {
                path: resolved,
                source: io::Error::from_raw_os_error(match kind {
                    Kind::Dir => libc::ENOTDIR,
                    Kind::File => libc::EISDIR,
                }),
            });
        }
        Ok(Some(resolved))
    }

    fn create(&mut self, parent: &Path, path: &Path, kind: Kind) -> Result<(), IsolationError> {
        if !self.touched.iter().any(|t| t.dir == parent)
            && !self.created.iter().any(|(p, _)| p == parent)
        {
            let meta = fs::metadata(parent).map_err(io_err(parent))?;
            self.touched.push(Touched {
                dir: parent.to_path_buf(),
                original: times(&meta),
                after_create: None,
            });
        }
        match kind {
            Kind::Dir => fs::DirBuilder::new()
                .mode(0o755)
                .create(path)
                .map_err(io_err(path))?,
            Kind::File => {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(path)
                    .map_err(io_err(path))?;
            }
        }
        self.created.push((path.to_path_buf(), kind));
        Ok(())
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
        let Some(parent) = self.ensure(root, parent_inner, Kind::Dir, true)? else {
            return Ok(false);
        };
        let name = inner.rsplit('/').next().unwrap_or(inner);
        let path = parent.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        self.create(&parent, &path, Kind::File)?;
        fs::write(&path, content).map_err(io_err(&path))?;
        Ok(true)
    }

    /// Records the parents' timestamps right after all placeholders were created, to tell
    /// later whether the command itself modified those directories.
    pub(crate) fn seal(&mut self) {
        for t in &mut self.touched {
            t.after_create = fs::metadata(&t.dir).ok().and_then(|m| m.modified().ok());
        }
    }

    /// Removes what was created (newest first) and restores the parents' timestamps.
    /// Placeholders that are no longer what was created (e.g. a directory the command filled)
    /// are left in place.
    pub(crate) fn remove(&mut self) -> Result<(), IsolationError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        // Timestamps just before removal: if the command changed a parent, keep its change.
        let before: Vec<Option<(SystemTime, SystemTime)>> = self
            .touched
            .iter()
            .map(|t| fs::metadata(&t.dir).ok().map(|m| times(&m)))
            .collect();
        let mut first_err = None;
        for (path, kind) in self.created.iter().rev() {
            let res = match fs::symlink_metadata(path) {
                Ok(m) if *kind == Kind::Dir && m.is_dir() => match fs::remove_dir(path) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
                    other => other,
                },
                Ok(m) if *kind == Kind::File && m.is_file() => fs::remove_file(path),
                _ => Ok(()),
            };
            if let Err(e) = res {
                first_err.get_or_insert_with(|| io_err(path)(e));
            }
        }
        for (t, before) in self.touched.iter().zip(before) {
            let target = match before {
                Some(b) if Some(b.1) != t.after_create => b,
                _ => t.original,
            };
            let res = fs::File::open(&t.dir).and_then(|f| {
                f.set_times(
                    FileTimes::new()
                        .set_accessed(target.0)
                        .set_modified(target.1),
                )
            });
            if let Err(e) = res {
                first_err.get_or_insert_with(|| io_err(&t.dir)(e));
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
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
