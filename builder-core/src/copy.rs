//! COPY and ADD: files from the build context (or another stage's root filesystem) into
//! the root filesystem being built, following Docker's rules:
//!
//! - a source directory copies its *contents*, not the directory itself;
//! - a destination ending in `/`, an existing directory, or several sources make the
//!   destination a directory; several sources require the trailing `/`;
//! - sources may be globs (`*`, `?`, `[..]`, `**`); they must match something;
//! - files keep their permission bits and mtime; owners become 0:0 (or `--chown`) when
//!   copying from the context and are kept when copying from a stage (unless `--chown`);
//! - symlinks inside a copied directory stay symlinks, hard links stay hard links;
//! - ADD extracts local tar archives (plain, gzip, bzip2, xz) into the destination.
//!
//! Every path is resolved inside its root: neither a source nor a destination can reach
//! outside the context or the root filesystem through `..` or a symlink.

use crate::pathmatch::{IgnoreRules, PathPattern};
use ocibuild_snapshot::resolve_in_root;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// What went wrong while copying.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source matched nothing.
    #[error("{source_name}: no such file or directory in the {origin}{hint}")]
    NotFound {
        /// The source as written.
        source_name: String,
        /// "build context" or "stage ...".
        origin: String,
        /// Extra explanation (e.g. excluded by .dockerignore).
        hint: String,
    },
    /// Several sources need a directory destination.
    #[error("when copying more than one source the destination must be a directory ending in '/': {dest}")]
    DestNotDir {
        /// The destination as given.
        dest: String,
    },
    /// A source path leaves its root.
    #[error("{path}: source path is outside the {origin}")]
    OutsideRoot {
        /// The offending source.
        path: String,
        /// "build context" or "stage ...".
        origin: String,
    },
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Resolving a path inside a root failed.
    #[error(transparent)]
    Resolve(#[from] ocibuild_snapshot::Error),
}

type Result<T> = std::result::Result<T, CopyError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where sources are read from.
pub struct SourceRoot<'a> {
    /// The directory sources are relative to.
    pub dir: &'a Path,
    /// `.dockerignore` rules (context only).
    pub ignore: Option<&'a IgnoreRules>,
    /// Human name for messages: "build context" or "stage build".
    pub origin: String,
    /// Keep the sources' owners (copying from a stage or image) instead of 0:0.
    pub keep_owner: bool,
}

/// Options of one COPY/ADD.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--chown` resolved to numeric ids.
    pub chown: Option<(u32, u32)>,
    /// `--chmod` as octal bits.
    pub chmod: Option<u32>,
    /// ADD: extract local archives.
    pub extract_archives: bool,
}

/// Copies `sources` (already expanded, relative to the source root) to `dest` (absolute
/// path inside the image) in `rootfs`.
pub fn copy_sources(
    from: &SourceRoot<'_>,
    sources: &[String],
    dest: &str,
    rootfs: &Path,
    opts: &CopyOptions,
) -> Result<()> {
    let mut matched: Vec<PathBuf> = Vec::new();
    for source in sources {
        matched.extend(expand_source(from, source)?);
    }
    let dest_is_dir = dest.ends_with('/') || dest.ends_with("/.") || dest == ".";
    if sources.len() > 1 && !dest_is_dir {
        return Err(CopyError::DestNotDir {
            dest: dest.to_string(),
        });
    }
    let dest_host = resolve_in_root(rootfs, Path::new(dest), true)?;
    let dest_exists_as_dir = dest_host.is_dir();
    let mut copier = Copier {
        from,
        opts,
        rootfs,
        links: HashMap::new(),
    };
    for rel in &matched {
        let src = from.dir.join(rel);
        let meta = fs::metadata(&src).map_err(io_err(&src))?;
        if meta.is_dir() {
            copier.ensure_dir(&dest_host, true)?;
            copier.copy_dir_contents(&src, rel, &dest_host)?;
        } else if opts.extract_archives && is_archive(&src)? {
            copier.ensure_dir(&dest_host, true)?;
            extract_archive(&src, &dest_host)?;
        } else {
            let target = if dest_is_dir || dest_exists_as_dir || matched.len() > 1 {
                copier.ensure_dir(&dest_host, true)?;
                dest_host.join(rel.file_name().unwrap_or_default())
            } else {
                let parent = dest_host.parent().unwrap_or(rootfs).to_path_buf();
                copier.ensure_dir(&parent, false)?;
                dest_host.clone()
            };
            copier.copy_entry(&src, rel, &target)?;
        }
    }
    Ok(())
}

