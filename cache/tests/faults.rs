//! The local cache under faults: builds racing on the same keys, evictions racing each
//! other, writers killed in the middle of a store, and a full filesystem. The racing
//! builds are `cache-test-writer` processes (`helpers/writer.rs`).

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ocibuild_cache::{CachedLayer, LayerCache, LocalCache};

#[path = "helpers/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "helpers/local.rs"]
mod local;

use common::{key, layer_file, sha256};
use local::{assert_hit, names, spawn_writer, temp_files, wait_success};

/// The blobs an entry of the cache `dir` refers to, by hex.
fn referenced_blobs(dir: &Path) -> BTreeSet<String> {
    names(dir, "keys")
        .iter()
        .map(|name| {
            let bytes = fs::read(dir.join("keys").join(name)).unwrap();
            let layer: CachedLayer = serde_json::from_slice(&bytes).unwrap();
            layer.digest.strip_prefix("sha256:").unwrap().to_string()
        })
        .collect()
}

/// Whether any of `children` is still running.
fn any_running(children: &mut [Child]) -> bool {
    children.iter_mut().any(|c| c.try_wait().unwrap().is_none())
}

#[test]
fn builds_storing_the_same_keys_leave_no_orphan_blobs_after_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    // Four builds store the same 8 keys, each with layers of its own, 3 times over.
    let rivals: Vec<Child> = (1..=4)
        .map(|id| spawn_writer("rival", &[&tmp.path(), &id.to_string()]))
        .collect();
    for rival in rivals {
        wait_success(rival);
    }
    let left = names(&dir, "blobs/sha256").len();
    assert!(left > 8, "the replaced entries left orphan blobs: {left}");

    let cache = LocalCache::open(&dir, None).unwrap();
    let blobs: BTreeSet<String> = names(&dir, "blobs/sha256").into_iter().collect();
    assert_eq!(
        blobs,
        referenced_blobs(&dir),
        "every blob is referred to by an entry"
    );
    assert_eq!(cache.usage().unwrap().entries, 8);
    for shared in 0..8 {
        let mut warnings = Vec::new();
        let hit = cache.get(&key(&format!("shared-{shared}")), &mut warnings);
        assert!(hit.unwrap().is_some(), "{warnings:?}");
    }
}

#[test]
fn collecting_orphans_never_takes_a_blob_an_entry_refers_to() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    LocalCache::open(&dir, None).unwrap();
    let mut rivals: Vec<Child> = (1..=4)
        .map(|id| spawn_writer("rival", &[&tmp.path(), &id.to_string()]))
        .collect();
    // While they store, this process opens the cache again and again (each open collects
    // orphans) and looks every key up: no lookup may find its blob gone.
    let (mut warnings, mut hits, mut opens) = (Vec::new(), 0, 0);
    while any_running(&mut rivals) {
        let cache = LocalCache::open(&dir, None).unwrap();
        opens += 1;
        for shared in 0..8 {
            let k = key(&format!("shared-{shared}"));
            if let Some((layer, path)) = cache.get(&k, &mut warnings).unwrap() {
                assert_eq!(sha256(&fs::read(path).unwrap()), layer.digest);
                hits += 1;
            }
        }
    }
    for rival in rivals {
        wait_success(rival);
    }
    eprintln!("{opens} opens, {hits} hits while the rivals stored");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(opens > 1 && hits > 0, "{opens} opens, {hits} hits");
    LocalCache::open(&dir, None).unwrap();
    let blobs: BTreeSet<String> = names(&dir, "blobs/sha256").into_iter().collect();
    assert_eq!(blobs, referenced_blobs(&dir));
    assert_eq!(blobs.len(), 8);
}

#[test]
fn evictions_racing_each_other_keep_the_newest_entries() {
    const MAX: u64 = 1_000_000; // twenty 50 kB layers
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    // Four builds each store 30 layers under a size limit.
    let writers: Vec<Child> = (1..=4)
        .map(|id| spawn_writer("limited", &[&tmp.path(), &id.to_string(), &MAX.to_string()]))
        .collect();
    let mut stored: Vec<(u128, String)> = Vec::new();
    for writer in writers {
        for line in wait_success(writer).lines() {
            let mut words = line.split(' ').skip(1);
            let name = words.next().unwrap().to_string();
            stored.push((words.next().unwrap().parse().unwrap(), name));
        }
    }
    assert_eq!(stored.len(), 120);
    stored.sort();

    let cache = LocalCache::open(&dir, Some(MAX)).unwrap();
    let usage = cache.usage().unwrap();
    eprintln!("{usage:?}");
    assert!(usage.blob_bytes <= MAX, "{usage:?}");
    assert!(
        usage.entries >= 19,
        "the cache stays full, it is not emptied: {usage:?}"
    );
    for (_, name) in stored.iter().rev().take(5) {
        let mut warnings = Vec::new();
        let hit = cache.get(&key(name), &mut warnings).unwrap();
        assert!(hit.is_some(), "{name}, one of the newest, was evicted");
    }
}

