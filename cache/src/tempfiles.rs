//! Temporary files of the local cache, and reclaiming those of processes that are gone.
//!
//! A process writing into `tmp/` first makes its *writer file* `tmp/<id>.writer` and holds
//! an exclusive `flock` on it while it uses the cache (the kernel drops the lock when the
//! process dies, however it dies); its temporary files are named `<what>.<id>.<n>.tmp`.
//! [`TempFiles::reclaim`] removes at once the temporary files of every writer whose writer
//! file is gone or not locked: a process that was killed or has exited. The lock works
//! across PID namespaces (build agents in different containers sharing the directory),
//! where a recorded PID could not be checked. Names of any other form (left by earlier
//! versions, or made when no writer file could be created) are removed once they are an
//! hour old.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::fsutil::remove_if_exists;
use super::CacheError;

/// Temporary files not named after a writer are left over from a killed process once they
/// are this old.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// The suffix of writer files.
const WRITER_SUFFIX: &str = ".writer";

/// How many fresh writer names are tried before giving up.
const WRITER_ATTEMPTS: usize = 8;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The writer ids of this process. [`TempFiles::reclaim`] never probes them: on NFS, where
/// `flock` is emulated with POSIX locks, which belong to a process, probing its own writer
/// file would succeed (so take it for a dead one's) and, closing it, release the lock.
static OWN_WRITERS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// [`OWN_WRITERS`], locked.
fn own_writers() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    OWN_WRITERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `tmp/` directory of a cache and this process's writer file in it, shared by the
/// clones of one cache; the writer file is removed when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct TempFiles {
    dir: PathBuf,
    writer: Arc<Mutex<Option<Writer>>>,
}

impl std::fmt::Debug for TempFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempFiles").field("dir", &self.dir).finish()
    }
}

/// This process's writer file, locked.
struct Writer {
    id: String,
    path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for Writer {
    /// Removes the writer file (the lock is released right after, with the descriptor).
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        own_writers().remove(&self.id);
    }
}

/// A temporary file that is removed when dropped, unless it was renamed away before.
pub(crate) struct Staged {
    path: PathBuf,
}

impl Staged {
    /// Takes charge of the temporary file `path`.
    pub(crate) fn new(path: PathBuf) -> Staged {
        Staged { path }
    }

    /// The temporary file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = remove_if_exists(&self.path);
    }
}

/// What [`probe`] found out about a writer.
enum Probe {
    /// Its writer file is locked: the process is alive.
    Alive,
    /// Its writer file is gone.
    Gone,
    /// Its writer file is not locked (now it is, by us, until this is dropped).
    Dead(Flock<File>),
}

impl TempFiles {
    /// The temporary files in `dir` (which must exist).
    pub(crate) fn new(dir: PathBuf) -> TempFiles {
        TempFiles {
            dir,
            writer: Arc::new(Mutex::new(None)),
        }
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh temporary file name (not created) owned by this process: `what` must be a
    /// plain word without `.`. Fails when no writer file can be made (a full directory).
    pub(crate) fn path(&self, what: &str) -> Result<PathBuf, CacheError> {
        let id = self.writer_id()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Ok(self.dir.join(format!("{what}.{id}.{n}.tmp")))
    }

    /// This process's writer id, making and locking its writer file the first time.
    fn writer_id(&self) -> Result<String, CacheError> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = writer.as_ref() {
            return Ok(w.id.clone());
        }
        let mut last = None;
        for _ in 0..WRITER_ATTEMPTS {
            match self.make_writer() {
                Ok(Some(made)) => {
                    let id = made.id.clone();
                    *writer = Some(made);
                    return Ok(id);
                }
                Ok(None) => {}
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| CacheError::Io {
            action: "create a writer file in",
            path: self.dir.clone(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "every name tried was taken"),
        }))
    }