/// Turns one source argument into the matching paths relative to the source root, with
/// symlinks on the way resolved inside the root and `.dockerignore` applied.
fn expand_source(from: &SourceRoot<'_>, source: &str) -> Result<Vec<PathBuf>> {
    let rel = clean_relative(source).ok_or_else(|| CopyError::OutsideRoot {
        path: source.to_string(),
        origin: from.origin.clone(),
    })?;
    let pattern = PathPattern::new(&rel.to_string_lossy());
    let candidates = if pattern.is_literal() {
        let resolved = resolve_in_root(from.dir, &rel, true)?;
        if fs::symlink_metadata(&resolved).is_err() {
            vec![]
        } else {
            let inside = resolved
                .strip_prefix(from.dir)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            vec![inside]
        }
    } else {
        glob_tree(from.dir, &pattern)?
    };
    let excluded =
        |p: &PathBuf| !p.as_os_str().is_empty() && from.ignore.is_some_and(|i| i.is_excluded(p));
    let kept: Vec<PathBuf> = candidates
        .iter()
        .filter(|p| !excluded(p))
        .cloned()
        .collect();
    if kept.is_empty() {
        let hint = if candidates.is_empty() {
            String::new()
        } else {
            " (it is excluded by .dockerignore)".to_string()
        };
        return Err(CopyError::NotFound {
            source_name: source.to_string(),
            origin: from.origin.clone(),
            hint,
        });
    }
    Ok(kept)
}

/// `a/./b/` → `a/b`; `/x` → `x`; `..` that would leave the root → None.
fn clean_relative(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

/// Every path under `root` that matches `pattern`, sorted.
fn glob_tree(root: &Path, pattern: &PathPattern) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| CopyError::Io {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        if pattern.matches(rel) {
            found.push(rel.to_path_buf());
        }
    }
    Ok(found)
}

struct Copier<'a> {
    from: &'a SourceRoot<'a>,
    opts: &'a CopyOptions,
    rootfs: &'a Path,
    /// (dev, ino) of source files already copied → where they went, to keep hard links.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier<'_> {
    fn owner(&self, meta: &fs::Metadata) -> (u32, u32) {
        match self.opts.chown {
            Some(ids) => ids,
            None if self.from.keep_owner => (meta.uid(), meta.gid()),
            None => (0, 0),
        }
    }

    /// Creates `dir` and missing parents (mode 0755, owned by `--chown` or root). An
    /// existing non-directory in the way is replaced when `replace` is set.
    fn ensure_dir(&self, dir: &Path, replace: bool) -> Result<()> {
        if let Ok(meta) = fs::symlink_metadata(dir) {
            if meta.is_dir() {
                return Ok(());
            }
            if !replace {
                return Err(CopyError::Io {
                    path: dir.to_path_buf(),
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "not a directory"),
                });
            }
            fs::remove_file(dir).map_err(io_err(dir))?;
        }
        if let Some(parent) = dir.parent() {
            if parent.starts_with(self.rootfs) && parent != self.rootfs {
                self.ensure_dir(parent, false)?;
            }
        }
        fs::create_dir(dir).map_err(io_err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_err(dir))?;
        let (uid, gid) = self.opts.chown.unwrap_or((0, 0));
        lchown(dir, uid, gid)
    }

    fn copy_dir_contents(&mut self, src: &Path, rel: &Path, dest: &Path) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(src)
            .map_err(io_err(src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(io_err(src))?;
        names.sort();
        for name in names {
            let child_rel = rel.join(&name);
            if self.is_ignored(&child_rel) {
                continue;
            }
            self.copy_entry(&src.join(&name), &child_rel, &dest.join(&name))?;
        }
        Ok(())
    }

    fn is_ignored(&self, rel: &Path) -> bool {
        self.from.ignore.is_some_and(|i| i.is_excluded(rel))
    }

    /// Copies one entry (recursively for directories) to `target`, a host path in rootfs.
    fn copy_entry(&mut self, src: &Path, rel: &Path, target: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            match fs::symlink_metadata(target) {
                Ok(existing) if existing.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(target).map_err(io_err(target))?;
                    fs::create_dir(target).map_err(io_err(target))?;
                }
                Err(_) => fs::create_dir(target).map_err(io_err(target))?,
            }
            self.copy_dir_contents(src, rel, target)?;
            return self.apply_metadata(target, &meta);
        }
        remove_existing(target)?;
        if ft.is_symlink() {
            let link = fs::read_link(src).map_err(io_err(src))?;
            symlink(&link, target).map_err(io_err(target))?;
            let (uid, gid) = self.owner(&meta);
            lchown(target, uid, gid)?;
            return set_mtime(target, &meta);
        }
        if ft.is_file() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                return fs::hard_link(first, target).map_err(io_err(target));
            }
            self.links
                .insert((meta.dev(), meta.ino()), target.to_path_buf());
        }
        if ft.is_file() {
            copy_file_contents(src, target)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            mknod_like(target, &meta)?;
        } else {
            return Ok(()); // sockets are not copied
        }
        self.apply_metadata(target, &meta)
    }

    fn apply_metadata(&self, target: &Path, meta: &fs::Metadata) -> Result<()> {
        let (uid, gid) = self.owner(meta);
        lchown(target, uid, gid)?;
        let mode = match self.opts.chmod {
            Some(bits) => bits,
            None => meta.mode() & 0o7777,
        };
        fs::set_permissions(target, fs::Permissions::from_mode(mode)).map_err(io_err(target))?;
        set_mtime(target, meta)
    }
}

