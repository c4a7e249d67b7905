//! The layer store under attack: concurrent inserts from threads and processes, a
//! process killed mid-extraction, blobs that lie about their digests, hostile layers, and
//! pruning around layers in use.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ocibuild_image::digest::sha256_digest as sha256;
use ocibuild_snapshot::store::{LayerDigests, LayerStore, PruneOptions};
use ocibuild_snapshot::Error;

#[allow(dead_code)]
#[path = "helpers/blob.rs"]
mod blob;

use blob::{Blob, Slow};

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000);
    h
}

/// Builds a gzip layer blob.
struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
    files: Vec<(String, Vec<u8>)>,
}

impl LayerBuilder {
    fn new() -> Self {
        LayerBuilder {
            tar: tar::Builder::new(Vec::new()),
            files: Vec::new(),
        }
    }

    fn file(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.tar.append_data(&mut h, name, data).unwrap();
        self.files.push((name.to_string(), data.to_vec()));
        self
    }

    fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
        let mut h = header(kind, 0o777, 0);
        self.tar.append_link(&mut h, name, target).unwrap();
        self
    }

    /// A regular file whose name bytes are written as they are (no checks).
    fn raw_file(mut self, name: &[u8], data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.tar.append(&h, data).unwrap();
        self
    }

    fn blob(self) -> Blob {
        let tar = self.tar.into_inner().unwrap();
        let bytes = gzip(&tar);
        Blob {
            digest: sha256(&bytes),
            diff_id: sha256(&tar),
            bytes,
            files: self.files,
        }
    }
}

/// Incompressible bytes, different for each `seed` (xorshift64).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A layer of `files` files of `size` incompressible bytes each.
fn noisy_layer(seed: u64, files: usize, size: usize) -> Blob {
    let mut layer = LayerBuilder::new();
    for i in 0..files {
        layer = layer.file(
            &format!("d{}/f{i}", i % 4),
            &noise(seed * 1000 + i as u64, size),
        );
    }
    layer.blob()
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Every path below `dir` with its kind, size and mode (a directory tree's fingerprint).
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u32, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        out.push((
            path.strip_prefix(dir).unwrap().to_path_buf(),
            meta.mode(),
            meta.len(),
        ));
        if meta.is_dir() {
            todo.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// Asserts the store at `root` holds nothing of `blob` and nothing in `tmp/`.
fn assert_nothing_of(root: &Path, blob: &Blob) {
    let hex = hex(&blob.diff_id);
    assert!(!root.join("layers/sha256").join(hex).exists());
    assert!(!root.join("meta").join(format!("{hex}.json")).exists());
    assert_eq!(names(&root.join("tmp")), Vec::<String>::new());
}

/// Starts `snapshot-test-helper ROLE STORE BLOB_DIR` (roles: see `helpers/helper.rs`).
fn spawn_child(role: &str, store: &Path, blob_dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_snapshot-test-helper"))
        .arg(role)
        .args([store, blob_dir])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_layer_is_stored_by_diff_id_and_found_again_without_reading_its_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = LayerStore::open(dir.path()).unwrap();
    let blob = noisy_layer(1, 8, 10_000);
    let inserted = store
        .insert_from_reader(&blob.bytes[..], blob.digests())
        .unwrap();
    let stats = inserted.extracted.as_ref().expect("extracted");
    assert_eq!(stats.entries, 8);
    let path = dir.path().join("layers/sha256").join(hex(&blob.diff_id));
    assert_eq!(inserted.layer.path(), path);
    assert_eq!(inserted.layer.diff_id(), blob.diff_id);
    assert!(inserted.layer.size() >= 80_000, "{}", inserted.layer.size());
    blob.assert_complete(&path);
    drop(inserted);

    // An empty blob would not match the digests: it is not even read.
    let again = store
        .insert_from_reader(io::empty(), blob.digests())
        .unwrap();
    assert!(again.extracted.is_none(), "the blob was not needed");
    let got = store.get(&blob.diff_id).unwrap().expect("stored");
    assert_eq!(got.path(), path);
    assert_eq!(got.size(), again.layer.size());
    let other = sha256(b"not stored");
    assert!(store.get(&other).unwrap().is_none());
    for private in ["layers", "meta", "locks", "tmp", "steps"] {
        let mode = fs::metadata(dir.path().join(private))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "images' set-uid files stay private");
    }
}

#[test]
fn threads_inserting_one_layer_extract_it_once_and_all_see_it_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = LayerStore::open(dir.path()).unwrap();
    let blob = Arc::new(noisy_layer(2, 32, 8192));
    let barrier = Arc::new(Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (store, blob, barrier) = (store.clone(), blob.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let slow = Slow::new(&blob.bytes[..], 4096, Duration::from_millis(1));
                let inserted = store.insert_from_reader(slow, blob.digests()).unwrap();
                blob.assert_complete(inserted.layer.path());
                inserted.extracted.is_some()
            })
        })
        .collect();
    let extracted = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&e| e)
        .count();
    assert_eq!(extracted, 1);
    assert_eq!(names(&dir.path().join("tmp")), Vec::<String>::new());
}

