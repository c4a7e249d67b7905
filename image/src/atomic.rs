//! Atomic file writes: a temporary file, fsync, rename over the target.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A failed file operation: what was done, on which path.
#[derive(Debug)]
pub struct IoError {
    /// The operation, e.g. `create` or `rename into place`.
    pub action: &'static str,
    /// The file it was done on.
    pub path: PathBuf,
    /// The error.
    pub source: io::Error,
}

impl IoError {
    /// A `map_err` adapter naming `action` and `path`.
    pub fn at(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IoError {
        let path = path.to_path_buf();
        move |source| IoError {
            action,
            path,
            source,
        }
    }
}

/// `path` with a `.partial-<pid>` suffix, in the same directory.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to the temporary file `tmp`, fsyncs it and renames it over `dest`; `tmp`
/// is removed when anything fails.
pub fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let result = write_then_rename(tmp, dest, bytes);
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

fn write_then_rename(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(IoError::at("create", tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(IoError::at("write", tmp))?;
    drop(file);
    fs::rename(tmp, dest).map_err(IoError::at("rename into place", dest))
}

/// fsyncs the directory `dir`, so that a rename into it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), IoError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(IoError::at("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_the_target_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        fs::write(&dest, b"old").unwrap();
        let tmp = temp_sibling(&dest);
        write_atomic(&tmp, &dest, b"new").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert!(!tmp.exists());
        sync_dir(dir.path()).unwrap();
        let missing = dir.path().join("no/such/f");
        let err = write_atomic(&temp_sibling(&missing), &missing, b"x").unwrap_err();
        assert_eq!(err.action, "create");
    }
}