fn remove_existing(target: &Path) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(target).map_err(io_err(target)),
        Ok(_) => fs::remove_file(target).map_err(io_err(target)),
        Err(_) => Ok(()),
    }
}

fn copy_file_contents(src: &Path, target: &Path) -> Result<()> {
    let mut input = fs::File::open(src).map_err(io_err(src))?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(io_err(target))?;
    io::copy(&mut input, &mut output).map_err(io_err(target))?;
    Ok(())
}

fn mknod_like(target: &Path, meta: &fs::Metadata) -> Result<()> {
    let path = nix_path(target)?;
    // SAFETY: `path` is a valid NUL-terminated string; mknod has no memory-safety preconditions.
    let rc = unsafe { libc::mknod(path.as_ptr(), meta.mode() as libc::mode_t, meta.rdev()) };
    if rc != 0 {
        return Err(CopyError::Io {
            path: target.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn nix_path(path: &Path) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| CopyError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

/// Changes the owner of `path` without following a final symlink.
pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err(path))
}

fn set_mtime(target: &Path, meta: &fs::Metadata) -> Result<()> {
    let mtime = filetime::FileTime::from_last_modification_time(meta);
    filetime::set_symlink_file_times(target, mtime, mtime).map_err(io_err(target))
}

/// True when `path` starts like a tar archive, compressed or not.
fn is_archive(path: &Path) -> Result<bool> {
    let mut head = [0u8; 512];
    let mut file = fs::File::open(path).map_err(io_err(path))?;
    let mut filled = 0;
    while filled < head.len() {
        let n = file.read(&mut head[filled..]).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let head = &head[..filled];
    let compressed = head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]);
    let plain_tar = filled >= 262 && &head[257..262] == b"ustar";
    Ok(compressed || plain_tar)
}

/// Extracts a local archive into `dest` with `tar` (it knows gzip, bzip2 and xz), refusing
/// members that leave `dest`.
fn extract_archive(archive: &Path, dest: &Path) -> Result<()> {
    let status = std::process::Command::new("tar")
        .arg("-x")
        .arg("--no-same-permissions")
        .arg("--same-owner")
        .arg("-f")
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .status()
        .map_err(io_err(archive))?;
    if !status.success() {
        return Err(CopyError::Io {
            path: archive.to_path_buf(),
            source: io::Error::other(format!("extracting the archive failed ({status})")),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn context() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("bin/sub")).unwrap();
        fs::write(root.join("bin/start"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("bin/start"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("bin/sub/x.txt"), "x").unwrap();
        fs::write(root.join("config.txt"), "cfg").unwrap();
        fs::write(root.join("a.md"), "a").unwrap();
        fs::write(root.join("b.md"), "b").unwrap();
        symlink("start", root.join("bin/run")).unwrap();
        dir
    }

    fn copy(ctx: &Path, rootfs: &Path, sources: &[&str], dest: &str) -> Result<()> {
        let from = SourceRoot {
            dir: ctx,
            ignore: None,
            origin: "build context".into(),
            keep_owner: false,
        };
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        copy_sources(&from, &sources, dest, rootfs, &CopyOptions::default())
    }

    #[test]
    fn directory_source_copies_contents_and_keeps_modes_and_symlinks() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        copy(ctx.path(), rootfs.path(), &["bin/"], "/app/bin/").unwrap();
        let start = rootfs.path().join("app/bin/start");
        assert_eq!(fs::metadata(&start).unwrap().mode() & 0o7777, 0o755);
        assert_eq!(
            fs::read(rootfs.path().join("app/bin/sub/x.txt")).unwrap(),
            b"x"
        );
        assert_eq!(
            fs::read_link(rootfs.path().join("app/bin/run")).unwrap(),
            Path::new("start")
        );
        assert!(!rootfs.path().join("app/bin/bin").exists());
    }

    #[test]
    fn file_to_directory_and_to_file_name() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        copy(ctx.path(), rootfs.path(), &["config.txt"], "/etc/app/").unwrap();
        assert_eq!(
            fs::read(rootfs.path().join("etc/app/config.txt")).unwrap(),
            b"cfg"
        );
        copy(ctx.path(), rootfs.path(), &["config.txt"], "/etc/renamed").unwrap();
        assert_eq!(fs::read(rootfs.path().join("etc/renamed")).unwrap(), b"cfg");
        // An existing directory takes the file inside it even without a trailing slash.
        copy(ctx.path(), rootfs.path(), &["a.md"], "/etc/app").unwrap();
        assert!(rootfs.path().join("etc/app/a.md").is_file());
    }

    #[test]
    fn several_sources_need_a_directory_destination() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        let err = copy(ctx.path(), rootfs.path(), &["a.md", "b.md"], "/docs").unwrap_err();
        assert!(matches!(err, CopyError::DestNotDir { .. }), "{err}");
        copy(ctx.path(), rootfs.path(), &["a.md", "b.md"], "/docs/").unwrap();
        assert!(rootfs.path().join("docs/b.md").is_file());
    }

    #[test]
    fn globs_match_and_missing_sources_fail() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        copy(ctx.path(), rootfs.path(), &["*.md"], "/docs/").unwrap();
        assert!(rootfs.path().join("docs/a.md").is_file());
        assert!(rootfs.path().join("docs/b.md").is_file());
        let err = copy(ctx.path(), rootfs.path(), &["*.rs"], "/x/").unwrap_err();
        assert!(err.to_string().contains("*.rs"), "{err}");
        let err = copy(ctx.path(), rootfs.path(), &["nope"], "/x/").unwrap_err();
        assert!(err.to_string().contains("build context"), "{err}");
    }

    #[test]
    fn sources_cannot_leave_the_context() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        let err = copy(ctx.path(), rootfs.path(), &["../etc/passwd"], "/x").unwrap_err();
        assert!(matches!(err, CopyError::OutsideRoot { .. }), "{err}");
    }

    #[test]
    fn destination_symlinks_stay_inside_the_rootfs() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), rootfs.path().join("escape")).unwrap();
        copy(ctx.path(), rootfs.path(), &["config.txt"], "/escape/").unwrap();
        assert!(!outside.path().join("config.txt").exists());
    }

    #[test]
    fn dockerignore_applies_to_sources_and_directory_contents() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        let rules = IgnoreRules::parse("bin/sub\n*.md\n");
        let from = SourceRoot {
            dir: ctx.path(),
            ignore: Some(&rules),
            origin: "build context".into(),
            keep_owner: false,
        };
        copy_sources(
            &from,
            &["bin".into()],
            "/b/",
            rootfs.path(),
            &CopyOptions::default(),
        )
        .unwrap();
        assert!(rootfs.path().join("b/start").exists());
        assert!(!rootfs.path().join("b/sub").exists());
        let err = copy_sources(
            &from,
            &["a.md".into()],
            "/",
            rootfs.path(),
            &CopyOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains(".dockerignore"), "{err}");
    }

    #[test]
    fn chown_and_chmod_apply_to_copied_files() {
        let ctx = context();
        let rootfs = tempfile::tempdir().unwrap();
        let from = SourceRoot {
            dir: ctx.path(),
            ignore: None,
            origin: "build context".into(),
            keep_owner: false,
        };
        let opts = CopyOptions {
            chown: Some((1000, 1001)),
            chmod: Some(0o600),
            extract_archives: false,
        };
        copy_sources(&from, &["config.txt".into()], "/c/", rootfs.path(), &opts).unwrap();
        let meta = fs::metadata(rootfs.path().join("c/config.txt")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1000, 1001, 0o600)
        );
    }
}