#[test]
fn processes_inserting_one_layer_extract_it_once_and_all_see_it_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let blob = noisy_layer(3, 32, 8192);
    blob.save(dir.path());
    let children: Vec<_> = (0..4)
        .map(|_| spawn_child("insert", &store_dir, dir.path()))
        .collect();
    let mut said = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said.push(stdout.trim_end().to_string());
    }
    said.sort();
    assert_eq!(said, ["extracted 8", "found 8", "found 8", "found 8"]);
    let store = LayerStore::open(&store_dir).unwrap();
    blob.assert_complete(store.get(&blob.diff_id).unwrap().unwrap().path());
}

#[test]
fn a_process_killed_mid_extraction_leaves_no_layer_and_its_leftovers_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let blob = noisy_layer(4, 64, 16 * 1024);
    blob.save(dir.path());
    let mut child = spawn_child("crawl", &root, dir.path());
    let tmp = root.join("tmp");
    let started = Instant::now();
    let partial = loop {
        let found = fs::read_dir(&tmp)
            .ok()
            .and_then(|mut entries| entries.next());
        if let Some(entry) = found {
            let partial = entry.unwrap().path();
            if partial.join("d0").exists() {
                break partial;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no extraction began"
        );
        thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(partial.exists(), "the kill left a partial extraction");
    assert!(!root.join("layers/sha256").join(hex(&blob.diff_id)).exists());

    let store = LayerStore::open(&root).unwrap();
    assert_nothing_of(&root, &blob);
    assert_eq!(names(&root.join("meta")), Vec::<String>::new());
    assert_eq!(names(&root.join("locks")), Vec::<String>::new());
    assert!(store.get(&blob.diff_id).unwrap().is_none());
    let inserted = store
        .insert_from_file(&dir.path().join("blob"), blob.digests())
        .unwrap();
    assert!(inserted.extracted.is_some());
    blob.assert_complete(inserted.layer.path());
}

#[test]
fn a_blob_that_does_not_match_its_digests_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = LayerStore::open(root).unwrap();
    let blob = noisy_layer(5, 4, 1000);
    let wrong = sha256(b"something else");
    let cases = [
        (
            "digest",
            wrong.as_str(),
            blob.diff_id.as_str(),
            blob.bytes.clone(),
        ),
        (
            "diff_id",
            blob.digest.as_str(),
            wrong.as_str(),
            blob.bytes.clone(),
        ),
    ];
    let mut corrupt = blob.bytes.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let cases = cases.into_iter().chain([(
        "digest",
        blob.digest.as_str(),
        blob.diff_id.as_str(),
        corrupt,
    )]);
    for (what_wrong, digest, diff_id, bytes) in cases {
        let digests = LayerDigests { digest, diff_id };
        let err = store.insert_from_reader(&bytes[..], digests).unwrap_err();
        match &err {
            Error::DigestMismatch { what, .. } => assert_eq!(*what, what_wrong, "{err}"),
            other => panic!("{other}"),
        }
        assert!(store.get(diff_id).unwrap().is_none());
        assert!(!root.join("layers/sha256").join(hex(diff_id)).exists());
        assert_eq!(names(&root.join("tmp")), Vec::<String>::new());
        assert_eq!(names(&root.join("meta")), Vec::<String>::new());
    }
    LayerStore::open(root).unwrap();
    assert_eq!(names(&root.join("locks")), Vec::<String>::new());
}

#[test]
fn whiteouts_and_opaque_dirs_are_stored_in_overlay_format() {
    let dir = tempfile::tempdir().unwrap();
    let store = LayerStore::open(dir.path()).unwrap();
    let blob = LayerBuilder::new()
        .file("etc/.wh.motd", b"")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"n")
        .blob();
    let inserted = store
        .insert_from_reader(&blob.bytes[..], blob.digests())
        .unwrap();
    let layer = inserted.layer.path();
    let motd = fs::symlink_metadata(layer.join("etc/motd")).unwrap();
    assert_eq!(motd.mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(motd.rdev(), 0);
    let opaque = xattr::get(layer.join("var/cache"), "trusted.overlay.opaque").unwrap();
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    assert_eq!(names(&layer.join("var/cache")), ["new"]);
    assert_eq!(names(&layer.join("etc")), ["motd"]);
}