/// Waits until a writer of the cache `dir` has a hard link of a layer in `tmp/`, then
/// stops it (SIGSTOP) there. Returns the temporary files it has.
fn stop_with_a_link_in_tmp(writer: &Child, dir: &Path) -> Vec<String> {
    let pid = Pid::from_raw(writer.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no link.*.tmp appeared");
        if !temp_files(dir).iter().any(|n| n.starts_with("link.")) {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        kill(pid, Signal::SIGSTOP).unwrap();
        let temps = temp_files(dir);
        if temps.iter().any(|n| n.starts_with("link.")) {
            return temps;
        }
        kill(pid, Signal::SIGCONT).unwrap();
    }
}

#[test]
fn a_writer_killed_mid_store_has_its_temp_files_reclaimed_at_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let scratch = local::other_fs_dir();
    let mut writer = spawn_writer("forever", &[&tmp.path(), &scratch.path(), &"8000000"]);
    let temps = stop_with_a_link_in_tmp(&writer, &dir);

    // Stopped, it is alive: its files stay.
    LocalCache::open(&dir, None).unwrap();
    assert_eq!(temp_files(&dir), temps);

    writer.kill().unwrap(); // SIGKILL
    writer.wait().unwrap();
    assert_eq!(temp_files(&dir), temps, "the kill left them");
    // Seconds old, not an hour: reclaimed because their writer is gone.
    LocalCache::open(&dir, None).unwrap();
    assert_eq!(names(&dir, "tmp"), Vec::<String>::new());
    // Whatever it had stored is intact.
    let cache = LocalCache::open(&dir, None).unwrap();
    for name in names(&dir, "keys") {
        let mut warnings = Vec::new();
        let k = name.strip_suffix(".json").unwrap();
        assert!(
            cache.get(k, &mut warnings).unwrap().is_some(),
            "{warnings:?}"
        );
    }
}

/// A tmpfs of `size` mounted on `dir` in a mount namespace of its own: `unshare --mount`
/// runs a shell that mounts it and then sleeps, and this process reaches it through
/// `/proc/<pid>/root`, which resolves paths in that namespace. Nothing is mounted in this
/// process's namespace; when the sleeper is killed (on drop), the tmpfs goes with its
/// namespace.
struct SmallTmpfs {
    sleeper: Child,
    path: PathBuf,
}

impl SmallTmpfs {
    fn mount(dir: &Path, size: &str) -> SmallTmpfs {
        fs::create_dir_all(dir).unwrap();
        let script = r#"mount -t tmpfs -o size="$1" tmpfs "$2" && echo mounted && exec sleep 600"#;
        let mut sleeper = Command::new("unshare")
            .args(["--mount", "sh", "-c", script, "sh", size])
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(sleeper.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line, "mounted\n",
            "mounting a tmpfs in a new mount namespace"
        );
        let path =
            Path::new(&format!("/proc/{}/root", sleeper.id())).join(dir.strip_prefix("/").unwrap());
        SmallTmpfs { sleeper, path }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
    }
}

#[tokio::test]
async fn a_full_cache_filesystem_makes_stores_warnings_and_lookups_still_work() {
    let tmp = tempfile::tempdir().unwrap();
    let small = SmallTmpfs::mount(&tmp.path().join("small"), "1m");
    let dir = small.path.join("cache");
    let cache = LocalCache::open(&dir, None).unwrap();
    let src = tmp.path(); // another filesystem: layers are copied in
    let (a, a_file) = layer_file(src, 1, 300_000);
    let (c, c_file) = layer_file(src, 3, 400_000);
    cache.put(&key("a"), &a, &a_file).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    cache.put(&key("c"), &c, &c_file).unwrap();

    // A layer larger than the whole filesystem: not stored, a warning, nothing evicted.
    let (big, big_file) = layer_file(src, 2, 2_000_000);
    let err = cache.put(&key("big"), &big, &big_file).unwrap_err();
    assert!(err.is_not_stored(), "{err}");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let layered = LayerCache::new(vec![Box::new(cache.clone())]);
    let warnings = layered.put(&key("big"), &big, &big_file).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("was not stored"), "{warnings:?}");
    let not_stored = cache
        .put_blob_best_effort(&big.digest, &big.diff_id, &big_file)
        .unwrap_err();
    assert!(
        not_stored.reason.contains("No space left on device"),
        "{not_stored}"
    );
    assert!(big_file.exists(), "the caller keeps its file");
    assert_hit(&cache, &key("a"), &a);
    std::thread::sleep(Duration::from_millis(20));
    assert_hit(&cache, &key("c"), &c);

    // No room for another 400 kB: the least recently used blob (a) is evicted to make
    // room, and the store carries on.
    let (d, d_file) = layer_file(src, 4, 400_000);
    cache.put(&key("d"), &d, &d_file).unwrap();
    let mut warnings = Vec::new();
    assert!(cache.get(&key("a"), &mut warnings).unwrap().is_none());
    assert!(
        warnings.is_empty(),
        "an evicted entry is a plain miss: {warnings:?}"
    );
    assert_hit(&cache, &key("c"), &c);
    assert_hit(&cache, &key("d"), &d);
    // The failed copies left nothing behind.
    assert_eq!(temp_files(&dir), Vec::<String>::new());
    let blobs: HashSet<String> = names(&dir, "blobs/sha256").into_iter().collect();
    assert_eq!(blobs.len(), 2);
}