    /// Creates and locks a writer file under a fresh name; `None` when a reclaiming process
    /// got to it first (it takes an unlocked writer file for a dead one), so that another
    /// name must be tried.
    fn make_writer(&self) -> Result<Option<Writer>, CacheError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{nanos:x}-{n}", std::process::id());
        let path = self.dir.join(format!("{id}{WRITER_SUFFIX}"));
        let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(CacheError::io("create", &path)(e)),
        };
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, errno)) => return Err(CacheError::io("lock", &path)(errno.into())),
        };
        // A reclaimer that locked it before us has removed it (it does so holding the lock).
        let ours = lock.metadata().map_err(CacheError::io("read", &path))?;
        let still =
            fs::metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == (ours.dev(), ours.ino()));
        if !still {
            return Ok(None);
        }
        own_writers().insert(id.clone());
        Ok(Some(Writer {
            id,
            path,
            _lock: lock,
        }))
    }

    /// Removes the temporary files of writers that are gone (killed or exited) with their
    /// writer files, and temporary files of other names older than an hour. Errors are
    /// ignored: what cannot be removed now is tried again next time.
    pub(crate) fn reclaim(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut by_writer: HashMap<String, Vec<PathBuf>> = HashMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_str().unwrap_or("");
            if let Some(id) = name.strip_suffix(WRITER_SUFFIX) {
                by_writer.entry(id.to_string()).or_default();
            } else if let Some(id) = writer_of(name) {
                by_writer
                    .entry(id.to_string())
                    .or_default()
                    .push(entry.path());
            } else {
                remove_if_stale(&entry.path());
            }
        }
        let own = own_writers().clone();
        for (id, temps) in by_writer.into_iter().filter(|(id, _)| !own.contains(id)) {
            let path = self.dir.join(format!("{id}{WRITER_SUFFIX}"));
            let lock = match probe(&path) {
                Probe::Alive => continue,
                Probe::Gone => None,
                Probe::Dead(lock) => Some(lock),
            };
            for temp in temps {
                let _ = fs::remove_file(temp);
            }
            if lock.is_some() {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// The writer id in a temporary file name `<what>.<id>.<n>.tmp`.
fn writer_of(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".tmp")?;
    let mut parts = stem.split('.');
    let (_what, id, n) = (parts.next()?, parts.next()?, parts.next()?);
    let plain = parts.next().is_none() && !id.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    plain.then_some(id)
}

/// Whether the writer of `path` (its writer file) is alive.
fn probe(path: &Path) -> Probe {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Probe::Gone,
        // Unreadable: leave it alone.
        Err(_) => return Probe::Alive,
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Probe::Dead(lock),
        Err(_) => Probe::Alive,
    }
}

/// Removes the file `path` if it was last modified more than an hour ago.
fn remove_if_stale(path: &Path) {
    let Ok(meta) = path.symlink_metadata() else {
        return;
    };
    let old = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > STALE_TEMP_AGE);
    if old && !meta.is_dir() {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_their_writer() {
        assert_eq!(writer_of("link.123-abc-4.17.tmp"), Some("123-abc-4"));
        for other in [
            "blob-999999-0-0.tmp",
            "link.123.tmp",
            "a.b.c.d.tmp",
            "a.id.x1.tmp",
            "x.writer",
        ] {
            assert_eq!(writer_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_live_writer_keeps_its_files_and_a_dropped_one_loses_them() {
        let dir = tempfile::tempdir().unwrap();
        let live = TempFiles::new(dir.path().to_path_buf());
        let live_file = live.path("blob").unwrap();
        fs::write(&live_file, b"in progress").unwrap();
        let gone = TempFiles::new(dir.path().to_path_buf());
        let gone_file = gone.path("entry").unwrap();
        fs::write(&gone_file, b"left behind").unwrap();
        assert_ne!(live.writer_id().unwrap(), gone.writer_id().unwrap());
        drop(gone);
        live.reclaim();
        assert!(live_file.exists());
        assert!(!gone_file.exists());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(
            names.len(),
            2,
            "the live file and its writer file: {names:?}"
        );
    }
}