#[test]
fn a_hostile_layer_cannot_write_outside_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let host = dir.path().join("host");
    fs::create_dir_all(host.join("etc")).unwrap();
    fs::write(host.join("etc/passwd"), b"root:x:0:0").unwrap();
    let store = LayerStore::open(&root).unwrap();
    let victim = noisy_layer(6, 4, 100);
    store
        .insert_from_reader(&victim.bytes[..], victim.digests())
        .unwrap();
    let victim_dir = root.join("layers/sha256").join(hex(&victim.diff_id));
    let before = (fingerprint(&victim_dir), fingerprint(&host));
    let to_victim = format!("../../../../layers/sha256/{}", hex(&victim.diff_id));
    let host_etc = host.join("etc").display().to_string();

    let refused = [
        LayerBuilder::new().raw_file(format!("{to_victim}/d0/f0").as_bytes(), b"x"),
        LayerBuilder::new().link(
            tar::EntryType::Link,
            "passwd",
            &format!("{host_etc}/passwd"),
        ),
        LayerBuilder::new().link(
            tar::EntryType::Link,
            "victim",
            &format!("{to_victim}/d0/f0"),
        ),
        LayerBuilder::new().raw_file(b"etc/.wh..", b""),
    ];
    for layer in refused {
        let blob = layer.blob();
        let err = store
            .insert_from_reader(&blob.bytes[..], blob.digests())
            .unwrap_err();
        assert!(
            matches!(err, Error::UnsafePath { .. } | Error::BadEntry { .. }),
            "{err}"
        );
        assert_nothing_of(&root, &blob);
    }

    let contained = LayerBuilder::new()
        .raw_file(format!("{host_etc}/passwd").as_bytes(), b"absolute")
        .link(tar::EntryType::Symlink, "up", &to_victim)
        .file("up/d0/f0", b"through a relative link")
        .link(tar::EntryType::Symlink, "abs", &host_etc)
        .file("abs/shadow", b"through an absolute link")
        .file("abs/.wh.passwd", b"")
        .blob();
    let inserted = store
        .insert_from_reader(&contained.bytes[..], contained.digests())
        .unwrap();
    assert_eq!((fingerprint(&victim_dir), fingerprint(&host)), before);
    let layer = inserted.layer.path();
    let inside_host = layer.join(host_etc.trim_start_matches('/'));
    assert_eq!(fs::read(inside_host.join("passwd")).unwrap(), b"absolute");
    assert_eq!(
        fs::read(inside_host.join("shadow")).unwrap(),
        b"through an absolute link"
    );
    let inside_victim = layer.join(format!("layers/sha256/{}/d0/f0", hex(&victim.diff_id)));
    assert_eq!(fs::read(inside_victim).unwrap(), b"through a relative link");
}

/// Inserts `blob` and lets a little time pass, so that last uses differ.
fn insert(store: &LayerStore, blob: &Blob) -> u64 {
    let inserted = store
        .insert_from_reader(&blob.bytes[..], blob.digests())
        .unwrap();
    thread::sleep(Duration::from_millis(30));
    inserted.layer.size()
}

fn removed(report: &ocibuild_snapshot::PruneReport) -> Vec<&str> {
    report.removed.iter().map(|l| l.diff_id.as_str()).collect()
}

#[test]
fn prune_removes_least_recently_used_layers_down_to_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = LayerStore::open(dir.path()).unwrap();
    let (a, b, c) = (
        noisy_layer(7, 4, 30_000),
        noisy_layer(8, 4, 20_000),
        noisy_layer(9, 4, 10_000),
    );
    let sizes = [insert(&store, &a), insert(&store, &b), insert(&store, &c)];
    assert!(sizes[0] > sizes[1] && sizes[1] > sizes[2], "{sizes:?}");
    drop(store.get(&a.diff_id).unwrap());
    let listed: Vec<_> = store
        .layers()
        .unwrap()
        .into_iter()
        .map(|l| l.diff_id)
        .collect();
    assert_eq!(
        listed,
        [&b.diff_id, &c.diff_id, &a.diff_id].map(String::clone),
        "least recently used first"
    );

    let limit = PruneOptions {
        max_size: Some(sizes[0] + sizes[2]),
        ..PruneOptions::default()
    };
    let report = store.prune(&limit).unwrap();
    assert_eq!(removed(&report), [&b.diff_id]);
    assert_eq!(report.freed, sizes[1]);
    assert_eq!(
        (report.remaining_layers, report.remaining_bytes),
        (2, sizes[0] + sizes[2])
    );
    assert!(store.get(&b.diff_id).unwrap().is_none());

    let report = store
        .prune(&PruneOptions {
            max_size: Some(sizes[0]),
            ..limit
        })
        .unwrap();
    assert_eq!(removed(&report), [&c.diff_id]);
    assert!(store.get(&a.diff_id).unwrap().is_some());
}

