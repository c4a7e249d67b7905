//! Resolving image paths inside a root directory ("securejoin").
//!
//! A path found in a layer or a Dockerfile means a path inside the image. On
//! the host it must be looked up under the rootfs directory, and no `..` or
//! symbolic link may lead it outside. [`resolve_in_root`] walks the path one
//! component at a time, treating the rootfs as `/`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::rootfd::RootDir;

/// How many symbolic links one resolution may follow before giving up.
pub const MAX_SYMLINKS: u32 = 40;

/// One step still to be taken while resolving.
pub(crate) enum Step {
    /// Go back to the root (an absolute symlink target).
    Root,
    /// Go to the parent, never above the root.
    Parent,
    /// Enter the named entry.
    Name(OsString),
}

/// Splits `path` into steps; `.` components are dropped.
pub(crate) fn steps_of(path: &Path) -> Vec<Step> {
    let mut steps = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => steps.push(Step::Root),
            Component::CurDir => {}
            Component::ParentDir => steps.push(Step::Parent),
            Component::Normal(name) => steps.push(Step::Name(name.to_os_string())),
        }
    }
    steps
}

/// True for errors that mean "nothing there": ENOENT, or ENOTDIR when a
/// parent component is not a directory.
pub fn is_missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// Resolves `path` inside `root` as if `root` were `/` and returns the host path.
///
/// `path` may be absolute or relative; either way it is taken from the root
/// of the image. `..` never climbs above `root`. Symbolic links met on the
/// way are read and resolved inside `root` as well: absolute targets start
/// again at `root`, relative ones at the link's directory. The last
/// component is followed only when `follow_final` is true. Components that do
/// not exist are appended as they are. More than [`MAX_SYMLINKS`] links give
/// [`Error::SymlinkLoop`].
///
/// The returned path always lies under `root` (it is `root` joined with plain
/// names only). The lookups are done on directory descriptors by [`RootDir::resolve`];
/// the returned path is only good for reading while nothing else changes the tree: to
/// write, use [`RootDir`] itself.
pub fn resolve_in_root(root: &Path, path: &Path, follow_final: bool) -> Result<PathBuf> {
    let inside = RootDir::open(root)?.resolve(path, follow_final)?;
    Ok(root.join(inside))
}

/// Makes `path` relative and clean (leading `/`, `.` components dropped); a `..` component
/// is refused with `Error::UnsafePath` saying it is in a `what` (e.g. "entry name").
pub(crate) fn clean_relative(path: &Path, what: &str) -> Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(Error::UnsafePath {
                    path: path.to_path_buf(),
                    reason: format!("{what} contains a `..` component"),
                })
            }
        }
    }
    Ok(clean)
}

/// True if `name` is a single plain file name (not empty, `.`, `..`, and without `/`).
pub(crate) fn is_plain_name(name: &OsStr) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(n)), None) if n == name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn dotdot_stays_in_root() {
        let r = root();
        let p = resolve_in_root(r.path(), Path::new("../../etc/passwd"), true).unwrap();
        assert_eq!(p, r.path().join("etc/passwd"));
    }

    #[test]
    fn absolute_path_is_taken_from_root() {
        let r = root();
        let p = resolve_in_root(r.path(), Path::new("/usr/bin/../lib/./x"), true).unwrap();
        assert_eq!(p, r.path().join("usr/lib/x"));
    }

    #[test]
    fn absolute_symlink_restarts_at_root() {
        let r = root();
        std::fs::create_dir(r.path().join("etc")).unwrap();
        symlink("/etc", r.path().join("x")).unwrap();
        let p = resolve_in_root(r.path(), Path::new("/x"), true).unwrap();
        assert_eq!(p, r.path().join("etc"));
        let p = resolve_in_root(r.path(), Path::new("/x/passwd"), false).unwrap();
        assert_eq!(p, r.path().join("etc/passwd"));
    }

    #[test]
    fn final_symlink_kept_without_follow() {
        let r = root();
        symlink("/etc", r.path().join("x")).unwrap();
        let p = resolve_in_root(r.path(), Path::new("x"), false).unwrap();
        assert_eq!(p, r.path().join("x"));
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let r = root();
        symlink("b", r.path().join("a")).unwrap();
        symlink("a", r.path().join("b")).unwrap();
        let err = resolve_in_root(r.path(), Path::new("a/file"), true).unwrap_err();
        assert!(matches!(err, Error::SymlinkLoop { .. }), "{err}");
    }

    #[test]
    fn relative_link_past_root_clamps() {
        let r = root();
        std::fs::create_dir_all(r.path().join("a/b")).unwrap();
        symlink("../../../../tmp", r.path().join("a/b/up")).unwrap();
        let p = resolve_in_root(r.path(), Path::new("a/b/up/file"), true).unwrap();
        assert_eq!(p, r.path().join("tmp/file"));
    }

    #[test]
    fn relative_link_resolves_from_its_directory() {
        let r = root();
        std::fs::create_dir_all(r.path().join("a/real")).unwrap();
        symlink("real", r.path().join("a/link")).unwrap();
        let p = resolve_in_root(r.path(), Path::new("a/link/f"), true).unwrap();
        assert_eq!(p, r.path().join("a/real/f"));
    }

    #[test]
    fn missing_components_are_appended_and_dotdot_still_clamped() {
        let r = root();
        symlink("/etc", r.path().join("evil")).unwrap();
        let p = resolve_in_root(r.path(), Path::new("nope/../evil/x"), true).unwrap();
        assert_eq!(p, r.path().join("etc/x"));
        let p = resolve_in_root(r.path(), Path::new("nope/more"), true).unwrap();
        assert_eq!(p, r.path().join("nope/more"));
    }

    #[test]
    fn empty_path_is_root() {
        let r = root();
        assert_eq!(
            resolve_in_root(r.path(), Path::new(""), true).unwrap(),
            r.path()
        );
        assert_eq!(
            resolve_in_root(r.path(), Path::new("/"), true).unwrap(),
            r.path()
        );
    }

    #[test]
    fn plain_names() {
        assert!(is_plain_name(OsStr::new("a")));
        assert!(is_plain_name(OsStr::new(".a")));
        assert!(!is_plain_name(OsStr::new("..")));
        assert!(!is_plain_name(OsStr::new(".")));
        assert!(!is_plain_name(OsStr::new("")));
        assert!(!is_plain_name(OsStr::new("a/b")));
    }
}
