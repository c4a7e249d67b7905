//! Layer blobs and slow readers, shared by `tests/store.rs` and the child processes it
//! starts (`snapshot-test-helper`, see `helper.rs`).

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::thread;
use std::time::Duration;

use ocibuild_snapshot::store::LayerDigests;

/// A gzip layer blob and its two digests.
#[derive(Clone)]
pub struct Blob {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
    /// The regular files in it and their content.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Blob {
    pub fn digests(&self) -> LayerDigests<'_> {
        LayerDigests {
            digest: &self.digest,
            diff_id: &self.diff_id,
        }
    }

    /// Writes the blob to `dir/blob` and its digests to `dir/digests`.
    pub fn save(&self, dir: &Path) {
        fs::write(dir.join("blob"), &self.bytes).unwrap();
        fs::write(
            dir.join("digests"),
            format!("{} {}", self.digest, self.diff_id),
        )
        .unwrap();
    }

    /// The blob saved in `dir` by [`Blob::save`] (without the file list).
    pub fn load(dir: &Path) -> Blob {
        let digests = fs::read_to_string(dir.join("digests")).unwrap();
        let (digest, diff_id) = digests.split_once(' ').unwrap();
        Blob {
            bytes: fs::read(dir.join("blob")).unwrap(),
            digest: digest.to_string(),
            diff_id: diff_id.to_string(),
            files: Vec::new(),
        }
    }

    /// Asserts that every file of the blob is in `dir` with its content.
    pub fn assert_complete(&self, dir: &Path) {
        for (name, data) in &self.files {
            let found = fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(found == *data, "{name} differs");
        }
    }
}

/// A reader that hands out at most `chunk` bytes per call and sleeps `pause` before each
/// call once `fast` bytes have gone (a slow download).
pub struct Slow<R> {
    inner: R,
    chunk: usize,
    pause: Duration,
    pub fast: u64,
    read: u64,
}

impl<R: Read> Slow<R> {
    pub fn new(inner: R, chunk: usize, pause: Duration) -> Self {
        Slow {
            inner,
            chunk,
            pause,
            fast: 0,
            read: 0,
        }
    }
}

impl<R: Read> Read for Slow<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read >= self.fast {
            thread::sleep(self.pause);
        }
        let len = buf.len().min(self.chunk);
        let n = self.inner.read(&mut buf[..len])?;
        self.read += n as u64;
        Ok(n)
    }
}