#[test]
fn prune_older_than_removes_only_layers_unused_for_that_long() {
    let dir = tempfile::tempdir().unwrap();
    let store = LayerStore::open(dir.path()).unwrap();
    let (old, new) = (noisy_layer(10, 2, 100), noisy_layer(11, 2, 100));
    insert(&store, &old);
    thread::sleep(Duration::from_millis(1200));
    insert(&store, &new);
    let options = PruneOptions {
        older_than: Some(Duration::from_millis(600)),
        ..PruneOptions::default()
    };
    let report = store.prune(&options).unwrap();
    assert_eq!(removed(&report), [&old.diff_id]);
    assert_eq!(report.remaining_layers, 1);
}

#[test]
fn prune_never_removes_a_layer_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = LayerStore::open(dir.path()).unwrap();
    let (used, unused) = (noisy_layer(12, 2, 5000), noisy_layer(13, 2, 5000));
    insert(&store, &used);
    insert(&store, &unused);
    let held = store.get(&used.diff_id).unwrap().unwrap();
    let all = PruneOptions {
        all: true,
        ..PruneOptions::default()
    };
    let report = store.prune(&all).unwrap();
    assert_eq!(removed(&report), [&unused.diff_id]);
    let in_use: Vec<_> = report.in_use.iter().map(|l| &l.diff_id).collect();
    assert_eq!(in_use, [&used.diff_id]);
    assert_eq!(report.remaining_layers, 1);
    used.assert_complete(held.path());
    drop(held);
    let report = store.prune(&all).unwrap();
    assert_eq!(removed(&report), [&used.diff_id]);
    assert_eq!(
        names(&dir.path().join("layers/sha256")),
        Vec::<String>::new()
    );
    assert_eq!(names(&dir.path().join("locks")), Vec::<String>::new());
    assert_eq!(names(&dir.path().join("meta")), Vec::<String>::new());
}

#[test]
fn prune_never_removes_a_layer_another_process_uses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = LayerStore::open(&root).unwrap();
    let blob = noisy_layer(14, 2, 5000);
    insert(&store, &blob);
    blob.save(dir.path());
    let mut child = spawn_child("hold-layer", &root, dir.path());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.find(|l| l.as_ref().is_ok_and(|l| l == "holding"));
    assert!(first.is_some(), "the child holds the layer");
    let all = PruneOptions {
        all: true,
        ..PruneOptions::default()
    };
    let report = store.prune(&all).unwrap();
    assert_eq!(report.in_use.len(), 1);
    assert!(report.removed.is_empty());
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let report = store.prune(&all).unwrap();
    assert_eq!(removed(&report), [&blob.diff_id]);
}

/// A finished layer directory in the build's step directory joins the store by a rename:
/// it is then found by diff ID like an extracted layer, with its record (so the blob it
/// was written as counts as checked); a second one of the same layer is left alone.
#[test]
fn a_finished_directory_is_adopted_by_rename_and_found_by_diff_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = LayerStore::open(dir.path()).unwrap();
    let steps = store.step_dirs().unwrap();
    let upper = steps.path().join("upper");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/made"), vec![7u8; 10_000]).unwrap();
    let (digest, diff_id) = (sha256(b"blob"), sha256(b"tar"));
    let digests = LayerDigests {
        digest: &digest,
        diff_id: &diff_id,
    };
    let adopted = store.adopt(&upper, digests).unwrap();
    let path = dir.path().join("layers/sha256").join(hex(&diff_id));
    assert_eq!(adopted.layer.path(), path);
    assert_eq!(adopted.extracted.as_ref().map(|s| s.entries), Some(2));
    assert!(adopted.layer.size() >= 10_000);
    assert!(!upper.exists(), "renamed, not copied");
    assert_eq!(fs::read(path.join("etc/made")).unwrap(), vec![7u8; 10_000]);
    drop(adopted);
    assert!(store.get(&diff_id).unwrap().is_some());
    assert!(store.holds_blob(&diff_id, &digest));
    assert!(!store.holds_blob(&diff_id, &sha256(b"another blob")));
    let again = steps.path().join("again");
    fs::create_dir(&again).unwrap();
    let second = store.adopt(&again, digests).unwrap();
    assert!(second.extracted.is_none());
    assert!(again.exists(), "left for the caller");
}

