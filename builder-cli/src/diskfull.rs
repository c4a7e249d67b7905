//! The advice added to an error caused by a full filesystem (`ENOSPC`, `EDQUOT`): which
//! directory is full (the mount point holding the file that could not be written) and
//! which flags move the build's files elsewhere.

use std::path::{Path, PathBuf};

/// `ENOSPC` and `EDQUOT` on Linux.
const FULL: [i32; 2] = [28, 122];

/// The advice for `err` when a full filesystem caused it: `disk full: no space left in
/// MOUNT (writing PATH); ...`.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    let full = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| FULL.contains(&code))
    });
    if !full && !err.chain().any(|e| e.to_string().contains("No space left")) {
        return None;
    }
    let path = err.chain().find_map(path_of);
    let place = match &path {
        Some(path) => {
            let dir = mount_point(path).unwrap_or_else(|| path.clone());
            format!(" in {} (writing {})", dir.display(), path.display())
        }
        None => String::new(),
    };
    Some(format!(
        "disk full: no space left{place}; free space there, or give the build more room \
         elsewhere (--work-dir or TMPDIR for the work directory, --layer-store, --cache-dir)"
    ))
}

/// The path an error of ocibuild's crates names, if any (an absolute one: a snapshot
/// error may name a path inside the root filesystem).
fn path_of(e: &(dyn std::error::Error + 'static)) -> Option<PathBuf> {
    use ocibuild_core::BuildError;
    use ocibuild_registry::Error as RegistryError;
    use ocibuild_snapshot::Error as SnapshotError;
    let build = e.downcast_ref::<BuildError>();
    let registry = e
        .downcast_ref::<RegistryError>()
        .or_else(|| e.downcast_ref::<Box<RegistryError>>().map(|b| &**b));
    let snapshot = e
        .downcast_ref::<SnapshotError>()
        .or_else(|| e.downcast_ref::<Box<SnapshotError>>().map(|b| &**b));
    let path = match (build, registry, snapshot) {
        (Some(BuildError::Io { path, .. }), _, _) => path,
        (_, Some(RegistryError::Io { path, .. }), _) => path,
        (_, _, Some(SnapshotError::Io { path, .. })) => path,
        _ => return None,
    };
    Some(path.clone()).filter(|p| p.is_absolute())
}

/// The mount point of the filesystem holding `path` (the longest mount point of
/// `/proc/self/mountinfo` that is an ancestor of it).
fn mount_point(path: &Path) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .filter(|point| path.starts_with(point))
        .max_by_key(|point| point.components().count())
}

/// A mount point as `mountinfo` writes it (space, tab, newline and backslash as `\ooo`).
fn unescape(field: &str) -> PathBuf {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    PathBuf::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_filesystem_is_named_by_its_mount_point_and_the_file() {
        let io = std::io::Error::from_raw_os_error(28);
        let err = anyhow::Error::new(ocibuild_core::BuildError::Io {
            path: PathBuf::from("/proc/self/status"),
            source: io,
        });
        let hint = hint(&err).expect("a hint for ENOSPC");
        assert!(
            hint.starts_with("disk full: no space left in /proc (writing /proc/self/status)"),
            "{hint}"
        );
        assert!(hint.contains("--work-dir"), "{hint}");
    }

    #[test]
    fn other_errors_get_no_hint() {
        let io = std::io::Error::from_raw_os_error(13);
        let err = anyhow::Error::new(ocibuild_core::BuildError::Io {
            path: PathBuf::from("/x"),
            source: io,
        });
        assert_eq!(hint(&err), None);
    }

    #[test]
    fn escaped_mount_points_are_read_back() {
        assert_eq!(unescape(r"/mnt/a\040b\134c"), PathBuf::from(r"/mnt/a b\c"));
    }
}
