//! What the tests of the local cache look at: its files, hits, and writer processes
//! (`cache-test-writer`, see `writer.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ocibuild_cache::{CachedLayer, LocalCache};

use super::common::sha256;

/// The entry file of `key` in the cache `dir`.
pub fn entry_file(dir: &Path, key: &str) -> PathBuf {
    dir.join("keys").join(format!("{key}.json"))
}

/// The blob file of `digest` in the cache `dir`.
pub fn blob_file(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The names in `dir/sub`, sorted (none while it does not exist).
pub fn names(dir: &Path, sub: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir.join(sub)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The temporary files (`*.tmp`) in the cache `dir`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    names(dir, "tmp")
        .into_iter()
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// Asserts that `key` is a hit for `layer` whose blob has the layer's digest.
pub fn assert_hit(cache: &LocalCache, key: &str, layer: &CachedLayer) -> PathBuf {
    let mut warnings = Vec::new();
    let (got, path) = cache
        .get(key, &mut warnings)
        .unwrap()
        .unwrap_or_else(|| panic!("{key} should be a hit; warnings: {warnings:?}"));
    assert_eq!(&got, layer);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(sha256(&fs::read(&path).unwrap()), layer.digest);
    path
}

/// A scratch directory on another filesystem than the cache (tmpfs), when there is one,
/// so that storing copies instead of hard-linking.
pub fn other_fs_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

/// Starts `cache-test-writer ROLE ARGS...` with its output piped.
pub fn spawn_writer(role: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cache-test-writer"))
        .arg(role)
        .args(args.iter().map(|a| a.as_ref()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` and returns its standard output; panics with its output when it
/// failed.
pub fn wait_success(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "writer failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