/// Adoption is a rename: a directory on another filesystem is refused, and nothing of it
/// reaches the store.
#[test]
fn a_directory_on_another_filesystem_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let store = LayerStore::open(dir.path()).unwrap();
    let elsewhere = tempfile::tempdir_in("/dev/shm").unwrap();
    assert_ne!(
        fs::metadata(elsewhere.path()).unwrap().dev(),
        fs::metadata(dir.path()).unwrap().dev(),
        "/dev/shm must be another filesystem for this test"
    );
    fs::write(elsewhere.path().join("f"), "x").unwrap();
    let (digest, diff_id) = (sha256(b"blob"), sha256(b"tar"));
    let digests = LayerDigests {
        digest: &digest,
        diff_id: &diff_id,
    };
    let err = store.adopt(elsewhere.path(), digests).unwrap_err();
    let Error::Io { source, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(source.raw_os_error(), Some(libc::EXDEV), "{err}");
    assert!(store.get(&diff_id).unwrap().is_none());
    assert!(elsewhere.path().join("f").exists());
}

/// A build's step directory lives while it is held and goes when dropped; one a killed
/// build left (its lock released, or never made) is removed by the next open, one in use
/// is not.
#[test]
fn step_directories_of_gone_builds_are_swept_and_those_in_use_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = LayerStore::open(dir.path()).unwrap();
    let held = store.step_dirs().unwrap();
    fs::write(held.path().join("upper"), "in use").unwrap();
    let steps = dir.path().join("steps");
    let killed = steps.join("999999-0-00000000");
    fs::create_dir_all(killed.join("step-1/upper")).unwrap();
    fs::write(steps.join("999999-0-00000000.lock"), "").unwrap();
    let unlocked = steps.join("999998-0-00000000");
    fs::create_dir_all(unlocked.join("upper")).unwrap();
    let dropped = store.step_dirs().unwrap();
    let dropped_path = dropped.path().to_path_buf();
    drop(dropped);
    assert!(
        !dropped_path.exists(),
        "a dropped step directory is removed"
    );
    drop(LayerStore::open(dir.path()).unwrap());
    let mut left: Vec<String> = fs::read_dir(&steps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let name = held
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(left, [name.clone(), format!("{name}.lock")]);
    assert!(held.path().join("upper").exists());
}

/// The filesystem type of `path` (`statfs`'s `f_type`).
fn fs_type(path: &Path) -> i64 {
    rustix::fs::statfs(path).unwrap().f_type as i64
}

const EXT4_SUPER_MAGIC: i64 = 0xEF53;

fn has_top_dir_flag(dir: &Path) -> bool {
    let flags = rustix::fs::ioctl_getflags(fs::File::open(dir).unwrap()).unwrap();
    flags.contains(rustix::fs::IFlags::TOPDIR)
}

#[test]
fn on_ext4_a_directory_gets_the_top_directory_flag_and_elsewhere_nothing_fails() {
    use ocibuild_snapshot::{spread_subdirectories, Spread};
    for parent in [
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        Path::new("/dev/shm"),
    ] {
        let dir = tempfile::tempdir_in(parent).unwrap();
        let spread = spread_subdirectories(dir.path());
        if fs_type(dir.path()) == EXT4_SUPER_MAGIC {
            assert_eq!(spread, Spread::Flagged, "{}", parent.display());
            assert!(has_top_dir_flag(dir.path()));
            // Again: already flagged, nothing else changes.
            assert_eq!(spread_subdirectories(dir.path()), Spread::Flagged);
        } else {
            assert_eq!(spread, Spread::Unsupported, "{}", parent.display());
        }
    }
}

#[test]
fn on_ext4_extractions_and_step_directories_start_in_block_groups_of_their_own() {
    for parent in [
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        Path::new("/dev/shm"),
    ] {
        let root = tempfile::tempdir_in(parent).unwrap();
        LayerStore::open(root.path()).unwrap();
        if fs_type(parent) == EXT4_SUPER_MAGIC {
            assert!(has_top_dir_flag(&root.path().join("tmp")));
            assert!(has_top_dir_flag(&root.path().join("steps")));
            assert!(
                !has_top_dir_flag(root.path()),
                "only directories the store made"
            );
        } else {
            // No such flag (tmpfs): the store opens all the same.
            assert!(root.path().join("steps").is_dir());
        }
    }
}
